"""confusion: find the samples a model finds hard, without labels.

Train a cheap ensemble of small models, measure their confusion (the entropy of the
ensemble-averaged prediction, averaged over epochs), and turn it into hard benchmark sets and
into mitigations that use confusion bands as groups.

The scoring side (`confusion.scores`, `confusion.store`, `confusion.analyses`,
`confusion.hardset`) needs numpy and scipy only; training and evaluation need PyTorch.
"""

__version__ = "0.1.0"

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
