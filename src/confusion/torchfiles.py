"""The one reader of `.pt` files a user hands us (checkpoints, weights, predictions): always
``torch.load(weights_only=True)``, so an untrusted file cannot run code. The only module of the
scoring side's neighbours that imports torch, inside the function that reads the file."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["load_weights_only"]


def load_weights_only(path: str | os.PathLike) -> Any:
    """torch.load(path, weights_only=True) onto the CPU, torch's own warnings silenced (they would
    precede the caller's one-line error). Raises whatever torch raises for a file it refuses."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)
