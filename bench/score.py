"""Scoring throughput against the machine's plain numpy read bandwidth, measured in one run.

    .venv/bin/python bench/score.py [--members 3 --epochs 20 --samples 100000 --classes 100]

Builds a float16 array (default 3 x 20 x 100k x 100 = 1.12 GiB), then prints one table:
  - numpy read: summing the same bytes as int64 (one pass, no arithmetic to speak of);
  - each scoring path (fused numba kernel, plain numpy) on the in-memory array;
  - the fused kernel reading from a run store on disk, in a fresh process, with its peak RSS.
Throughput is GB/s of float16 input (1 GB = 1e9 bytes); "ratio" is against the numpy read.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from confusion._runtime import cpu_description
from confusion.scores import confusion_scores
from confusion.store import RunStore, SplitData


def best_of(repeats: int, function) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def make_array(members: int, epochs: int, samples: int, classes: int, seed: int = 0) -> np.ndarray:
    """Peaked softmax outputs (like a trained model's), built block by block to bound memory."""
    rng = np.random.default_rng(seed)
    array = np.empty((members, epochs, samples, classes), dtype=np.float16)
    block = 8192
    for start in range(0, samples, block):
        stop = min(samples, start + block)
        logits = rng.standard_normal((members, epochs, stop - start, classes), dtype=np.float32) * 4.0
        logits -= logits.max(axis=-1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=-1, keepdims=True)
        array[:, :, start:stop] = logits
    return array


STORE_CHILD = """
import json, resource, sys, time
from confusion.store import RunStore
from confusion.runscores import score_run
store = RunStore.open(sys.argv[1])
decomposition = sys.argv[2] == "full"
score_run(store, "val", epochs=[1], cache=False, decomposition=decomposition)  # compile / load the kernel outside the timing
start = time.perf_counter()
scores = score_run(store, "val", cache=False, decomposition=decomposition)
seconds = time.perf_counter() - start
# VmHWM, not ru_maxrss: the latter keeps the forking parent's size across exec.
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"seconds": seconds, "peak_rss": peak, "mean": float(scores.confusion.mean())}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--numpy-fraction", type=float, default=0.1, help="share of samples timed on the slow numpy path")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    array = make_array(args.members, args.epochs, args.samples, args.classes)
    nbytes = array.nbytes
    print(f"array: {array.shape} float16 = {nbytes / 2**30:.2f} GiB; {cpu_description()}", flush=True)

    words = array.reshape(-1).view(np.int64)
    read = best_of(args.repeats, lambda: np.add.reduce(words))
    rows = [("numpy read (int64 sum)", nbytes / read / 1e9, "-")]

    confusion_scores(array[:, :, :256])  # compile the kernel before timing
    fused_seconds = best_of(args.repeats, lambda: confusion_scores(array))
    rows.append(("fused kernel, in memory", nbytes / fused_seconds / 1e9, "-"))
    only_seconds = best_of(args.repeats, lambda: confusion_scores(array, decomposition=False))
    rows.append(("fused kernel, confusion only, in memory", nbytes / only_seconds / 1e9, "-"))

    part = array[:, :, : max(1, int(args.samples * args.numpy_fraction))]
    numpy_seconds = best_of(1, lambda: confusion_scores(part, engine="numpy"))
    rows.append((f"numpy path, in memory ({args.numpy_fraction:.0%} of samples)", part.nbytes / numpy_seconds / 1e9, "-"))

    reference = confusion_scores(part[:, :, :2000], engine="numpy").confusion
    agreement = np.abs(confusion_scores(part[:, :, :2000]).confusion - reference).max()

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as scratch:
        store = RunStore.create(
            Path(scratch) / "run",
            n_classes=args.classes,
            members=[{"index": m, "seed": m} for m in range(args.members)],
            epoch_capacity=args.epochs,
            splits={"val": SplitData(ids=np.arange(args.samples).astype(str), labels=np.full(args.samples, -1))},
        )
        for member in range(args.members):
            with store.member_writer(member) as writer:
                for epoch in range(args.epochs):
                    writer.log("val", epoch + 1, array[member, epoch], validate=False)
                    writer.end_epoch(epoch + 1)
        for what, label in (("full", "fused kernel, from the run store (fresh process)"), ("only", "  confusion only, from the run store")):
            child = subprocess.run([sys.executable, "-c", STORE_CHILD, str(store.path), what], capture_output=True, text=True, check=True)
            measured = json.loads(child.stdout.strip().splitlines()[-1])
            rows.append((label, nbytes / measured["seconds"] / 1e9, f"{measured['peak_rss'] / 2**20:.0f} MiB"))

    bandwidth = rows[0][1]
    print(f"\n{'path':<52} {'GB/s':>7} {'ratio':>7} {'peak RSS':>10}")
    for name, rate, rss in rows:
        print(f"{name:<52} {rate:>7.2f} {rate / bandwidth:>7.1%} {rss:>10}")
    print(f"\narray size {nbytes / 2**20:.0f} MiB; fused vs float64 numpy max |difference| {agreement:.2e} bits")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"this process (holds the in-memory array): peak RSS {peak / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
