"""Kill -9 soak: commands killed at seeded random moments, then rerun; prints a tally.

    python bench/faults.py                 # 50 kills over import, score --out, report, train
    python bench/faults.py --kills 200 --seed 3

Each case runs a command once uninterrupted (the reference), then again from scratch and
kills it (SIGKILL, its whole process group) after a random fraction of the reference's
duration, checks what the kill left (the run store opens, or the output is absent or whole;
nothing half-written), reruns the same command, and compares the result with the reference
(scores of the run, bytes of a table, metrics of a report). tests/test_faults.py runs a few
cases of the same harness.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from confusion._runtime import cpu_description
from confusion.runscores import score_run

CONFUSION = [sys.executable, "-m", "confusion.cli"]


def _run(args: list[str], cwd: Path, kill_after: float | None = None) -> tuple[int | None, float]:
    started = time.perf_counter()
    process = subprocess.Popen(CONFUSION + args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    if kill_after is None:
        _, stderr = process.communicate(timeout=900)
        if process.returncode != 0:
            raise RuntimeError(f"confusion {' '.join(args)} failed: {stderr.decode()[-2000:]}")
        return process.returncode, time.perf_counter() - started
    try:
        process.wait(timeout=kill_after)
        return process.returncode, time.perf_counter() - started  # finished before the kill
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return None, time.perf_counter() - started


def make_inputs(work: Path, samples: int = 4000, classes: int = 10) -> None:
    """Predictions of 3 members x 6 epochs, labels and ids, as a user would import them."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(classes, 0.4), size=(3, 6, samples)).astype(np.float32)
    np.save(work / "probs.npy", probs)
    np.save(work / "labels.npy", rng.integers(0, classes, samples))


CASES = {
    # name: (setup args run once before the reference, the command, what its result is)
    "import": (None, ["import", "--probs", "probs.npy", "--labels", "labels.npy", "--out", "run"], "run"),
    "score": (["import", "--probs", "probs.npy", "--labels", "labels.npy", "--out", "run"], ["score", "run", "--out", "scores.csv"], "table"),
    "report": (
        ["import", "--probs", "probs.npy", "--labels", "labels.npy", "--out", "run"],
        ["report", "run", "--out", "report", "--min-count", "1"],
        "report",
    ),
    "train": (
        None,
        ["train", "--data", "digits", "--arch", "mlp-s", "--members", "2", "--epochs", "6", "--precision", "fp32", "--out", "run"],
        "run",
    ),
}


def _result(kind: str, work: Path):
    if kind == "run":
        from confusion.store import RunStore

        store = RunStore.open(work / "run")
        return {split: score_run(store, split, cache=False).confusion for split in store.splits}
    if kind == "table":
        return (work / "scores.csv").read_bytes()
    metrics = json.loads((work / "report" / "metrics.json").read_text())
    metrics["run"].pop("report_made", None)
    return metrics


def _same(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict) and all(isinstance(v, np.ndarray) for v in a.values()):
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    return a == b


def _left_whole(kind: str, work: Path) -> str | None:
    """What a kill left, if it is wrong: None when the output is absent or complete."""
    if kind == "table":
        return None if not (work / "scores.csv").exists() or (work / "scores.csv").read_bytes().count(b"\n") > 1 else "a half-written table"
    if kind == "report":
        if (work / "report").exists() and not (work / "report" / "index.html").exists():
            return "a report folder without its page"
        return None
    return None


def run_case(name: str, fraction: float, base: Path) -> dict:
    """One kill: reference, killed run, rerun; returns what happened."""
    setup, command, kind = CASES[name]
    outcome = {"case": name, "fraction": round(fraction, 3)}
    reference_dir, work = base / f"{name}-reference", base / f"{name}-{fraction:.3f}"
    for folder in (reference_dir, work):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for file in ("probs.npy", "labels.npy"):
            if (base / file).exists():
                os.link(base / file, folder / file)
        if setup:
            _run(setup, folder)
    _, seconds = _run(command, reference_dir)
    reference = _result(kind, reference_dir)
    code, _ = _run(command, work, kill_after=seconds * fraction)
    outcome["killed"] = code is None
    outcome["left"] = _left_whole(kind, work)
    # The same command again: it resumes, starts over cleanly, or (killed after its last write)
    # refuses in one line to redo finished work. Either way the result must be the reference.
    process = subprocess.run(CONFUSION + command, cwd=work, capture_output=True, text=True, timeout=900)
    errors = [line for line in process.stderr.splitlines() if line.startswith("confusion: error:")]
    if process.returncode not in (0, 2) or "Traceback" in process.stderr or (process.returncode == 2 and len(errors) != 1):
        outcome["exact"] = False
        outcome["error"] = process.stderr.strip()[-300:]
    else:
        try:
            outcome["exact"] = _same(_result(kind, work), reference)
        except Exception as error:
            outcome["exact"] = False
            outcome["error"] = f"{type(error).__name__}: {str(error)[:200]}"
        if process.returncode == 2:
            outcome["rerun_said"] = errors[0][:200]
    stray = [p.name for p in work.rglob(".*.tmp")] + [p.name for p in work.glob(".*.partial")]
    outcome["stray"] = stray
    shutil.rmtree(reference_dir, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=50, help="number of kill cases (spread over the commands)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    names = list(CASES)
    print(f"{cpu_description()}; {args.kills} kills, seed {args.seed}")
    tally = {name: {"cases": 0, "killed": 0, "exact": 0, "left_wrong": 0, "stray": 0} for name in names}
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        make_inputs(base)
        for k in range(args.kills):
            name = names[k % len(names)]
            outcome = run_case(name, float(rng.uniform(0.05, 0.95)), base)
            row = tally[name]
            row["cases"] += 1
            row["killed"] += outcome["killed"]
            row["exact"] += outcome["exact"]
            row["left_wrong"] += outcome["left"] is not None
            row["stray"] += bool(outcome["stray"])
            print(json.dumps(outcome), flush=True)
    print(f"\n{'command':<10}{'cases':>7}{'killed':>8}{'exact':>7}{'half-written':>14}{'stray files':>13}")
    for name, row in tally.items():
        print(f"{name:<10}{row['cases']:>7}{row['killed']:>8}{row['exact']:>7}{row['left_wrong']:>14}{row['stray']:>13}")


if __name__ == "__main__":
    main()
