"""`confusion demo`: the paper end to end on Fashion-MNIST (or any dataset), in one command.

    1. a small scoring ensemble (cnn-s, 3 seeds, every epoch recorded)        3.1
    2. a larger ensemble of the same family (cnn-m, 3 seeds) for Kendall tau   3.2, fig. 3
    3. a zoo: mlp / cnn / resnet at two sizes, scikit-learn, a pre-trained probe   3.2, fig. 4
    4. a hard set (top 10% of val by confusion, no labels used) and every
       zoo model evaluated on it against the rest
    5. mitigation: ERM, GroupDRO and upsampling with confusion bands as groups  3.4, fig. 7
    6. the report (every figure) and a summary table

On text (`--data bbc-news`, `text:PATH`) and feature data (`features:PATH`) the same stages
run with heads on the feature vectors (mlp-s scoring, mlp-l larger; a zoo of a linear head,
MLPs, scikit-learn, and for text TF-IDF + logistic regression on the documents), plus a
member-diversity stage: the same ensemble with bagging, with random feature subsets and with
mixed architectures, each with its mean disagreement and how its hard set transfers.
Every stage keeps what it finished, so rerunning an interrupted demo continues it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import _terminal as term
from ._files import write_json_atomic, write_table_atomic
from .datasets import check_dataset_name, check_root, data_kind
from .errors import ParameterError
from .evaluate import evaluate_on_hardset, load_predictors
from .hardset import manifest
from .mitigation import MitigationConfig, mitigate
from .report import build_report, finite
from .runscores import score_run
from .training import TrainConfig, final_accuracy, load_training_data, train
from .zoo import run_name, train_zoo

__all__ = [
    "DIVERSITY",
    "FEATURES_FULL",
    "FEATURES_QUICK",
    "FULL",
    "QUICK",
    "Preset",
    "preset_for",
    "run_demo",
]


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
    small_arch: str = "cnn-s"
    large_arch: str = "cnn-m"
    diversity: bool = False  # also train the scoring ensemble with each diversity option
    # Mitigation bands: the paper's middle of the range (images), or quantiles of the train
    # scores where members fit the training split so well that few train samples score high.
    band_quantiles: tuple[float, ...] | None = None


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


# Feature vectors (sentence embeddings of text): heads train in seconds, so every split is whole.
FEATURES_FULL = Preset(
    limit_train=None,
    limit_val=None,
    small_epochs=20,
    large_epochs=20,
    zoo_archs=("linear", "mlp-s", "mlp-m", "mlp-l", "sklearn:logreg"),
    zoo_epochs=10,
    zoo_limit_train=None,
    mitigation_epochs=10,
    mitigation_seeds=3,
    small_arch="mlp-s",
    large_arch="mlp-l",
    diversity=True,
    band_quantiles=(0.9,),
)
FEATURES_QUICK = replace(FEATURES_FULL, small_epochs=8, large_epochs=8, zoo_epochs=4, mitigation_epochs=4, mitigation_seeds=2)
# The larger ensemble and the zoo are compared by their predictions only: no embeddings or views.
ERRORS_ONLY = {"embeddings": "none", "views": "none"}
DIVERSITY = {  # name (and run directory runs/diversity-NAME) -> how the members are made to differ
    "bagging": {"bagging": True},
    "subsets": {"feature_subset": 0.5},  # each member sees a random half of the features
    "mixed": {"arch": "linear,mlp-s,mlp-m"},  # one architecture per member
}


def preset_for(data: str, quick: bool) -> Preset:
    kind = data_kind(data)
    if kind == "images":
        return QUICK if quick else FULL
    preset = FEATURES_QUICK if quick else FEATURES_FULL
    return replace(preset, zoo_archs=(*preset.zoo_archs, "sklearn:tfidf")) if kind == "text" else preset


def run_demo(out: str | Path, *, quick: bool = False, data: str = "fashion-mnist", root: str | None = None, top: float = 0.1) -> dict:
    """Run every stage into OUT; returns the summary that is printed at the end."""
    if not 0 < top <= 1:
        raise ParameterError(f"{{top}} must be a fraction in (0, 1], got {top}", "top")
    check_dataset_name(data)
    check_root(root)
    preset = preset_for(data, quick)
    small_arch, large_arch = preset.small_arch, preset.large_arch
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    starts: dict[str, float] = {}

    def stage(name: str) -> None:
        starts[name] = time.perf_counter()
        term.info(f"demo [{time.perf_counter() - started:5.0f} s] {name}")

    # Text is embedded once for every stage, in the demo's own folder.
    base = TrainConfig(data=data, root=root, limit_train=preset.limit_train, limit_val=preset.limit_val)
    runs = out / "runs"

    stage(f"1/6 scoring ensemble: {small_arch}, 3 seeds")
    small_config = replace(base, arch=small_arch, members=3, epochs=preset.small_epochs)
    with term.TrainingDisplay(3, preset.small_epochs, f"{small_arch} ") as display:
        small = train(small_config, runs / small_arch, hooks=display)

    stage(f"2/6 larger ensemble of the same family: {large_arch}, 3 seeds")
    with term.TrainingDisplay(3, preset.large_epochs, f"{large_arch} ") as display:
        large = train(replace(base, arch=large_arch, members=3, epochs=preset.large_epochs, **ERRORS_ONLY), runs / large_arch, hooks=display)
    variants = {}
    if preset.diversity:
        for name, change in DIVERSITY.items():
            term.info(f"demo   member diversity: {name}")
            variants[name] = train(replace(small_config, **change), runs / _variant_dir(name))

    stage("3/6 model zoo")
    zoo_config = replace(base, members=1, epochs=preset.zoo_epochs, record_every=preset.zoo_epochs, limit_train=preset.zoo_limit_train, **ERRORS_ONLY)
    zoo = train_zoo(list(preset.zoo_archs), out / "zoo", zoo_config, on_model=lambda arch: term.info(f"demo   zoo: {arch}"))

    stage(f"4/6 hard set (top {top:.0%} of val by confusion) and every model on it")
    hard = manifest(small, "val", top=top)
    write_table_atomic(hard, out / "hardset.csv")
    dataset = load_training_data(base)
    predictors = []
    for arch in preset.zoo_archs:
        predictors += load_predictors(str(out / "zoo" / run_name(arch)), dataset)
    zoo_predictors = list(predictors)
    predictors += load_predictors(str(runs / large_arch), dataset, name=f"{large_arch} ensemble (3 seeds)")
    evaluation, _ = evaluate_on_hardset(predictors, dataset, hard)
    write_table_atomic(evaluation, out / "hardset_evaluation.csv")
    diversity = _diversity_table({"seeds only": small, **variants}, large, zoo_predictors, dataset, top) if variants else []

    stage("5/6 mitigation: ERM, GroupDRO, upsampling with confusion bands as groups")
    mitigation = mitigate(
        runs / small_arch,
        out / "mitigation",
        MitigationConfig(
            epochs=preset.mitigation_epochs,
            members=preset.mitigation_seeds,
            quantiles=list(preset.band_quantiles) if preset.band_quantiles else None,
        ),
        on_done=lambda r: term.info(f"demo   mitigation: {r['method']} seed {r['seed']}: val error {r['overall']:.4f}"),
    )

    stage("6/6 report")
    zoo_runs = [out / "zoo" / run_name(a) for a in preset.zoo_archs]
    compare = [runs / large_arch, *(runs / _variant_dir(name) for name in variants)]
    metrics = build_report(runs / small_arch, out / "report", compare=compare, models=zoo_runs, mitigation=out / "mitigation")
    total = time.perf_counter() - started
    ends = [*list(starts.values())[1:], started + total]
    timings = {name: round(end - begin, 1) for (name, begin), end in zip(starts.items(), ends)}
    summary = {
        "seconds": round(total),
        "stage_seconds": timings,
        "val": metrics.get("val", {}),
        "kendall_tau_small_vs_large": next(iter(metrics.get("transfer", {}).values()), {}).get("kendall_tau"),
        "small": small_arch,
        "large": large_arch,
        "diversity": diversity,
        "hardset": evaluation.to_dict(orient="records"),
        "zoo": zoo["models"],
        "mitigation": mitigation,
        "report": str(out / "report" / "index.html"),
        "small_ensemble_val_accuracy": final_accuracy(small),  # the members' averaged prediction
        "small_mean_member_val_accuracy": float(1 - metrics["val"].get("error_rate", float("nan"))) if "val" in metrics else None,
        "large_ensemble": str(large.path),
    }
    _print_summary(summary)
    write_json_atomic(out / "summary.json", finite(summary))
    return summary


def _variant_dir(name: str) -> str:
    return f"diversity-{name}"


def _diversity_table(ensembles: dict, large, predictors, dataset, top: float) -> list[dict]:
    """Per way of making members differ: mean disagreement (bits, val), its share of the
    confusion, Kendall tau with the larger ensemble, and how that ensemble's hard set transfers
    to the zoo: the zoo's mean error on it and the mean share of each zoo model's val errors
    that fall in it."""
    from .analyses import align, kendall_tau

    large_scores = score_run(large, "val")
    rows = []
    for name, store in ensembles.items():
        scores = score_run(store, "val")
        mine, theirs = align(store.sample_ids("val"), large.sample_ids("val"))
        evaluation, _ = evaluate_on_hardset(predictors, dataset, manifest(store, "val", top=top))
        rows.append(
            {
                "ensemble": name,
                "mean_confusion": float(scores.confusion.mean()),
                "mean_disagreement": float(scores.disagreement.mean()),
                "disagreement_share": float(scores.disagreement.mean() / scores.confusion.mean()),
                "ensemble_val_accuracy": final_accuracy(store),
                "kendall_tau_with_large": kendall_tau(scores.confusion[mine], large_scores.confusion[theirs]),
                # How the hard set transfers to other models: their error on it, and the share of all
                # their val errors it holds (mean over the zoo).
                "zoo_hard_error": float(evaluation["hard_error"].mean()),
                "zoo_errors_in_hard_set": float(
                    np.mean(
                        evaluation["hard_n"]
                        * evaluation["hard_error"]
                        / (evaluation["hard_n"] * evaluation["hard_error"] + evaluation["rest_n"] * evaluation["rest_error"]).clip(lower=1e-12)
                    )
                ),
            }
        )
    return rows


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
            [f"Kendall tau, {summary['small']} vs {summary['large']} ensemble scores", summary["kendall_tau_small_vs_large"]],
        ],
    )
    if summary["diversity"]:
        term.table(
            f"member diversity ({summary['small']}, 3 members, val)",
            ["ensemble", "disagreement (bits)", "share", "accuracy", f"tau, {summary['large']}", "zoo error on hard set", "zoo errors in it"],
            [
                [
                    r["ensemble"],
                    r["mean_disagreement"],
                    f"{r['disagreement_share']:.1%}",
                    r["ensemble_val_accuracy"],
                    r["kendall_tau_with_large"],
                    r["zoo_hard_error"],
                    f"{r['zoo_errors_in_hard_set']:.0%}",
                ]
                for r in summary["diversity"]
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
