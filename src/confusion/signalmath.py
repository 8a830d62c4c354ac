"""The arithmetic of the scores of what a run keeps beside its predictions: the neighbourhood
scores of one member's embeddings and the view scores of the members' test-time views.

Plain arrays in, arrays out, free of the run store: `confusion.neighbours` and `confusion.views`
read a run and call these, and a run kept `--keep reduced` calls them as it commits an epoch,
keeping the statistics instead of the embeddings and views they read (`confusion.store.signals`).
The definitions are in those two modules' docstrings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .scores import entropy

__all__ = ["BLOCK_BYTES", "K", "REFERENCE", "ensemble_neighbourhood", "member_neighbourhood", "own_positions", "view_statistics"]

K = 15  # neighbours of the neighbourhood scores, by default
REFERENCE = "train"  # the split whose samples are the neighbours
BLOCK_BYTES = 128 * 2**20  # distances of one block of queries to every training sample
VIEW_BLOCK = 65_536  # samples of the views read at a time


def own_positions(labelled: np.ndarray, n: int) -> np.ndarray:
    """For each train sample, its row among the labelled reference rows.

    Parameters
    ----------
    labelled : ndarray of int
        The positions of the labelled train samples (the reference rows, in order).
    n : int
        Samples of the train split.

    Returns
    -------
    ndarray of int64, shape (n,)
        The reference row of each train sample; -1 where it is not one of them.
    """
    own = np.full(n, -1, dtype=np.int64)
    own[labelled] = np.arange(len(labelled))
    return own


def ensemble_neighbourhood(
    embeddings: Callable[[str, int], np.ndarray],
    labels: np.ndarray,
    split: str,
    predicted: np.ndarray,
    members: int,
    k: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The member averages of knn_disagreement and untrust of every sample of `split`.

    Parameters
    ----------
    embeddings : callable
        ``embeddings(split, member)``: that member's embeddings of that split, (samples, dims).
    labels : ndarray of int, shape (training samples,)
        The train split's labels, -1 where unknown (those samples are no one's neighbour).
    split : str
        The scored split; where it is the train split, no sample is its own neighbour.
    predicted : ndarray of int, shape (samples,)
        The ensemble's predicted class of each scored sample.
    members : int
        M.
    k : int
        Neighbours.
    progress : callable, optional
        Called with the number of samples of each block searched (once per member).

    Returns
    -------
    tuple of ndarray of float64, shape (samples,)
        (knn_disagreement, untrust).
    """
    labelled = np.flatnonzero(labels >= 0)
    own = own_positions(labelled, len(labels)) if split == REFERENCE else None
    disagreement, untrust = np.zeros(len(predicted)), np.zeros(len(predicted))
    for member in range(members):
        reference = np.asarray(embeddings(REFERENCE, member)[labelled], dtype=np.float32)
        d, u = member_neighbourhood(reference, labels[labelled], embeddings(split, member), predicted, k, own, progress)
        disagreement += d / members
        untrust += u / members
    return disagreement, untrust


def member_neighbourhood(
    reference: np.ndarray,
    labels: np.ndarray,
    queries: np.ndarray,
    predicted: np.ndarray,
    k: int,
    own: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One member's knn_disagreement and untrust of every query, block by block of queries.

    Parameters
    ----------
    reference : ndarray of float32, shape (references, dims)
        The member's embeddings of the labelled training samples.
    labels : ndarray of int, shape (references,)
        Their training labels.
    queries : ndarray, shape (samples, dims)
        The member's embeddings of the scored samples (a memory map is read block by block).
    predicted : ndarray of int, shape (samples,)
        The ensemble's predicted class of each scored sample.
    k : int
        Neighbours.
    own : ndarray of int, optional
        Where the queries are the train split: each query's own reference row (`own_positions`),
        so no training sample is its own neighbour.
    progress : callable, optional
        Called with the number of samples of each block searched.

    Returns
    -------
    tuple of ndarray of float64, shape (samples,)
        (knn_disagreement, untrust), each 0..1, higher = harder.
    """
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


def view_statistics(views: Sequence[np.ndarray], plain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """view_disagreement and view_confusion of every sample.

    Parameters
    ----------
    views : sequence of ndarray, shape (samples, views, classes)
        Per member, its class probabilities on each test-time view (a memory map is read block
        by block).
    plain : ndarray of int, shape (members, samples)
        Each member's predicted class on the plain sample.

    Returns
    -------
    tuple of ndarray of float64, shape (samples,)
        (view_disagreement in 0..1, view_confusion in bits, 0..log2 C).
    """
    members, n = plain.shape
    disagreement, average = np.zeros(n), None
    for member, probs in enumerate(views):
        if average is None:
            average = np.zeros((n, probs.shape[2]))
        for start in range(0, n, VIEW_BLOCK):
            block = np.asarray(probs[start : start + VIEW_BLOCK], dtype=np.float64)
            disagreement[start : start + VIEW_BLOCK] += (block.argmax(axis=2) != plain[member, start : start + VIEW_BLOCK, None]).mean(
                axis=1
            ) / members
            average[start : start + VIEW_BLOCK] += block.mean(axis=1) / members
    assert average is not None
    average /= average.sum(axis=1, keepdims=True)  # float16 rows sum to 1 within rounding
    return disagreement, entropy(average, base=2.0)
