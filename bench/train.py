"""The trainer against a plain fp32 PyTorch loop, on the same data, in one run.

    .venv/bin/python bench/train.py [--arch cnn-s --members 3 --epochs 3 --limit-train 12000]

Prints training throughput (member-samples per second of wall time) of
  - a plain loop written here: fp32, default threads and allocator, members one after another;
  - `confusion train` (what the command uses: one process per member, channels_last,
    tcmalloc, bf16 only where the CPU computes in it);
their ratio; the trainer's eval pass as a share of training time and of the epoch; and the
Kendall tau between val-split confusion scores of runs with different seeds (trainer vs plain,
plain vs plain), which shows whether the fast path changes what the scores say.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from confusion._runtime import cpu_description
from confusion.runscores import score_run

PLAIN = r"""
import json, sys, time, numpy as np, torch
from torch.nn import functional as F
from confusion.datasets import load_dataset, select_subsets
from confusion.models import build_model
arch, members, epochs, limit, seed0 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
device = torch.device(sys.argv[7])
data = select_subsets(load_dataset("fashion-mnist"), limit, None, 0)
xtr = torch.from_numpy(data.splits["train"].images).float().div(255)
ytr = torch.from_numpy(data.splits["train"].labels)
xva = torch.from_numpy(data.splits["val"].images).float().div(255)
mean, std = xtr.mean(), xtr.std()
xtr, xva = ((xtr - mean) / std).to(device), ((xva - mean) / std).to(device)
ytr = ytr.to(device)
train_seconds, probs = 0.0, np.zeros((members, epochs, len(xva), 10), np.float32)
for m in range(members):
    torch.manual_seed(seed0 + m)
    model = build_model(arch, 1, 28, 10).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for e in range(epochs):
        start = time.perf_counter()
        model.train()
        for idx in torch.randperm(len(xtr)).split(128):
            idx = idx.to(device)
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad(); loss.backward(); opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds += time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            probs[m, e] = torch.cat([model(b).softmax(1) for b in xva.split(256)]).cpu().numpy()
np.save(sys.argv[6], probs)
print(json.dumps({"train_seconds": train_seconds, "samples": members * epochs * len(xtr)}))
"""


def plain_run(arch: str, members: int, epochs: int, limit: int, seed: int, out: Path, device: str = "cpu") -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-c", PLAIN, arch, str(members), str(epochs), str(limit), str(seed), str(out), device],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def torch_device_name(device: str) -> str:

    import torch

    if device == "cuda":
        return f"GPU {torch.cuda.get_device_name(0)}"
    return cpu_description()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="cnn-s")
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit-train", type=int, default=12000)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both loops run there)")
    parser.add_argument("--precision", default="auto", help="the trainer's: auto, fp32 or bf16 (the plain loop is always fp32)")
    args = parser.parse_args()

    from scipy.stats import kendalltau

    from confusion.scores import confusion_scores
    from confusion.training import TrainConfig, train

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        plain_a = plain_run(args.arch, args.members, args.epochs, args.limit_train, 100, scratch / "a.npy", args.device)
        plain_b = plain_run(args.arch, args.members, args.epochs, args.limit_train, 200, scratch / "b.npy", args.device)
        config = TrainConfig(
            arch=args.arch,
            members=args.members,
            epochs=args.epochs,
            limit_train=args.limit_train,
            augment=False,
            schedule="constant",
            device=args.device,
            precision=args.precision,
        )
        started = time.perf_counter()
        store = train(config, scratch / "run")
        wall = time.perf_counter() - started
        history = [store.history(m) for m in range(args.members)]
        # Members train concurrently: an epoch's wall time is its slowest member's.
        train_wall = sum(max(h[e]["train_seconds"] for h in history) for e in range(args.epochs))
        eval_wall = sum(max(h[e]["eval_seconds"] for h in history) for e in range(args.epochs))
        samples = args.members * args.epochs * args.limit_train
        plain_rate = plain_a["samples"] / plain_a["train_seconds"]
        fast_rate = samples / train_wall

        scores = {
            "trainer": score_run(store, "val").confusion,
            "plain A": confusion_scores(np.load(scratch / "a.npy")).confusion,
            "plain B": confusion_scores(np.load(scratch / "b.npy")).confusion,
        }

    where = torch_device_name(args.device)
    print(
        f"{args.arch}, {args.members} members x {args.epochs} epochs, {args.limit_train} Fashion-MNIST training samples, "
        f"trainer precision {args.precision}, {where}"
    )
    print(f"\n{'loop':<44} {'member-samples/s':>17} {'ratio':>7}")
    print(f"{'plain fp32 loop (members one after another)':<44} {plain_rate:>17.0f} {1.0:>7.2f}")
    plain_b_rate = plain_b["samples"] / plain_b["train_seconds"]
    print(f"{'  the same, other seeds (run-to-run noise)':<44} {plain_b_rate:>17.0f} {plain_b_rate / plain_rate:>7.2f}")
    print(f"{'confusion train':<44} {fast_rate:>17.0f} {fast_rate / plain_rate:>7.2f}")
    print(
        f"\neval pass (train + val splits, every epoch): {eval_wall / train_wall:.0%} of training time, "
        f"{eval_wall / (train_wall + eval_wall):.0%} of the epoch; whole trainer wall time {wall:.0f} s"
    )
    tau_fast = kendalltau(scores["trainer"], scores["plain A"]).statistic
    tau_plain = kendalltau(scores["plain A"], scores["plain B"]).statistic
    print(f"\nKendall tau of val confusion, different seeds: trainer vs plain A {tau_fast:.3f}; plain A vs plain B {tau_plain:.3f}")


if __name__ == "__main__":
    main()
