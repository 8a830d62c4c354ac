"""Which difficulty score of a cheap ensemble predicts other models' errors? The evidence table.

    .venv/bin/python bench/difficulty.py --demo demo-output          # the full demo's runs and zoo
    .venv/bin/python bench/difficulty.py --data mnist-5k --out runs/bench-mnist5k   # trains everything

For every difficulty score of the scoring run (cnn-s, 3 seeds, every epoch recorded) it prints
the AUROC for each other model's top-1 errors on the validation split (one event per member
and sample at that model's last epoch), the mean over models, how many models it beats their
own 1 - max probability on (what you could rank by if you could afford to run that model), and
the mean ratio of the models' error on the top 10% by the score to their error on the rest.
Then the cost side: the paper's confusion from fewer members and epochs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, help="a finished `confusion demo` output folder")
    parser.add_argument("--data", help="a dataset name to train the demo's recipe on (e.g. mnist-5k, digits)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-difficulty"), help="where --data trains")
    args = parser.parse_args()
    if (args.demo is None) == (args.data is None):
        sys.exit("give --demo DIR or --data NAME")
    from confusion.report import build_report

    started = time.perf_counter()
    if args.demo:
        from confusion.demo import FULL
        from confusion.zoo import run_name

        reference, compare = args.demo / "runs" / "cnn-s", [args.demo / "runs" / "cnn-m"]
        models = [args.demo / "zoo" / run_name(a) for a in FULL.zoo_archs]
        out, label = args.demo / "report-difficulty", f"demo {args.demo}"
    else:
        reference, compare, models = train_everything(args.data, args.out)
        out, label = args.out / "report", args.data
    metrics = build_report(reference, out, compare=compare, models=models)
    print(f"# difficulty scores of {reference} on {label}; CPU: {cpu()}; {time.perf_counter() - started:.0f} s")
    models_metrics = metrics["models"]
    names = list(models_metrics)
    print(f"# models ({len(names)}): " + "; ".join(f"{n}: error {m['error_rate']:.3f}" for n, m in models_metrics.items()))
    print()
    print("| score | needs labels | reads | mean AUROC | min | max | beats own MSP on | mean hard/rest error |")
    print("|---|---|---|---|---|---|---|---|")
    own_msp = np.array([models_metrics[n]["own_baselines"]["auroc_msp"] for n in names])
    for score, summary in metrics["difficulty_summary"].items():
        if score.startswith("own_"):
            values = own_msp if score == "own_msp" else np.array([models_metrics[n]["own_baselines"]["auroc_entropy"] for n in names])
            print(f"| {score} (the model itself) | no | that model | {values.mean():.3f} | {values.min():.3f} | {values.max():.3f} | - | - |")
            continue
        values = np.array([metrics["difficulty"][score][n]["auroc_error"] for n in names])
        wins = int((values > own_msp).sum())
        print(
            f"| {score} | {'yes' if summary['needs_labels'] else 'no'} | {summary['reads']} | {values.mean():.3f} | "
            f"{values.min():.3f} | {values.max():.3f} | {wins} of {len(names)} | {summary['mean_hard_to_rest']:.2f} |"
        )
    print()
    print("| confusion from | members | epochs | mean AUROC |")
    print("|---|---|---|---|")
    for row in metrics["cost"]:
        print(f"| epochs {row['epochs_used'][0]}..{row['epochs_used'][-1]} | {row['members']} | {row['epochs']} | {row['mean_auroc_error']:.3f} |")
    (out / "difficulty_summary.json").write_text(json.dumps({"difficulty_summary": metrics["difficulty_summary"], "cost": metrics["cost"]}, indent=2))


if __name__ == "__main__":
    main()
