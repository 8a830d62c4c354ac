"""What the new signals cost on top of plain recording: training time and store bytes.

    .venv/bin/python bench/signals_cost.py                # Fashion-MNIST, the demo's 20,000 training images

Trains one cnn-s member for 2 epochs five times, in one process each, one after the other:
plain recording (--embeddings none), embeddings only (--views none), and the defaults
(embeddings and test-time views at the last epoch); then plain and the defaults again with
--keep reduced, where the commit computes the neighbourhood and view scores of every split into
signals/ and deletes the embeddings and views (the extra is against plain --keep reduced). Prints the last epoch's eval seconds (the
recording pass, where both are taken), the whole run's seconds, the extra seconds of the whole
run (the eval pass and the projection onto principal axes when the epoch ends) as a share of a
demo member's 20 epochs of plain recording, and the bytes per sample the store keeps for each
(penultimate/, views/ and signals/, over every split's samples).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confusion._runtime import cpu_description

SETTINGS = {
    "plain": ["--embeddings", "none"],
    "embeddings": ["--views", "none"],
    "embeddings + views": [],
    "plain, --keep reduced": ["--embeddings", "none", "--keep", "reduced"],
    "embeddings + views, --keep reduced": ["--keep", "reduced"],
}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--limit-train", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    print(f"# signal cost, cnn-s x 1 member x {args.epochs} epochs on {args.data} ({args.limit_train} training images); CPU: {cpu_description()}")
    print()
    print(
        "| recorded | run (s) | last epoch's train (s) | last epoch's eval (s) | extra per demo member (20 epochs) "
        "| penultimate/ bytes per sample | views/ bytes per sample | signals/ bytes per sample |"
    )
    print("|---|---|---|---|---|---|---|---|")
    bases: dict[bool, tuple[dict, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, extra in SETTINGS.items():
            out = Path(scratch) / name.replace(" ", "")
            command = [sys.executable, "-m", "confusion.cli", "train", "--data", args.data, "--members", "1", "--epochs", str(args.epochs)]
            command += ["--limit-train", str(args.limit_train), "--workers", "1", "--out", str(out), *extra]
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            seconds = time.perf_counter() - started
            info = json.loads((out / "members" / "member-0.json").read_text())["info"][str(args.epochs)]
            n = _samples(out)
            base = bases.setdefault("--keep" in extra, (info, seconds))  # against plain recording of the same keep
            demo_member = 20 * (base[0]["train_seconds"] + base[0]["eval_seconds"])
            extra_seconds = seconds - base[1]  # the eval pass and the projection at the epoch's end
            print(
                f"| {name} | {seconds:.0f} | {info['train_seconds']:.1f} | {info['eval_seconds']:.1f} | "
                f"{extra_seconds:+.1f} s ({100 * extra_seconds / demo_member:+.1f}%) | "
                f"{folder_bytes(out / 'penultimate') / n:.0f} | {folder_bytes(out / 'views') / n:.0f} | {folder_bytes(out / 'signals') / n:.0f} |"
            )


def _samples(run: Path) -> int:
    from confusion.store import RunStore

    store = RunStore.open(run)
    return sum(store.n_samples(split) for split in store.splits)


if __name__ == "__main__":
    main()
