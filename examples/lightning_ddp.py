"""PyTorch Lightning under DDP: one member trained by 2 processes (gloo on the CPU).

Each rank predicts its share of the validation batches after every epoch; rank 0 gathers them
and writes the member's rows, so every epoch is recorded once. Lightning's "ddp" strategy
starts the second process by running this script again.
"""

import logging
import warnings

import pytorch_lightning as pl
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from confusion.integrations.lightning import ConfusionCallback
from confusion.store import RunStore

# Lightning's banners (accelerators, tips, the model summary) and a deprecation inside it: quiet.
for logger in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
    logging.getLogger(logger).setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*LeafSpec.*")

RUN = "runs/digits-ddp"


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


if __name__ == "__main__":
    digits = load_digits()
    x, y = torch.tensor(digits.data / 16.0, dtype=torch.float32), torch.tensor(digits.target)
    train = DataLoader(TensorDataset(x[:1200], y[:1200]), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(x[1200:], y[1200:]), batch_size=100)
    pl.seed_everything(0)
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ConfusionCallback(RUN, member=0, members=1, dataloaders={"val": val})],
    )
    trainer.fit(Classifier(), train)
    if trainer.is_global_zero:
        print(f"committed epochs: {RunStore.open(RUN).recorded_epochs}")
