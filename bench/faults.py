"""Kill -9 soak: commands killed at seeded moments of their own progress, then rerun; prints a tally.

    python bench/faults.py                 # 50 kills over import, score --out, report, train
    python bench/faults.py --kills 200 --seed 3

Each case runs a command once uninterrupted (the reference) and keeps the progress lines it
printed on stderr. It then runs it again from scratch and kills it (SIGKILL, its whole process
group) the moment it prints a seeded one of those lines (never the last), so the kill lands
while the command is working, not after a timer that a fast machine outruns. It records what
the kill left committed (epochs, files present or absent), checks it is whole (the run store
opens, or the output is absent or complete; nothing half-written), reruns the same command,
and compares the result with the reference (scores of the run, bytes of a table, metrics of a
report). tests/test_faults.py runs one kill per command of the same harness and asserts the
committed state before the rerun.
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
from pathlib import Path

import numpy as np

from confusion._runtime import cpu_description
from confusion.runscores import score_run

CONFUSION = [sys.executable, "-m", "confusion.cli"]


def _run(args: list[str], cwd: Path) -> list[str]:
    """Run a command to its end; its stderr lines (progress, then the closing line)."""
    process = subprocess.run(CONFUSION + args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=900)
    if process.returncode != 0:
        raise RuntimeError(f"confusion {' '.join(args)} failed: {process.stderr[-2000:]}")
    return process.stderr.splitlines()


def _line_key(line: str) -> str:
    """A progress line without its timing, "(... s ...)" at the end, which differs between runs."""
    return line[: line.rindex(" (")] if line.endswith(")") and " (" in line else line


def _run_killed_at(args: list[str], cwd: Path, line: str) -> tuple[bool, str]:
    """Run a command and kill -9 its process group as it prints `line` (compared without
    timings). Returns (killed while working, the line it was killed at or why not)."""
    process = subprocess.Popen(
        CONFUSION + args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, bufsize=1, start_new_session=True
    )
    assert process.stderr is not None
    for printed in process.stderr:
        if _line_key(printed.rstrip("\n")) == _line_key(line):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return process.returncode == -signal.SIGKILL, printed.rstrip("\n")
    process.wait()
    return False, f"finished (exit {process.returncode}) without printing {line!r}"


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


def committed(kind: str, work: Path) -> dict:
    """What a killed command had committed: for a run, each member's ended epochs and whether it
    is complete; for a table or a report, whether it exists."""
    if kind == "table":
        return {"exists": (work / "scores.csv").exists()}
    if kind == "report":
        return {"exists": (work / "report").exists()}
    if not (work / "run" / "run.json").exists():
        return {"exists": False}
    from confusion.store import RunStore

    store = RunStore.open(work / "run")
    ended, planned = store.ended_epochs(), store.meta.get("planned_epochs")
    complete = store.meta.get("import_complete") is not False and (planned is None or all(e == planned for e in ended))
    return {"exists": True, "recorded_epochs": store.recorded_epochs, "ended_epochs": ended, "complete": complete}


def run_case(name: str, fraction: float, base: Path) -> dict:
    """One kill: reference, killed run, rerun; returns what happened. `fraction` (0-1) picks
    the progress line of the reference at which the second run is killed."""
    setup, command, kind = CASES[name]
    outcome: dict = {"case": name, "fraction": round(fraction, 3)}
    reference_dir, work = base / f"{name}-reference", base / f"{name}-{fraction:.3f}"
    for folder in (reference_dir, work):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for file in ("probs.npy", "labels.npy"):
            if (base / file).exists():
                os.link(base / file, folder / file)
        if setup:
            _run(setup, folder)
    lines = _run(command, reference_dir)
    reference = _result(kind, reference_dir)
    if len(lines) < 2:
        raise RuntimeError(f"confusion {' '.join(command)} printed {len(lines)} line(s): no progress line to kill it at")
    at = lines[min(int(fraction * (len(lines) - 1)), len(lines) - 2)]  # never the closing line
    outcome["killed"], outcome["killed_at"] = _run_killed_at(command, work, at)
    outcome["committed"] = committed(kind, work)
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
            outcome = run_case(name, float(rng.uniform(0.0, 1.0)), base)
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
