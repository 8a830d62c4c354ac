"""confusion: find the samples a model finds hard, without labels.

Train a cheap ensemble of small models, measure their confusion (the entropy of the
ensemble-averaged prediction, averaged over epochs), and turn it into hard benchmark sets and
into mitigations that use confusion bands as groups.

The scoring side (`confusion.scores`, `confusion.store`, `confusion.analyses`,
`confusion.hardset`) needs numpy and scipy only; training and evaluation need PyTorch.
"""

__version__ = "0.1.0"

import sys as _sys  # noqa: E402


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
from .recorder import Recorder  # noqa: E402
from .scores import Scores, confusion_score, confusion_scores, entropy, softmax  # noqa: E402

__all__ = [
    "ConfusionError",
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
