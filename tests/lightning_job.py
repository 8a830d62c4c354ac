"""A Lightning training job used by tests/test_integrations.py (run as a script: DDP re-runs it).

Trains one member of a tiny MLP on scikit-learn's digits, recording it with ConfusionCallback
into --out and, for comparison, with the plain Recorder into --compare (rank 0 predicts the
whole split in order with the same weights at the same moment).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from confusion import Recorder
from confusion.integrations.lightning import ConfusionCallback

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from lightning_ddp import Classifier


class PlainRecorder(pl.Callback):
    """The reference: the same model's predictions through the plain Recorder contract."""

    def __init__(self, path, member, members, x, y):
        self.path, self.member, self.members, self.x, self.y = path, member, members, x, y

    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        Recorder.create(self.path, n_classes=10, members=self.members, splits={"val": self.y}, exist_ok=True)
        with Recorder.open(self.path).member(self.member) as writer, torch.no_grad():
            pl_module.eval()
            writer.log("val", trainer.current_epoch + 1, pl_module(self.x), index=np.arange(len(self.y)), logits=True)
            writer.end_epoch(trainer.current_epoch + 1)
            pl_module.train()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--compare", required=True)
    parser.add_argument("--member", type=int, default=0)
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--keep", default="raw")
    args = parser.parse_args()
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    train_x, train_y, val_x, val_y = x[:1200], y[:1200], x[1200:], y[1200:]
    torch.manual_seed(args.member)
    train_loader = DataLoader(TensorDataset(train_x, train_y), batch_size=64, shuffle=True)
    val_loader = DataLoader(TensorDataset(val_x, val_y), batch_size=50, shuffle=True)  # shuffled: rows still land right
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            ConfusionCallback(args.out, member=args.member, members=args.members, dataloaders={"val": val_loader}, keep=args.keep),
            PlainRecorder(args.compare, args.member, args.members, val_x, val_y.numpy()),
        ],
    )
    trainer.fit(Classifier(), train_loader)


if __name__ == "__main__":
    main()
