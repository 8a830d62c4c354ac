"""How the train split is recorded: the eval pass against in-loop recording, in one run.

    .venv/bin/python bench/record_train.py [--epochs 10 --limit-train 12000 --limit-val 5000]

Trains the default recipe three times (Fashion-MNIST, cnn-s, 3 members): seeds A with the
eval pass (the default), seeds A recording the training forward pass (`--record-train
in-loop`), seeds B with the eval pass. Prints each run's wall time and eval share of
training time, and the Kendall tau of confusion between the runs per split: a recording
that keeps the scores should agree with the default at least as well as a reseed does.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from confusion._runtime import cpu_description
from confusion.runscores import score_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--limit-train", type=int, default=12000, help="training images")
    parser.add_argument("--limit-val", type=int, default=5000, help="validation images")
    args = parser.parse_args()

    from scipy.stats import kendalltau

    from confusion.training import TrainConfig, train

    print(cpu_description(), flush=True)
    runs = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, seed, record in (("eval pass, seeds A", 0, "eval"), ("in-loop, seeds A", 0, "in-loop"), ("eval pass, seeds B", 100, "eval")):
            config = TrainConfig(limit_train=args.limit_train, limit_val=args.limit_val, epochs=args.epochs, seed=seed, record_train=record)
            started = time.perf_counter()
            store = train(config, Path(scratch) / f"run-{len(runs)}")
            history = [store.history(m) for m in range(config.members)]
            # Members train concurrently: an epoch's wall time is its slowest member's.
            training = sum(max(h[e]["train_seconds"] for h in history) for e in range(args.epochs))
            evaluating = sum(max(h[e]["eval_seconds"] for h in history) for e in range(args.epochs))
            print(f"{name:<20} {time.perf_counter() - started:6.0f} s   eval {evaluating / training:4.0%} of training time", flush=True)
            runs[name] = {split: score_run(store, split).confusion for split in ("train", "val")}
    print(f"\n{'split':<6} {'tau(eval A, in-loop A)':>23} {'tau(eval A, eval B)':>20}")
    for split in ("train", "val"):
        default = runs["eval pass, seeds A"][split]
        in_loop = kendalltau(default, runs["in-loop, seeds A"][split]).statistic
        reseed = kendalltau(default, runs["eval pass, seeds B"][split]).statistic
        print(f"{split:<6} {in_loop:>23.3f} {reseed:>20.3f}")


if __name__ == "__main__":
    main()
