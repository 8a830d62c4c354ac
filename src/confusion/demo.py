"""`confusion demo`: the paper end to end on Fashion-MNIST (or any dataset), in one command.

    1. a small scoring ensemble (cnn-s, 3 seeds, every epoch recorded)        3.1
    2. a larger ensemble of the same family (cnn-m, 3 seeds) for Kendall tau   3.2, fig. 3
    3. a zoo: mlp / cnn / resnet at two sizes, scikit-learn, a pre-trained probe   3.2, fig. 4
    4. a hard set (top 10% of val by confusion, no labels used) and every
       zoo model evaluated on it against the rest
    5. mitigation: ERM, GroupDRO and upsampling with confusion bands as groups  3.4, fig. 7
    6. the report (every figure) and a summary table

Every stage keeps what it finished, so rerunning an interrupted demo continues it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from . import _terminal as term
from ._files import write_json_atomic, write_table_atomic
from .evaluate import evaluate_on_hardset, load_predictors
from .hardset import manifest
from .mitigation import MitigationConfig, mitigate
from .report import _finite, build_report
from .training import TrainConfig, final_accuracy, load_training_data, train
from .zoo import run_name, train_zoo


@dataclass(frozen=True)
class Preset:
    limit_train: int | None
    limit_val: int | None
    small_epochs: int
    large_epochs: int
    zoo_archs: tuple[str, ...]
    zoo_epochs: int
    zoo_limit_train: int | None
    mitigation_epochs: int
    mitigation_seeds: int


FULL = Preset(
    limit_train=20000,
    limit_val=None,
    small_epochs=20,
    large_epochs=10,
    zoo_archs=("mlp-s", "mlp-l", "cnn-s", "cnn-m", "resnet-s", "resnet-m", "sklearn:logreg", "pretrained:efficientnet-lite0"),
    zoo_epochs=4,
    zoo_limit_train=10000,
    mitigation_epochs=6,
    mitigation_seeds=3,
)
QUICK = Preset(
    limit_train=3000,
    limit_val=2000,
    small_epochs=6,
    large_epochs=4,
    zoo_archs=("mlp-s", "mlp-m", "cnn-s", "cnn-m", "resnet-s", "sklearn:logreg", "pretrained:efficientnet-lite0"),
    zoo_epochs=2,
    zoo_limit_train=3000,
    mitigation_epochs=2,
    mitigation_seeds=2,
)


def run_demo(out: str | Path, *, quick: bool = False, data: str = "fashion-mnist", root: str | None = None, top: float = 0.1) -> dict:
    """Run every stage into OUT; returns the summary that is printed at the end."""
    preset = QUICK if quick else FULL
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    starts: dict[str, float] = {}

    def stage(name: str) -> None:
        starts[name] = time.perf_counter()
        term.info(f"demo [{time.perf_counter() - started:5.0f} s] {name}")

    base = TrainConfig(data=data, root=root, limit_train=preset.limit_train, limit_val=preset.limit_val)

    stage("1/6 scoring ensemble: cnn-s, 3 seeds")
    with term.TrainingDisplay(3, preset.small_epochs, "cnn-s ") as display:
        small = train(replace(base, arch="cnn-s", members=3, epochs=preset.small_epochs), out / "runs" / "cnn-s", on_event=display)

    stage("2/6 larger ensemble of the same family: cnn-m, 3 seeds")
    with term.TrainingDisplay(3, preset.large_epochs, "cnn-m ") as display:
        large = train(replace(base, arch="cnn-m", members=3, epochs=preset.large_epochs), out / "runs" / "cnn-m", on_event=display)

    stage("3/6 model zoo")
    zoo_config = replace(base, members=1, epochs=preset.zoo_epochs, record_every=preset.zoo_epochs, limit_train=preset.zoo_limit_train)
    zoo = train_zoo(list(preset.zoo_archs), out / "zoo", zoo_config, on_model=lambda arch: term.info(f"demo   zoo: {arch}"))

    stage(f"4/6 hard set (top {top:.0%} of val by confusion) and every model on it")
    hard = manifest(small, "val", top=top)
    write_table_atomic(hard, out / "hardset.csv")
    dataset = load_training_data(base)
    predictors = []
    for arch in preset.zoo_archs:
        predictors += load_predictors(str(out / "zoo" / run_name(arch)), dataset)
    predictors += load_predictors(str(out / "runs" / "cnn-m"), dataset, name="cnn-m ensemble (3 seeds)")
    evaluation, _ = evaluate_on_hardset(predictors, dataset, hard)
    write_table_atomic(evaluation, out / "hardset_evaluation.csv")

    stage("5/6 mitigation: ERM, GroupDRO, upsampling with confusion bands as groups")
    mitigation = mitigate(
        out / "runs" / "cnn-s",
        out / "mitigation",
        MitigationConfig(epochs=preset.mitigation_epochs, members=preset.mitigation_seeds),
        on_done=lambda r: term.info(f"demo   mitigation: {r['method']} seed {r['seed']}: val error {r['overall']:.4f}"),
    )

    stage("6/6 report")
    zoo_runs = [out / "zoo" / run_name(a) for a in preset.zoo_archs]
    metrics = build_report(out / "runs" / "cnn-s", out / "report", compare=[out / "runs" / "cnn-m"], models=zoo_runs, mitigation=out / "mitigation")
    total = time.perf_counter() - started
    ends = [*list(starts.values())[1:], started + total]
    timings = {name: round(end - begin, 1) for (name, begin), end in zip(starts.items(), ends)}
    summary = {
        "seconds": round(total),
        "stage_seconds": timings,
        "val": metrics.get("val", {}),
        "kendall_tau_small_vs_large": next(iter(metrics.get("transfer", {}).values()), {}).get("kendall_tau"),
        "hardset": evaluation.to_dict(orient="records"),
        "zoo": zoo["models"],
        "mitigation": mitigation,
        "report": str(out / "report" / "index.html"),
        "small_ensemble_val_accuracy": final_accuracy(small),  # the members' averaged prediction
        "small_mean_member_val_accuracy": float(1 - metrics["val"].get("error_rate", float("nan"))) if "val" in metrics else None,
        "large_ensemble": str(large.path),
    }
    _print_summary(summary)
    write_json_atomic(out / "summary.json", _finite(summary))
    return summary


def _print_summary(summary: dict) -> None:
    val = summary["val"]
    baselines = val.get("baselines", {})
    term.table(
        "the paper's claims, measured here (val split)",
        ["claim", "measured"],
        [
            ["confusion tracks error: Pearson rho over score bins", val.get("pearson_error_by_bin")],
            ["AUROC of confusion for the members' errors", val.get("auroc_error")],
            ["  baseline: one member's final entropy", baselines.get("auroc_single_entropy")],
            ["  baseline: 1 - max probability", baselines.get("auroc_msp")],
            ["Kendall tau, cnn-s vs cnn-m ensemble scores", summary["kendall_tau_small_vs_large"]],
        ],
    )
    term.table(
        "top-1 error on the hard set vs the rest",
        ["model", "hard", "rest", "hard / rest"],
        [[r["model"], r["hard_error"], r["rest_error"], r["hard_to_rest"]] for r in summary["hardset"]],
    )
    term.mitigation_table(summary["mitigation"])
    stages = summary["stage_seconds"]
    rows = [[name.split(":")[0].split(" (")[0], seconds, f"{seconds / max(summary['seconds'], 1):.0%}"] for name, seconds in stages.items()]
    term.table("where the time went", ["stage", "seconds", "share"], rows)
    term.info(f"demo finished in {summary['seconds']} s; report: {summary['report']}")
