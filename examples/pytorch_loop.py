"""A plain PyTorch loop: 3 members, each in its own process, recorded with confusion.Recorder.

Run as is, it starts the 3 member jobs at once (as a SLURM array or 3 machines sharing the
directory would) and scores the run; `python pytorch_loop.py --member 1` runs one job. Kill a
job and run it again: it resumes after the last epoch it ended. Data: scikit-learn's digits.
"""

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

from confusion import Recorder
from confusion.runscores import score_table
from confusion.store import RunStore

RUN, MEMBERS, EPOCHS = Path("runs/digits-loop"), 3, 8

digits = load_digits()
x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
y = torch.tensor(digits.target)
order = np.random.default_rng(0).permutation(len(y))
train, val = order[:1200], order[1200:]


def member_job(member: int) -> None:
    torch.manual_seed(member)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    checkpoint = RUN / f"member-{member}.pt"
    start = 0
    if checkpoint.exists():  # resume from the last saved weights
        state = torch.load(checkpoint, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start = state["epoch"]
    with Recorder.open(RUN).member(member) as writer:
        for epoch in range(start + 1, EPOCHS + 1):
            model.train()
            for batch in torch.randperm(len(train)).split(64):
                index = torch.as_tensor(train)[batch]
                loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if epoch > writer.last_epoch:  # killed after end_epoch, before the checkpoint: not again
                model.eval()
                with torch.no_grad():
                    for batch in torch.randperm(len(val)).split(100):  # a shuffled eval loader is fine
                        writer.log("val", epoch, model(x[val[batch]]), index=batch, logits=True)
                writer.end_epoch(epoch)
            state = {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}
            torch.save(state, checkpoint.with_suffix(".tmp"))
            checkpoint.with_suffix(".tmp").replace(checkpoint)  # whole or not at all


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--member", type=int)
    member = parser.parse_args().member
    # Every job may create the run: the first one does, the others join it.
    Recorder.create(RUN, n_classes=10, members=MEMBERS, splits={"val": y[val]}, exist_ok=True)
    if member is not None:
        member_job(member)
    else:
        jobs = [subprocess.Popen([sys.executable, __file__, "--member", str(m)]) for m in range(MEMBERS)]
        assert all(job.wait() == 0 for job in jobs)
        store = RunStore.open(RUN)
        print(f"committed epochs: {store.recorded_epochs}")
        print(score_table(store).describe())
