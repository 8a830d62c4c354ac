"""Scoring a run: confusion scores (eqs. 1-3) of a split read from its run store, the score
table `confusion score` writes, the score cache, and block scheduling (locally or on a Dask
cluster).

The store only reads; this module decides what to read, in which blocks, and where to keep the
result. A raw local run takes the mapped fast path of `confusion.scores.confusion_scores`; a
run kept reduced or as top-k logs, or any run on a cluster, is scored block by block of samples
through its layout's `score_rows`, the same numbers either way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ._files import write_npz_atomic
from .errors import InputError, RunStoreError
from .scores import LN2, InvalidProbabilities, Scores, check_base, confusion_scores
from .store import RunStore
from .store.format import CACHE_DIR, damaged
from .store.layouts import Layout

__all__ = ["SCORE_CACHE_BYTES", "ScoreJob", "score_rows", "score_run", "score_table"]

SCORE_CACHE_BYTES = 256 * 2**20  # scores of a selection are cached when they take at most this
BLOCK_BYTES = 32 * 2**20  # working set of one block of samples


@dataclass(frozen=True)
class ScoreJob:
    """What every block of one scoring needs: the layout, its opened arrays (not paths: a Dask
    worker reads its own rows from them), the members and epoch slots chosen, the base, whether
    the decomposition is wanted, the scoring engine, and where the rows come from (for errors)."""

    layout: Layout
    arrays: dict[str, Any]
    members: list[int] | None
    slots: np.ndarray
    base: float
    decomposition: bool
    engine: str
    where: str


def score_rows(job: ScoreJob, start: int, stop: int) -> list[np.ndarray]:
    """Per-epoch scores of rows start:stop of a split (`Layout.score_rows`).

    Parameters
    ----------
    job : ScoreJob
        What every block of this scoring needs.
    start, stop : int
        The rows.

    Returns
    -------
    list of ndarray
        Each (epochs, rows).
    """
    return job.layout.score_rows(
        job.arrays, job.members, job.slots, start, stop, base=job.base, decomposition=job.decomposition, engine=job.engine, where=job.where
    )


def score_run(
    store: RunStore,
    split: str,
    *,
    base: float | str = 2.0,
    members: Sequence[int] | slice | None = None,
    epochs: Sequence[int] | slice | None = None,
    engine: str = "auto",
    progress: Callable[[int], Any] | None = None,
    cache: bool = True,
    decomposition: bool = True,
    client: Any = None,
) -> Scores:
    """Confusion scores of one split of a run from its committed epochs.

    Parameters
    ----------
    store : RunStore
        The run, opened.
    split : str
        One of its splits.
    base : float or {"2", "e"}
        Logarithm base: 2 for bits (the default), e for nats.
    members : sequence of int or slice, optional
        Member indices, or a slice of them; default all.
    epochs : sequence of int or slice, optional
        The 1-based training epochs to use (each must be committed), or a slice of the
        committed ones (e.g. ``slice(-1, None)`` for the last); default all.
    engine : str
        The scoring engine of `confusion.scores.confusion_scores`.
    progress : callable, optional
        Called with the number of samples each finished block holds.
    cache : bool
        Reuse (and keep) the scores in RUN/cache/, keyed by the selection.
    decomposition : bool
        False when only `confusion` is wanted (faster); a cached full decomposition is used
        for it when there is one.
    client : dask.distributed.Client, optional
        Score on a cluster (`confusion.cluster`), one task per block.

    Returns
    -------
    Scores
        In `base`; `Scores.epochs` are positions in the store's epoch axis and
        `Scores.training_epochs` the training epochs they hold.

    Raises
    ------
    RunStoreError
        When the run has no committed epoch, or its data is damaged.
    InputError
        When an epoch is not committed, or the layout cannot give the selection.
    """
    recorded = store.recorded_epochs
    if not recorded:
        raise RunStoreError(f"{store.path} has no committed epoch yet; nothing to score")
    if epochs is None:
        slots = np.arange(len(recorded))
    elif isinstance(epochs, slice):
        slots = np.arange(len(recorded))[epochs]
    else:
        missing = [int(e) for e in epochs if int(e) not in recorded]
        if missing:
            raise InputError(f"epochs {missing} are not committed in {store.path} (committed: {recorded})")
        slots = np.array([recorded.index(int(e)) for e in epochs], dtype=np.intp)
    base = check_base(base)
    member_list = list(range(store.n_members))[members] if isinstance(members, slice) else None if members is None else [int(m) for m in members]
    scores = _cached_or_computed(store, split, base, members, member_list, slots, engine, progress, cache, decomposition, client)
    return replace(scores, training_epochs=tuple(recorded[s] for s in scores.epochs))


def _cached_or_computed(
    store: RunStore,
    split: str,
    base: float,
    members: Any,
    member_list: list[int] | None,
    slots: np.ndarray,
    engine: str,
    progress: Callable[[int], Any] | None,
    cache: bool,
    decomposition: bool,
    client: Any,
) -> Scores:
    if not store.layout.cached:
        return _scores_by_block(store, split, base, member_list, slots, decomposition, engine, progress, client)
    keys = [_score_cache(store, split, base, member_list, slots, True)] if cache else []
    if cache and not decomposition:
        keys.append(_score_cache(store, split, base, member_list, slots, False))
    for key in [k for k in keys if k is not None]:
        cached = _read_cached_scores(key, store.recorded_epochs)
        if cached is not None:
            if progress is not None:
                progress(store.n_samples(split))
            return cached
    if not store.layout.holds_probs or client is not None:
        scores = _scores_by_block(store, split, base, member_list, slots, decomposition, engine, progress, client)
    else:
        try:
            scores = confusion_scores(
                store.probs_reader(split), base=base, members=members, epochs=slots, engine=engine, progress=progress, decomposition=decomposition
            )
        except InvalidProbabilities as error:
            raise damaged(f"{store.path}: split {split!r}", error) from None
    if keys and keys[-1] is not None:
        _write_cached_scores(keys[-1], scores, store.recorded_epochs)
    return scores


def _scores_by_block(
    store: RunStore,
    split: str,
    base: float,
    members: list[int] | None,
    slots: np.ndarray,
    decomposition: bool,
    engine: str,
    progress: Callable[[int], Any] | None,
    client: Any,
) -> Scores:
    """Scores computed block by block of samples by `score_rows`, in this process or, with a
    dask.distributed `client`, one task per block on the cluster (each task gets the opened
    arrays, not paths, and reads its own rows); the same numbers either way."""
    n = store.n_samples(split)
    arrays, members, per_sample, chunk = store.layout.score_arrays(store, split, members, slots)
    block = max(1, BLOCK_BYTES // per_sample)
    block = max(chunk, block // chunk * chunk)  # whole chunks: each is read once, by one task
    if client is not None:
        block = max(chunk, min(block, -(-n // (4 * _cluster_threads(client))) // chunk * chunk or chunk))  # work for every worker
    job = ScoreJob(store.layout, arrays, members, np.asarray(slots), base, decomposition, engine, f"{store.path}: split {split!r}")
    ranges = [(start, min(n, start + block)) for start in range(0, n, block)]
    outputs = [np.empty((len(slots), n)) for _ in range(store.layout.n_parts)]

    def place(start: int, stop: int, parts: list[np.ndarray]) -> None:
        for out, part in zip(outputs, parts):
            out[:, start:stop] = part
        if progress is not None:
            progress(stop - start)

    if client is None:
        for start, stop in ranges:
            place(start, stop, score_rows(job, start, stop))
    else:
        from distributed import as_completed

        from .cluster import task_result

        # The opened arrays go to every worker once. hash=False: a key of its own per call; the
        # same job scattered again under its content key could be released by the last call
        # while this one still needs it ("lost dependencies").
        shared = client.scatter(job, broadcast=True, hash=False)
        futures = {client.submit(score_rows, shared, start, stop, pure=False): (start, stop) for start, stop in ranges}
        for future in as_completed(futures):
            place(*futures[future], task_result(future, f"{job.where}: a scoring task failed on the Dask cluster"))
    if store.layout.scores_in_nats and base == 2.0:
        for out in outputs:
            out /= LN2
    chosen = tuple(range(store.n_members)) if members is None else tuple(int(m) for m in members)
    bounded = store.layout.bounded
    return Scores(
        per_epoch=outputs[0],
        per_epoch_expected=outputs[1],
        n_classes=store.n_classes,
        base=base,
        members=chosen,
        epochs=tuple(int(s) for s in slots),
        per_epoch_low=outputs[2] if bounded else None,
        per_epoch_high=outputs[3] if bounded else None,
    )


def _score_cache(store: RunStore, split: str, base: float, members: list[int] | None, slots: np.ndarray, decomposition: bool) -> Path | None:
    """Where scores of this selection are cached (RUN/cache/), or None when too large to keep.

    Committed epochs never change, so scores keyed by (split, base, members, epochs) and
    checked against the committed epochs they were computed from are reused by every
    consumer (hard sets, mitigation, the report) instead of being recomputed.
    """
    n = store.n_samples(split)
    if 2 * len(slots) * n * 8 > SCORE_CACHE_BYTES:
        return None
    # Keyed by the data's own stamp (its group's), not only run.json's: a split replaced by a
    # swap that a crash cut short never reads the old split's cached scores.
    written = store.split_written(split)
    key = json.dumps([store.meta.get("created"), split, n, written, base, members, [int(s) for s in slots], decomposition])
    return store.path / CACHE_DIR / f"scores-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"


def score_table(
    store: RunStore, splits: Sequence[str] | None = None, *, base: float | str = 2.0, progress: Callable[[int], Any] | None = None, client: Any = None
) -> Any:
    """One row per sample of every split (in split, then sample order), as `confusion score` writes.

    Parameters
    ----------
    store : RunStore
        The run, opened.
    splits : sequence of str, optional
        The splits, in order; default every split.
    base : float or {"2", "e"}
        2 for bits (the default), e for nats.
    progress : callable, optional
        Called with the number of samples each finished block holds.
    client : dask.distributed.Client, optional
        Score on a cluster.

    Returns
    -------
    pandas.DataFrame
        Columns sample, split, label (-1 unknown, when any is known), confusion,
        confusion_normalized, expected_entropy, disagreement and unit.

    Examples
    --------
    >>> from confusion.store import RunStore
    >>> from confusion.runscores import score_table
    >>> table = score_table(RunStore.open("runs/small"))  # doctest: +SKIP
    """
    import pandas as pd

    frames = []
    for split in splits or store.splits:
        scores = score_run(store, split, base=base, progress=progress, client=client)
        labels = store.labels(split)
        frame = scores.to_frame(store.sample_ids(split), labels if (labels >= 0).any() else None, split)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    if "label" in table:
        table["label"] = table["label"].fillna(-1).astype("int64")
    return table


def _cluster_threads(client: Any) -> int:
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:
        return 1


def _read_cached_scores(path: Path, recorded_epochs: list[int]) -> Scores | None:
    try:
        with np.load(path, allow_pickle=False) as cached:
            if cached["recorded_epochs"].tolist() != list(recorded_epochs):
                return None
            return Scores(
                per_epoch=cached["per_epoch"],
                per_epoch_expected=cached["per_epoch_expected"],
                n_classes=int(cached["n_classes"]),
                base=float(cached["base"]),
                members=tuple(cached["members"].tolist()),
                epochs=tuple(cached["epochs"].tolist()),
            )
    except (OSError, KeyError, ValueError):  # absent, or damaged: recompute
        return None


def _write_cached_scores(path: Path, scores: Scores, recorded_epochs: list[int]) -> None:
    """Best effort: a run directory we may not write into is scored again next time."""
    with contextlib.suppress(OSError):
        write_npz_atomic(
            path,
            per_epoch=scores.per_epoch,
            per_epoch_expected=scores.per_epoch_expected,
            n_classes=scores.n_classes,
            base=scores.base,
            members=np.asarray(scores.members, dtype=np.int64),
            epochs=np.asarray(scores.epochs, dtype=np.int64),
            recorded_epochs=np.asarray(recorded_epochs, dtype=np.int64),
        )
