"""What a small command costs before it trains: start-up of the CLI and of training processes.

    .venv/bin/python bench/startup.py [--repeats 3]

Each row runs a fresh Python process, `--repeats` times, and prints the median wall-clock
seconds and the ratio to the plain baseline of the same run: a process that only imports
torch (what any training process must pay). Rows:

    import torch                      the baseline
    import confusion.training         what a training process imports besides torch
    load digits                       scikit-learn's digits, as every digits run loads them
    confusion --help                  the CLI's own start-up
    train, console script             `confusion train --data digits --arch mlp-s --members 3
                                      --epochs 1`: the coordinator and 3 member processes
    train, python -m confusion.cli    the same through `python -m` (as the tests run it)

On 2 cores the 3 member processes start 2 at a time, so the two train rows are mostly
start-up: the epoch itself takes ~0.05 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confusion._runtime import cpu_description

TRAIN = ["train", "--data", "digits", "--arch", "mlp-s", "--members", "3", "--epochs", "1"]


def seconds(command: list[str], repeats: int, scratch: Path) -> float:
    times = []
    for _ in range(repeats):
        out = Path(tempfile.mkdtemp(dir=scratch)) / "run"  # a new run each time
        started = time.perf_counter()
        subprocess.run([part.replace("OUT", str(out)) for part in command], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each row; the median is shown")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    python = sys.executable
    script = str(Path(python).parent / "confusion")
    rows = {
        "import torch": [python, "-c", "import torch"],
        "import confusion.training": [python, "-c", "import confusion.training"],
        "load digits": [python, "-c", "from confusion.datasets import load_dataset; load_dataset('digits')"],
        "confusion --help": [script, "--help"],
        "train, console script": [script, *TRAIN, "--out", "OUT"],
        "train, python -m confusion.cli": [python, "-m", "confusion.cli", *TRAIN, "--out", "OUT"],
    }
    print(cpu_description(), flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        measured = {name: seconds(command, args.repeats, Path(scratch)) for name, command in rows.items()}
    baseline = measured["import torch"]
    print(f"{'':32s} {'seconds':>8s} {'x import torch':>15s}")
    for name, value in measured.items():
        print(f"{name:32s} {value:8.2f} {value / baseline:15.2f}")


if __name__ == "__main__":
    main()
