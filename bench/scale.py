"""ImageNet scale: raw vs reduced records, Dask scoring and top-k bounds, measured then extrapolated.

    .venv/bin/python bench/scale.py [--samples 100000 --classes 1000 --members 3 --epochs 10]
                                    [--ks 5,10,20] [--dask-workers 2] [--dir SCRATCH]

Records one synthetic run shaped like ImageNet (peaked softmax outputs, float16) twice through
the Recorder, epoch by epoch as a training loop would: kept raw and kept reduced. Then prints
  1. bytes on disk of each run and their ratio;
  2. recording time per epoch (every member's log + end_epoch, the reduction at commit included)
     against writing the same float16 bytes with numpy (the plain baseline, same run);
  3. scoring time and peak memory (a fresh process each, VmHWM) for raw, reduced, raw on a
     Dask LocalCluster (client and worst worker), and top-k logs cut from the raw run
     (k = 5, 10, 20: mean and max bound width in bits, and whether every exact score lies inside);
  4. the same figures extrapolated to the paper's ImageNet run (1.28M train samples x 1,000
     classes x 100 epochs x 3 members) from the measured per-prediction costs.
Needs ~2 x raw size of free disk (6 GB at the defaults; BENCH_TMP or --dir picks where).

    .venv/bin/python bench/scale.py --real RUN [--split val] [--ks 1,2,3,5]

instead cuts a real raw run (e.g. the demo's demo-output/runs/small) to its top k classes and
prints, per k, the bound widths, whether every exact score lies inside, and how many samples of
a 10% hard set are certain.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from confusion import Recorder
from confusion._runtime import cpu_description
from confusion.reduced import bytes_per_prediction

PAPER = {"samples": 1_281_167, "classes": 1000, "epochs": 100, "members": 3}
BATCH = 10_000  # rows per log call, as a training loop's eval pass hands them over

SCORE_CHILD = """
import json, sys, time
from confusion.store import RunStore
from confusion.runscores import score_run
store = RunStore.open(sys.argv[1])
start = time.perf_counter()
if sys.argv[2] == "dask":
    from confusion.cluster import dask_client
    with dask_client(sys.argv[3]) as client:
        client.run(lambda: None)  # workers up before the clock matters
        start = time.perf_counter()
        scores = score_run(store, "val", cache=False, client=client)
        seconds = time.perf_counter() - start
        workers = client.run(lambda: next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")))
        worker_peak = max(workers.values())
else:
    score_run(store, "val", epochs=store.recorded_epochs[:1], cache=False)  # the kernel compiled outside the timing
    start = time.perf_counter()
    scores = score_run(store, "val", cache=False)
    seconds = time.perf_counter() - start
    worker_peak = 0
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
result = {"seconds": seconds, "peak": peak, "worker_peak": worker_peak, "confusion": scores.confusion.tolist()}
if scores.bounded:
    result["low"], result["high"] = scores.confusion_low.tolist(), scores.confusion_high.tolist()
json.dump(result, open(sys.argv[-1], "w"))
"""


def peaked(rng, rows: int, classes: int) -> np.ndarray:
    """Softmax of scaled normal logits: peaked like a trained model's, some samples confused."""
    logits = rng.standard_normal((rows, classes), dtype=np.float32)
    logits *= rng.uniform(1.0, 6.0, size=(rows, 1)).astype(np.float32)
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def score_in_child(run: Path, mode: str, extra: str, scratch: Path) -> dict:
    out = scratch / f"score-{mode}-{run.name}.json"
    subprocess.run([sys.executable, "-c", SCORE_CHILD, str(run), mode, extra, str(out)], check=True)
    result = json.loads(out.read_text())
    out.unlink()
    return result


def human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(nbytes) < 1000 or unit == "TB":
            return f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return ""


def duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--ks", default="5,10,20", help="top-k sizes, comma-separated")
    parser.add_argument("--dask-workers", type=int, default=2)
    parser.add_argument("--dir", default=os.environ.get("BENCH_TMP"), help="scratch folder (default: a temporary one)")
    parser.add_argument("--real", help="a raw run to cut to top-k instead of the synthetic run")
    parser.add_argument("--split", default="val", help="with --real: the split")
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",") if k]
    if args.real:
        real_run(Path(args.real), args.split, ks)
        return
    n, c, m, t = args.samples, args.classes, args.members, args.epochs
    raw_bytes = n * c * m * t * 2
    print(
        f"synthetic run: {m} members x {t} epochs x {n:,} samples x {c:,} classes (raw float16 {human(raw_bytes)}); {cpu_description()}", flush=True
    )

    scratch = Path(tempfile.mkdtemp(prefix="confusion-scale-", dir=args.dir))
    try:
        run(args, scratch, ks, n, c, m, t)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def real_run(path: Path, split: str, ks: list[int]) -> None:
    """Top-k cuts of a real run: widths, containment of the exact scores, certain hard-set members."""
    from confusion.hardset import certain_choice, select
    from confusion.runscores import score_run
    from confusion.store import RunStore
    from confusion.topk import epoch_bounds

    store = RunStore.open(path)
    probs = np.asarray(
        store.probs_reader(split)[slice(None), slice(0, len(store.recorded_epochs)), slice(0, store.n_samples(split))], dtype=np.float32
    )
    m, t, n, c = probs.shape
    exact = score_run(store, split, cache=False).confusion
    print(f"{path} ({split}): {m} members x {t} epochs x {n:,} samples x {c} classes; {cpu_description()}")
    print(
        f"{'k':>4} {'mean width':>11} {'max width':>10} {'exact outside':>14} {'certain of top 10%':>19} {'wrongly certain':>16} {'seconds':>8}  (bits)"
    )
    truly_top = set(select(exact, top=0.1).tolist())
    for k in ks:
        began = time.perf_counter()
        order = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
        values = np.take_along_axis(probs, order, axis=-1)
        low, high, point = (np.zeros((t, n)) for _ in range(3))
        for slot in range(t):
            point[slot], low[slot], high[slot], _ = epoch_bounds(values[:, slot], order[:, slot], c)
        low, high, point = (a.mean(axis=0) / np.log(2) for a in (low, high, point))
        seconds = time.perf_counter() - began
        picked = select(point, top=0.1)
        certain = certain_choice(low, high, picked, top=0.1)
        outside = int(((exact < low) | (exact > high)).sum())
        wrong = sum(1 for i in picked[certain] if int(i) not in truly_top)
        print(
            f"{k:>4} {float((high - low).mean()):>11.3f} {float((high - low).max()):>10.3f} {outside:>14} "
            f"{int(certain.sum()):>8} of {len(picked):<8} {wrong:>16} {seconds:>8.2f}"
        )


def run(args, scratch: Path, ks: list[int], n: int, c: int, m: int, t: int) -> None:
    labels = np.random.default_rng(1).integers(0, c, n)
    recorders = {keep: Recorder.create(scratch / keep, n_classes=c, members=m, splits={"val": labels}, keep=keep) for keep in ("raw", "reduced")}
    writers = {keep: [rec.member(i) for i in range(m)] for keep, rec in recorders.items()}
    seconds = {"raw": 0.0, "reduced": 0.0, "numpy": 0.0, "reduce": 0.0}
    baseline = scratch / "baseline.npy"
    rng = np.random.default_rng(0)
    for epoch in range(1, t + 1):
        for i in range(m):
            for start in range(0, n, BATCH):
                rows = peaked(rng, min(BATCH, n - start), c).astype(np.float16)
                index = np.arange(start, start + len(rows))
                for keep in ("raw", "reduced"):
                    began = time.perf_counter()
                    writers[keep][i].log("val", epoch, rows, index=index)
                    seconds[keep] += time.perf_counter() - began
                began = time.perf_counter()
                with open(baseline, "ab") as handle:  # the plain baseline: the same bytes, written by numpy
                    rows.tofile(handle)
                seconds["numpy"] += time.perf_counter() - began
            for keep in ("raw", "reduced"):
                began = time.perf_counter()
                writers[keep][i].end_epoch(epoch)  # the last member's commits the epoch (and reduces it)
                spent = time.perf_counter() - began
                seconds[keep] += spent
                if keep == "reduced" and i == m - 1:
                    seconds["reduce"] += spent
        baseline.unlink()
        print(f"  epoch {epoch}/{t} recorded", flush=True)
    for keep in writers:
        for writer in writers[keep]:
            writer.close()
    sizes = {keep: disk_bytes(scratch / keep) for keep in ("raw", "reduced")}

    print("\n1. bytes on disk (every file of the run)")
    print(f"{'record':<10} {'bytes':>12} {'per prediction':>15} {'vs raw':>8}")
    for keep, size in sizes.items():
        print(f"{keep:<10} {human(size):>12} {size / (n * m * t):>13.1f} B {sizes['raw'] / size:>7.1f}x")
    print(f"(the reduced record's arrays alone: {bytes_per_prediction(m, c):.2f} B per prediction; raw {2 * c} B)")

    print("\n2. recording, per epoch (all members: log every batch, end_epoch; the commit included)")
    print(f"{'path':<46} {'s/epoch':>8} {'vs numpy write':>15}")
    for name, label in (
        ("numpy", "numpy writes the same float16 bytes (baseline)"),
        ("raw", "Recorder, keep raw"),
        ("reduced", "Recorder, keep reduced"),
        ("reduce", "  of which the reduction at commit"),
    ):
        print(f"{label:<46} {seconds[name] / t:>8.2f} {seconds[name] / seconds['numpy']:>14.2f}x")

    print("\n3. scoring (a fresh process each; peak = VmHWM)", flush=True)
    results = {
        "raw": score_in_child(scratch / "raw", "local", "", scratch),
        "reduced": score_in_child(scratch / "reduced", "local", "", scratch),
        f"raw, Dask local:{args.dask_workers}": score_in_child(scratch / "raw", "dask", f"local:{args.dask_workers}", scratch),
    }
    exact = np.asarray(results["raw"]["confusion"])
    widths = {}
    from confusion.importing import import_topk
    from confusion.store import RunStore

    raw_store = RunStore.open(scratch / "raw")
    for k in ks:
        values = np.empty((m, t, n, k), np.float32)
        indices = np.empty((m, t, n, k), np.int32)
        reader = raw_store.probs_reader("val")
        for i in range(m):
            for slot in range(t):
                for start in range(0, n, BATCH):
                    stop = min(n, start + BATCH)
                    block = np.asarray(reader[slice(i, i + 1), slice(slot, slot + 1), slice(start, stop)])[0, 0].astype(np.float32)
                    top = np.argpartition(-block, k - 1, axis=1)[:, :k]
                    values[i, slot, start:stop] = np.take_along_axis(block, top, axis=1)
                    indices[i, slot, start:stop] = top
        import_topk((values, indices), scratch / f"top{k}", n_classes=c)
        del values, indices
        sizes[f"top{k}"] = disk_bytes(scratch / f"top{k}")
        result = score_in_child(scratch / f"top{k}", "local", "", scratch)
        low, high = np.asarray(result["low"]), np.asarray(result["high"])
        widths[k] = (float((high - low).mean()), float((high - low).max()), int(((exact < low) | (exact > high)).sum()))
        results[f"top-{k} logs"] = result
        shutil.rmtree(scratch / f"top{k}")
    print(f"{'run':<22} {'seconds':>8} {'ns/pred':>8} {'peak RSS':>10} {'worker peak':>12} {'max |diff| vs raw':>18}  bounds (bits)")
    for name, result in results.items():
        diff = float(np.abs(np.asarray(result["confusion"]) - exact).max())
        k = int(name.split()[0][4:]) if name.startswith("top-") else None
        extra = f"mean width {widths[k][0]:.3f}, max {widths[k][1]:.3f}, exact outside: {widths[k][2]}" if k else ""
        worker = human(result["worker_peak"]) if result["worker_peak"] else "-"
        print(
            f"{name:<22} {result['seconds']:>8.2f} {result['seconds'] / (n * m * t) * 1e9:>8.2f} {human(result['peak']):>10} {worker:>12} {diff:>18.2e}  {extra}"
        )
    print(f"(the raw run is {human(sizes['raw'])}: scoring's peak memory is set by its block size and the (epochs x samples) result, not by the run)")
    for k in ks:
        print(f"top-{k} logs on disk: {human(sizes[f'top{k}'])} ({sizes['raw'] / sizes[f'top{k}']:.1f}x smaller than raw)")

    predictions = PAPER["samples"] * PAPER["members"] * PAPER["epochs"]
    scale = predictions / (n * m * t)
    print(
        f"\n4. extrapolated to ImageNet: {PAPER['samples']:,} samples x {PAPER['classes']:,} classes x {PAPER['epochs']} epochs x {PAPER['members']} members"
        f" ({scale:.0f}x these predictions; per-prediction costs measured above at C = {c:,})"
    )
    print(f"{'figure':<44} {'raw':>12} {'reduced':>12}")
    print(f"{'bytes on disk':<44} {human(sizes['raw'] * scale):>12} {human(sizes['reduced'] * scale):>12}")
    per_epoch = PAPER["samples"] / n
    print(
        f"{'recording per epoch (3 members, one process)':<44} {duration(seconds['raw'] / t * per_epoch):>12} {duration(seconds['reduced'] / t * per_epoch):>12}"
    )
    print(f"{'scoring, one process':<44} {duration(results['raw']['seconds'] * scale):>12} {duration(results['reduced']['seconds'] * scale):>12}")
    dask_name = f"raw, Dask local:{args.dask_workers}"
    print(f"{'scoring, Dask local:' + str(args.dask_workers):<44} {duration(results[dask_name]['seconds'] * scale):>12} {'-':>12}")
    for k in ks:
        print(
            f"{f'top-{k} logs: bytes / scoring':<44} {human(sizes['raw'] * scale / (sizes['raw'] / (sizes[f'top{k}'] or 1))):>12} {duration(results[f'top-{k} logs']['seconds'] * scale):>12}"
        )


if __name__ == "__main__":
    main()
