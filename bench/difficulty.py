"""Which difficulty score of a cheap ensemble predicts other models' errors? The evidence table.

    .venv/bin/python bench/difficulty.py --demo demo-output          # the full demo's runs and zoo
    .venv/bin/python bench/difficulty.py --demo bbc-demo             # `confusion demo --data bbc-news --out bbc-demo`
    .venv/bin/python bench/difficulty.py --data mnist-5k --out runs/bench-mnist5k   # trains everything

For every difficulty score of the scoring run (cnn-s, 3 seeds, every epoch recorded; its
embeddings and test-time views at the last epoch; on a text or feature demo mlp-s heads, with
embeddings and no views) it prints the AUROC for each other model's
top-1 errors on the validation split (one event per member and sample at that model's last
epoch), the mean over models with a 95% bootstrap interval (samples resampled), how many models
it beats their own 1 - max probability on (what you could rank by if you could afford to run
that model), and the mean ratio of the models' error on the top 10% by the score to their error
on the rest. Beside them: rank averages (no fit) and `combined` fitted to a cheap zoo model's
errors (--target). Then the ceiling (how much of each model's error a label-free score can see)
and the cost side: the paper's confusion from fewer members and epochs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from evidence import print_table

from confusion._runtime import cpu_description

ZOO = ("mlp-s", "mlp-l", "cnn-s", "cnn-m", "resnet-s", "resnet-m", "sklearn:logreg", "pretrained:efficientnet-lite0")


def cpu() -> str:
    return cpu_description()


def train_everything(data: str, out: Path) -> tuple[Path, list[Path], list[Path]]:
    """The demo's recipe on another dataset: scoring ensemble, larger ensemble, zoo."""
    from confusion.training import TrainConfig, train
    from confusion.zoo import run_name, train_zoo

    base = TrainConfig(data=data)
    train(replace(base, arch="cnn-s", members=3, epochs=20), out / "cnn-s")
    train(replace(base, arch="cnn-m", members=3, epochs=10), out / "cnn-m")
    train_zoo(list(ZOO), out / "zoo", replace(base, members=1, epochs=4, record_every=4))
    return out / "cnn-s", [out / "cnn-m"], [out / "zoo" / run_name(a) for a in ZOO]


def demo_preset(demo: Path):
    """The full preset a finished demo folder was run with: images (cnn-s, cnn-m, the image zoo),
    or text and feature vectors (mlp-s, mlp-l, the heads' zoo), read from its scoring run."""
    from confusion.demo import FULL, preset_for

    for arch in ("cnn-s", "mlp-s"):
        run = demo / "runs" / arch / "run.json"
        if run.is_file():
            return preset_for(json.loads(run.read_text())["dataset"]["name"], quick=False)
    return FULL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, help="a finished `confusion demo` output folder")
    parser.add_argument("--data", help="a dataset name to train the demo's recipe on (e.g. mnist-5k, digits)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-difficulty"), help="where --data trains")
    parser.add_argument("--reference", type=Path, help="score this run instead of the demo's runs/cnn-s (same val samples)")
    parser.add_argument("--boot", type=int, default=200, help="bootstrap draws of the 95%% intervals (count)")
    parser.add_argument("--target", default="sklearn:logreg", help="the zoo model whose errors `combined (target ...)` is fitted to")
    args = parser.parse_args()
    if (args.demo is None) == (args.data is None):
        sys.exit("give --demo DIR or --data NAME")
    from confusion.report import build_report
    from confusion.zoo import run_name

    started = time.perf_counter()
    if args.demo:
        preset = demo_preset(args.demo)
        reference, compare = args.demo / "runs" / preset.small_arch, [args.demo / "runs" / preset.large_arch]
        models = [args.demo / "zoo" / run_name(a) for a in preset.zoo_archs]
        out, label = args.demo / "report-difficulty", f"demo {args.demo}"
        zoo = args.demo / "zoo"
    else:
        reference, compare, models = train_everything(args.data, args.out)
        out, label = args.out / "report", args.data
        zoo = args.out / "zoo"
    reference = args.reference or reference
    metrics = build_report(reference, out, compare=compare, models=models)
    print(f"# difficulty scores of {reference} on {label}; CPU: {cpu()}; {time.perf_counter() - started:.0f} s")
    models_metrics = metrics["models"]
    print(f"# models ({len(models_metrics)}): " + "; ".join(f"{n}: error {m['error_rate']:.3f}" for n, m in models_metrics.items()))
    print()
    found, compared = evidence_of(reference, [*compare, *models], zoo / run_name(args.target), args.boot)
    print_table(found, compared, f"transfer AUROC for each model's errors ({label}); own_msp = each model's own 1 - max probability")
    print("| model | shared confident error share | AUROC ceiling | AUROC confusion |")
    print("|---|---|---|---|")
    for name, entry in models_metrics.items():
        c = entry["ceiling"]
        print(f"| {name} | {c['shared_confident_error_share']:.3f} | {c['auroc_ceiling']:.3f} | {entry['auroc_error']:.3f} |")
    print()
    print("| confusion from | members | epochs | mean AUROC |")
    print("|---|---|---|---|")
    for row in metrics["cost"]:
        print(f"| epochs {row['epochs_used'][0]}..{row['epochs_used'][-1]} | {row['members']} | {row['epochs']} | {row['mean_auroc_error']:.3f} |")
    summary = {"evidence": found, "ceiling": {n: m["ceiling"] for n, m in models_metrics.items()}, "cost": metrics["cost"]}
    (out / "difficulty_summary.json").write_text(json.dumps(summary, indent=2))


def evidence_of(reference: Path, paths: list[Path], target: Path, boot: int):
    """Every score of `reference` (and the combinations without a fit, and `combined` fitted to
    `target`'s errors) against every model's errors, with bootstrap intervals."""
    from evidence import evidence, load_models, rank_average

    from confusion.difficulty import SCORES, difficulty_scores, fit_combined_run, hardness
    from confusion.store import RunStore

    store = RunStore.open(reference)
    table = difficulty_scores(store, "val")
    for note in table.attrs.get("notes", []):
        print(f"# {note}")
    in_ref, models = load_models(store.sample_ids("val"), paths)
    scores = {name: hardness(table[name].to_numpy(), name)[in_ref] for name in SCORES}
    if np.isfinite(scores["knn_disagreement"]).all():
        scores["rank_average(confusion, knn_disagreement)"] = rank_average(scores["confusion"], scores["knn_disagreement"])
    if np.isfinite(scores["view_confusion"]).all():
        scores["rank_average(confusion, knn_disagreement, view_confusion)"] = rank_average(
            scores["confusion"], scores["knn_disagreement"], scores["view_confusion"]
        )
    if (target / "run.json").exists():
        fit = fit_combined_run(store, target=str(target), save=False)
        features = difficulty_scores(store, "val", names=fit.features)[fit.features].to_numpy(np.float64)
        scores[f"combined (target {target.name})"] = fit.apply(features, store.sample_ids("val"), calibration=True)[in_ref]
    return evidence(scores, models, boot=boot), models


if __name__ == "__main__":
    main()
