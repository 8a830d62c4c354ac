"""Callbacks that record an ensemble member from a training framework's own loop.

- `confusion.integrations.lightning.ConfusionCallback`: PyTorch Lightning (also under DDP).
- `confusion.integrations.transformers.ConfusionCallback`: the Hugging Face `Trainer`.

Both write through `confusion.Recorder`, so the run store's commit rule holds for them too.
"""

__all__ = []
