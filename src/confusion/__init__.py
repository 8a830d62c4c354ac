"""confusion: find the samples a model finds hard, without labels.

Train a cheap ensemble of small models, measure their confusion (the entropy of the
ensemble-averaged prediction, averaged over epochs), and turn it into hard benchmark sets and
into mitigations that use confusion bands as groups.

The scoring side (`confusion.scores`, `confusion.store`, `confusion.analyses`,
`confusion.hardset`) needs numpy and scipy only; training and evaluation need PyTorch.
"""

__version__ = "0.1.0"

import sys as _sys


class _NotInstalled:
    """Keeps a package that was made unimportable with ``sys.modules[name] = None`` unimportable,
    without the None that breaks libraries probing ``sys.modules`` (scipy.stats looks for
    ``sys.modules["torch"].Tensor``). The scoring side never needs torch either way."""

    def __init__(self, names: set[str]):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


_blocked = {name for name in ("torch", "torchvision") if name in _sys.modules and _sys.modules[name] is None}
if _blocked:
    for _name in _blocked:
        del _sys.modules[_name]
    _sys.meta_path.insert(0, _NotInstalled(_blocked))

from .errors import ConfusionError, InputError, RunLockedError, RunStoreError, UnknownNameError  # noqa: E402

# Imported on first use (PEP 562), so `import confusion` is instant: the console script can
# then catch a Ctrl-C that lands while numpy, scipy and zarr are still loading.
_LAZY = {
    "IndexedDataset": "recorder",
    "Recorder": "recorder",
    "Scores": "scores",
    "confusion_score": "scores",
    "confusion_scores": "scores",
    "entropy": "scores",
    "softmax": "scores",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'confusion' has no attribute {name!r}")


__all__ = [
    "ConfusionError",
    "IndexedDataset",
    "Recorder",
    "InputError",
    "RunLockedError",
    "RunStoreError",
    "UnknownNameError",
    "Scores",
    "confusion_score",
    "confusion_scores",
    "entropy",
    "softmax",
]
