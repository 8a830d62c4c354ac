"""The view scores: how the members' predictions move under test-time views of a sample (a
horizontal flip, 2-pixel shifts), recorded at the last committed epoch (`confusion train
--views`, or a writer's `log_views`).

For every sample x, with member i's plain prediction y_i(x) at the last epoch and its class
probabilities f_v^i(x) on views v = 1..V:

    view_disagreement(x) = 1/(M V) sum_i sum_v [argmax f_v^i(x) != y_i(x)]       0..1
    view_confusion(x)    = entropy of 1/(M V) sum_i sum_v f_v^i(x), in bits      0..log2 C

No label is read. A run kept `--keep reduced` keeps these two scores of an epoch with views
instead of the views themselves (`confusion.store.signals`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .signalmath import view_statistics
from .store import RunReads

__all__ = ["ViewScores", "view_epoch", "view_scores"]


@dataclass(frozen=True)
class ViewScores:
    """The view scores of every sample of a split.

    Attributes
    ----------
    view_disagreement : ndarray of float64, shape (samples,)
        Share of (member, view) pairs whose predicted class is not the member's plain one.
    view_confusion : ndarray of float64, shape (samples,)
        Entropy in bits of the average over members and views.
    epoch : int
        The training epoch the views were recorded at.
    """

    view_disagreement: np.ndarray
    view_confusion: np.ndarray
    epoch: int


def view_epoch(store: RunReads, split: str) -> int | None:
    """The last committed epoch where every member kept views of `split`, or None.

    Parameters
    ----------
    store : RunReads
        The run.
    split : str
        The split.

    Returns
    -------
    int or None
        The epoch, only if it is the run's last committed one.
    """
    epochs = store.signal_epochs(split, "views") if store.layout.keeps_signals else store.view_epochs([split])
    return epochs[-1] if epochs and store.recorded_epochs and epochs[-1] == store.recorded_epochs[-1] else None


def view_scores(store: RunReads, split: str) -> ViewScores:
    """The view scores of every sample of `split`.

    Parameters
    ----------
    store : RunReads
        The run, with views of `split` at its last committed epoch.
    split : str
        The split.

    Returns
    -------
    ViewScores
        The scores.

    Raises
    ------
    InputError
        Where the run keeps no views of `split` at its last epoch.
    """
    epoch = view_epoch(store, split)
    if epoch is None:
        raise InputError(
            f"{store.path} keeps no test-time views of split {split!r} at its last epoch; the view scores need them "
            "(record with `confusion train --views auto` on images, or a writer's log_views)"
        )
    if store.layout.keeps_signals:  # derived as the epoch was committed (`confusion.store.signals`)
        kept = store.signals(split, "views", epoch)
        return ViewScores(kept["view_disagreement"], kept["view_confusion"], epoch)
    plain = store.final_predictions(split).argmax  # (members, samples)
    views = [store.views(split, member, epoch) for member in range(store.n_members)]
    disagreement, confusion = view_statistics(views, plain)
    return ViewScores(disagreement, confusion, epoch)
