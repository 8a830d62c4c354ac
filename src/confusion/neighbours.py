"""The neighbourhood scores: where a sample sits among the training samples, in each member's own
embedding space (`confusion.store.embeddings`).

For every member, at the last committed epoch whose embeddings the run keeps, and for every
sample x of the scored split, with the ensemble's final prediction y_hat(x) (the arg-max of the
members' average at the last epoch) and the k nearest training samples (Euclidean, on the
member's 64 principal axes; a training sample is never its own neighbour):

    knn_disagreement(x) = share of the k neighbours whose training label is not y_hat(x)
    untrust(x)          = d_pred / (d_pred + d_other)

d_pred is the distance to the nearest training sample labelled y_hat(x) and d_other to the
nearest one labelled otherwise (among the k; the k-th neighbour's distance where all k agree,
which only makes untrust smaller). Both are the member average, in 0..1, higher = harder.
untrust is the trust score of Jiang et al. (2018), turned into a 0..1 hardness. Only training
labels are read, never a scored sample's: the scores are label-free for every split but train,
where a sample's own label is excluded with the sample. Nearest neighbours are scikit-learn's
exact brute-force search, block by block of queries, so memory stays bounded by `BLOCK_BYTES`.

A run kept `--keep reduced` keeps these scores (at k = `K`) instead of the embeddings: they are
computed as each epoch with embeddings is committed (`confusion.store.signals`), with y_hat the
ensemble's arg-max at that epoch. That is the final prediction above wherever the embeddings are
of the last epoch (the trainer's default, `--embeddings last`), so the scores are the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._files import write_npz_atomic
from .errors import InputError, ParameterError
from .signalmath import BLOCK_BYTES, REFERENCE, K, ensemble_neighbourhood
from .store import RunReads
from .store.format import CACHE_DIR

__all__ = ["BLOCK_BYTES", "K", "Neighbourhood", "check_k", "check_kept_k", "neighbourhood", "neighbourhood_epoch"]


@dataclass(frozen=True)
class Neighbourhood:
    """The neighbourhood scores of every sample of a split, member averages.

    Attributes
    ----------
    knn_disagreement : ndarray of float64, shape (samples,)
        Share of the k nearest training samples labelled otherwise than the ensemble predicts.
    untrust : ndarray of float64, shape (samples,)
        d_pred / (d_pred + d_other), 0..1.
    epoch : int
        The training epoch whose embeddings were read.
    k : int
        Neighbours.
    """

    knn_disagreement: np.ndarray
    untrust: np.ndarray
    epoch: int
    k: int


def check_k(k: int) -> int:
    """A number of neighbours, checked.

    Parameters
    ----------
    k : int
        Neighbours.

    Returns
    -------
    int
        `k`.

    Raises
    ------
    ParameterError
        Unless 1 <= k <= 1000 (parameter ``k``).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= 1000:
        raise ParameterError(f"{{k}} must be a whole number of neighbours from 1 to 1000, got {k!r}", "k")
    return int(k)


def check_kept_k(store: RunReads, k: int) -> None:
    """Refuse, before any work, a k other than the one a run kept `--keep reduced` kept its
    neighbourhood scores at (it keeps the scores, not the embeddings).

    Parameters
    ----------
    store : RunReads
        The run.
    k : int
        Neighbours asked for.

    Raises
    ------
    InputError
        Naming the kept k.
    """
    if store.layout.keeps_signals:
        for split in store.splits:
            epoch = neighbourhood_epoch(store, split)
            if epoch is not None:
                _kept(store, split, k, epoch)
                return


def neighbourhood_epoch(store: RunReads, split: str) -> int | None:
    """The epoch the neighbourhood scores of `split` read: the last committed one whose embeddings
    every member kept for `split` and for the train split; None where there is none.

    Parameters
    ----------
    store : RunReads
        The run.
    split : str
        The scored split.

    Returns
    -------
    int or None
        A training epoch.
    """
    if store.layout.keeps_signals:
        epochs = store.signal_epochs(split, "neighbours")
        return epochs[-1] if epochs else None
    if REFERENCE not in store.splits:
        return None
    epochs = store.embedding_epochs(sorted({split, REFERENCE}))
    return epochs[-1] if epochs else None


def neighbourhood(store: RunReads, split: str, *, k: int = K, cache: bool = True, progress: Callable[[int], None] | None = None) -> Neighbourhood:
    """The neighbourhood scores of every sample of `split`.

    Parameters
    ----------
    store : RunReads
        The run (a `RunStore`), with embeddings (`confusion train --embeddings last`, or a
        writer's `log_embeddings`) and a labelled train split.
    split : str
        The split to score.
    k : int
        Neighbours, 1..1000.
    cache : bool
        Reuse (and keep) the result in RUN/cache/, keyed by split, k and epoch.
    progress : callable, optional
        Called with the number of samples of each block searched (once per member).

    Returns
    -------
    Neighbourhood
        The scores and the epoch they read.

    Raises
    ------
    InputError
        Where the run keeps no embeddings of `split` and train, or train has no label.
    """
    k = check_k(k)
    epoch = neighbourhood_epoch(store, split)
    if epoch is None:
        kept = ", nor their neighbourhood scores (--keep reduced)" if store.layout.keeps_signals else ""
        raise InputError(
            f"{store.path} keeps no embeddings of split {split!r} and a train split{kept}; the neighbourhood scores need them "
            "(record with `confusion train --embeddings last`, or a writer's log_embeddings)"
        )
    if store.layout.keeps_signals:
        return _kept(store, split, k, epoch)
    path = _cache_path(store, split, k, epoch) if cache else None
    cached = _read_cache(path)
    if cached is not None:
        return Neighbourhood(cached["knn_disagreement"], cached["untrust"], epoch, k)
    reference_labels = store.labels(REFERENCE)
    labelled = np.flatnonzero(reference_labels >= 0)
    if len(labelled) <= k:
        raise InputError(f"the neighbourhood scores need more than k = {k} labelled training samples; {store.path} has {len(labelled)}")
    predicted = store.final_predictions(split).ensemble_argmax
    disagreement, untrust = ensemble_neighbourhood(
        lambda name, member: store.embeddings(name, member, epoch), reference_labels, split, predicted, store.n_members, k, progress
    )
    if path is not None:
        _write_cache(path, disagreement, untrust)
    return Neighbourhood(disagreement, untrust, epoch, k)


def _kept(store: RunReads, split: str, k: int, epoch: int) -> Neighbourhood:
    """The scores a run kept `--keep reduced` derived when it committed `epoch`."""
    kept = store.signals(split, "neighbours", epoch)
    if int(kept["k"]) != k:
        raise InputError(
            f"{store.path} was recorded with --keep reduced, which keeps the neighbourhood scores at k = {int(kept['k'])} "
            f"instead of the embeddings; k = {k} needs them (record with --keep raw)"
        )
    return Neighbourhood(kept["knn_disagreement"], kept["untrust"], epoch, k)


def _cache_path(store: RunReads, split: str, k: int, epoch: int) -> Path:
    key = json.dumps([store.meta.get("created"), split, store.n_samples(split), store.split_written(split), k, epoch, store.recorded_epochs[-1]])
    return store.path / CACHE_DIR / f"neighbours-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"


def _read_cache(path: Path | None) -> dict[str, np.ndarray] | None:
    if path is None:
        return None
    try:
        with np.load(path, allow_pickle=False) as cached:
            return {name: cached[name] for name in ("knn_disagreement", "untrust")}
    except (OSError, KeyError, ValueError):  # absent, or damaged: compute again
        return None


def _write_cache(path: Path, disagreement: np.ndarray, untrust: np.ndarray) -> None:
    """Best effort: a run directory we may not write into is searched again next time."""
    with contextlib.suppress(OSError):
        write_npz_atomic(path, knn_disagreement=disagreement, untrust=untrust)
