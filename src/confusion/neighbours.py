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
from .store import RunReads
from .store.format import CACHE_DIR

__all__ = ["BLOCK_BYTES", "K", "Neighbourhood", "check_k", "neighbourhood", "neighbourhood_epoch"]

K = 15
BLOCK_BYTES = 128 * 2**20  # distances of one block of queries to every training sample
REFERENCE = "train"


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
        raise InputError(
            f"{store.path} keeps no embeddings of split {split!r} and a train split; the neighbourhood scores need them "
            "(record with `confusion train --embeddings last`, or a writer's log_embeddings)"
        )
    path = _cache_path(store, split, k, epoch) if cache else None
    cached = _read_cache(path)
    if cached is not None:
        return Neighbourhood(cached["knn_disagreement"], cached["untrust"], epoch, k)
    reference_labels = store.labels(REFERENCE)
    labelled = np.flatnonzero(reference_labels >= 0)
    if len(labelled) <= k:
        raise InputError(f"the neighbourhood scores need more than k = {k} labelled training samples; {store.path} has {len(labelled)}")
    predicted = store.final_predictions(split).ensemble_argmax
    n = store.n_samples(split)
    disagreement, untrust = np.zeros(n), np.zeros(n)
    for member in range(store.n_members):
        reference = np.asarray(store.embeddings(REFERENCE, member, epoch)[labelled], dtype=np.float32)
        queries = store.embeddings(split, member, epoch)
        own = _own_positions(labelled, n) if split == REFERENCE else None
        d, u = _member_scores(reference, reference_labels[labelled], queries, predicted, k, own, progress)
        disagreement += d / store.n_members
        untrust += u / store.n_members
    if path is not None:
        _write_cache(path, disagreement, untrust)
    return Neighbourhood(disagreement, untrust, epoch, k)


def _own_positions(labelled: np.ndarray, n: int) -> np.ndarray:
    """For each train sample, its row among the labelled reference rows (-1: not one of them)."""
    own = np.full(n, -1, dtype=np.int64)
    own[labelled] = np.arange(len(labelled))
    return own


def _member_scores(
    reference: np.ndarray,
    labels: np.ndarray,
    queries: np.ndarray,
    predicted: np.ndarray,
    k: int,
    own: np.ndarray | None,
    progress: Callable[[int], None] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """One member's knn_disagreement and untrust of every query."""
    from sklearn.neighbors import NearestNeighbors

    extra = 1 if own is not None else 0  # a training sample is found as its own nearest neighbour
    search = NearestNeighbors(n_neighbors=k + extra, algorithm="brute").fit(reference)
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    per_class = {c: NearestNeighbors(n_neighbors=min(1 + extra, len(rows)), algorithm="brute").fit(reference[rows]) for c, rows in by_class.items()}
    n = len(queries)
    block = max(1, BLOCK_BYTES // (4 * max(1, len(reference))))
    disagreement, untrust = np.empty(n), np.empty(n)
    for start in range(0, n, block):
        stop = min(n, start + block)
        rows = np.asarray(queries[start:stop], dtype=np.float32)
        distances, index = search.kneighbors(rows)
        if own is not None:
            distances, index = _without_self(distances, index, own[start:stop], k)
        guess = predicted[start:stop]
        other = labels[index] != guess[:, None]
        disagreement[start:stop] = other.mean(axis=1)
        d_other = np.where(other, distances, np.inf).min(axis=1)
        d_other = np.where(np.isfinite(d_other), d_other, distances[:, -1])
        d_pred = np.full(stop - start, np.inf)
        for c in np.unique(guess):
            at = np.flatnonzero(guess == c)
            if c not in per_class:
                continue  # no training sample of the predicted class: untrust 1
            found, which = per_class[c].kneighbors(rows[at])
            if own is not None:  # skip the sample itself where it is the nearest of its class
                is_self = by_class[c][which] == own[start:stop][at, None]
                found = np.where(is_self, np.inf, found)
            d_pred[at] = found.min(axis=1)
        untrust[start:stop] = _ratio(d_pred, d_other)
        if progress is not None:
            progress(stop - start)
    return disagreement, untrust


def _ratio(d_pred: np.ndarray, d_other: np.ndarray) -> np.ndarray:
    """d_pred / (d_pred + d_other): 1 where the predicted class has no training sample, 0.5 where
    both distances are 0."""
    total = d_pred + d_other
    finite = np.isfinite(d_pred) & (total > 0)
    out = np.where(np.isinf(d_pred), 1.0, 0.5)
    out[finite] = d_pred[finite] / total[finite]
    return out


def _without_self(distances: np.ndarray, index: np.ndarray, own: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest other than each query itself (found among k + 1)."""
    keep = index != own[:, None]
    keep[keep.sum(axis=1) > k, -1] = False  # not found among them: drop the farthest
    return distances[keep].reshape(len(index), k), index[keep].reshape(len(index), k)


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
