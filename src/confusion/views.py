"""The view scores: how the members' predictions move under test-time views of a sample (a
horizontal flip, 2-pixel shifts), recorded at the last committed epoch (`confusion train
--views`, or a writer's `log_views`).

For every sample x, with member i's plain prediction y_i(x) at the last epoch and its class
probabilities f_v^i(x) on views v = 1..V:

    view_disagreement(x) = 1/(M V) sum_i sum_v [argmax f_v^i(x) != y_i(x)]       0..1
    view_confusion(x)    = entropy of 1/(M V) sum_i sum_v f_v^i(x), in bits      0..log2 C

No label is read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .scores import entropy
from .store import RunReads

__all__ = ["ViewScores", "view_epoch", "view_scores"]

BLOCK = 65_536  # samples read at a time


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
    epochs = store.view_epochs([split])
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
    plain = store.final_predictions(split).argmax  # (members, samples)
    n, members = store.n_samples(split), store.n_members
    disagreement, average = np.zeros(n), None
    for member in range(members):
        probs = store.views(split, member, epoch)
        if average is None:
            average = np.zeros((n, probs.shape[2]))
        for start in range(0, n, BLOCK):
            block = np.asarray(probs[start : start + BLOCK], dtype=np.float64)
            disagreement[start : start + BLOCK] += (block.argmax(axis=2) != plain[member, start : start + BLOCK, None]).mean(axis=1) / members
            average[start : start + BLOCK] += block.mean(axis=1) / members
    assert average is not None
    average /= average.sum(axis=1, keepdims=True)  # float16 rows sum to 1 within rounding
    return ViewScores(disagreement, entropy(average, base=2.0), epoch)
