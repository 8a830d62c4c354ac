"""The eval pass's cost per architecture family, as `confusion train` runs it.

    .venv/bin/python bench/eval_pass.py [--archs mlp-s,cnn-s,cnn-m,cnn-l,resnet-s --epochs 3]

For each architecture, trains the default recipe (Fashion-MNIST, Adam, batch 128, 2-pixel
shifts, an eval pass over every split after every epoch) with `--members` members, one
process each, on a seeded subset of 12,000 training and 2,000 validation images: the
eval pass predicts 14,000 images per 12,000 trained, the same 7:6 ratio as the full
60,000/10,000 split, so its share of training time is the full split's. The first epoch is
left out (it builds oneDNN's kernels). Prints, per architecture, the seconds per epoch of
training and of the eval pass (prediction of both splits and writing them to the run
store), the eval pass as a share of training time (issue 14 aims at 20% or less) and the
images per second of each. Precision is what `--precision auto` picks on this CPU (fp32
where it has no bf16 arithmetic, or where ONEDNN_MAX_CPU_ISA caps oneDNN below it).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from confusion._runtime import cpu_description


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="mlp-s,cnn-s,cnn-m,cnn-l,resnet-s", help="comma-separated architectures")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is left out of the figures)")
    parser.add_argument("--members", type=int, default=2, help="members (processes) per run")
    parser.add_argument("--limit-train", type=int, default=12000, help="training images (validation: one sixth of this)")
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is left out)")
    n_train, n_val = args.limit_train, args.limit_train // 6
    if n_val < 1:
        parser.error("--limit-train must be at least 6 (validation is a sixth of it)")

    from confusion.engine import resolve_precision
    from confusion.errors import ConfusionError
    from confusion.models import build_model
    from confusion.training import TrainConfig, train

    configs = [
        TrainConfig(arch=arch, members=args.members, epochs=args.epochs, limit_train=n_train, limit_val=n_val, precision=args.precision)
        for arch in args.archs.split(",")
    ]
    for config in configs:  # every setting and name checked before the first run trains
        try:
            config.check()
            build_model(config.arch, 1, 28, 10)
        except ConfusionError as error:
            parser.error(str(error))
    print(cpu_description(), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for config in configs:
            store = train(config, Path(scratch) / config.arch)
            epochs = [entry for member in range(config.members) for entry in store.history(member)[1:]]
            train_s = statistics.median(e["train_seconds"] for e in epochs)
            eval_s = statistics.median(e["eval_seconds"] for e in epochs)
            rows.append((config.arch, resolve_precision(config), train_s, eval_s))
            print(f"  {config.arch}: done", flush=True)

    print(
        f"\nmedian per member-epoch over epochs 2-{args.epochs}, {args.members} members at once; {n_train:,} training + {n_val:,} validation images"
    )
    print(f"{'arch':<10} {'precision':>9} {'train s':>8} {'eval s':>7} {'eval/train':>10} {'train img/s':>12} {'eval img/s':>11}")
    for arch, precision, train_s, eval_s in rows:
        print(
            f"{arch:<10} {precision:>9} {train_s:>8.2f} {eval_s:>7.2f} {eval_s / train_s:>10.1%} {n_train / train_s:>12,.0f} {(n_train + n_val) / eval_s:>11,.0f}"
        )


if __name__ == "__main__":
    main()
