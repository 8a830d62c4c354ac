"""PyTorch Lightning: 2 members of a small MLP on scikit-learn's digits, recorded by a callback.

Each member is its own `Trainer.fit` (here one after the other; on a cluster, one job each).
The callback runs an eval pass over the validation set after every training epoch; the run
store commits an epoch once both members have ended it. Scores go to runs/digits-lightning.csv.
"""

import logging
import subprocess
import sys
import warnings

import pytorch_lightning as pl
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from confusion.integrations.lightning import ConfusionCallback

# Lightning's banners (accelerators, tips, the model summary) and a deprecation inside it: quiet.
for logger in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
    logging.getLogger(logger).setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*LeafSpec.*")

RUN, MEMBERS = "runs/digits-lightning", 2


class Classifier(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


digits = load_digits()
x, y = torch.tensor(digits.data / 16.0, dtype=torch.float32), torch.tensor(digits.target)
train = DataLoader(TensorDataset(x[:1200], y[:1200]), batch_size=64, shuffle=True)
val = DataLoader(TensorDataset(x[1200:], y[1200:]), batch_size=100)

for member in range(MEMBERS):
    pl.seed_everything(member, verbose=False)
    trainer = pl.Trainer(
        max_epochs=5,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ConfusionCallback(RUN, member=member, members=MEMBERS, dataloaders={"val": val})],
    )
    trainer.fit(Classifier(), train)

subprocess.run([sys.executable, "-m", "confusion.cli", "score", RUN, "--out", f"{RUN}.csv"], check=True)
