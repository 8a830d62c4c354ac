"""Difficulty scores from one recording: the paper's confusion and what a user would weigh it against.

Every score here is computed from the same run store (members x recorded epochs of class
probabilities), so they compete on equal data. Label-free scores can build a benchmark
without labels; the label-using ones are reference points from the data-pruning and
label-noise literature and are empty (NaN) where a sample's label is unknown.

Each score is a class registered here (`register`): its `ScoreInfo` (range, unit, which
direction is harder, what it costs, where it comes from), what it reads (the ensemble's scores,
member 0's, or the reduced record's fields, block by block of samples) and `compute(block)`.
`SCORES` is the table of their `ScoreInfo`; `difficulty_scores(..., names=)` reads only what the
asked scores need. Adding a score is one class. `hardness(values, name)` orients any of them so
that higher = harder, which is how `analyses.transfer_report` ranks samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import InputError, ParameterError
from ..runscores import score_run
from ..store import RunStore
from . import catalog
from .base import REGISTRY, Block, DifficultyScore, FromRecord, FromScores, LabelScore, ScoreInfo, early_epoch_position, register

__all__ = [
    "BLOCK_BYTES",
    "IN_BITS",
    "LABEL_FREE",
    "REGISTRY",
    "SCORES",
    "WITH_LABELS",
    "Block",
    "DifficultyScore",
    "FromRecord",
    "FromScores",
    "LabelScore",
    "ScoreInfo",
    "catalog",
    "check_label_free",
    "difficulty_scores",
    "early_epoch_position",
    "hardness",
    "label_free_score",
    "register",
]


SCORES: dict[str, ScoreInfo] = {name: score.info for name, score in REGISTRY.items()}
LABEL_FREE = [name for name, info in SCORES.items() if not info.needs_labels]
IN_BITS = [name for name, info in SCORES.items() if info.unit == "bits"]  # on confusion's 0..log2 C scale
WITH_LABELS = [name for name, info in SCORES.items() if info.needs_labels]
BLOCK_BYTES = 64 * 2**20  # float32 working set per block of samples


def hardness(values: np.ndarray, name: str) -> np.ndarray:
    """A score's values oriented so that higher = harder (lower-is-harder scores negated).

    Parameters
    ----------
    values : array-like
        Values of score `name`.
    name : str
        A key of `SCORES`.

    Returns
    -------
    ndarray of float64
        The values, higher = harder.

    Raises
    ------
    InputError
        For an unknown score.
    """
    if name not in SCORES:
        raise InputError(f"unknown difficulty score {name!r}; choose from {', '.join(SCORES)}")
    values = np.asarray(values, dtype=np.float64)
    return -values if SCORES[name].harder == "lower" else values


def check_label_free(name: str) -> None:
    """A score that needs no label, or one line naming the parameter that chose it.

    Parameters
    ----------
    name : str
        A key of `SCORES`.

    Raises
    ------
    ParameterError
        For a score that needs labels, or an unknown one (parameter ``score``).
    """
    if name not in LABEL_FREE:
        raise ParameterError(f"{{score}} must be a label-free score ({', '.join(LABEL_FREE)}), got {name!r}", "score")


def label_free_score(store: RunStore, split: str, name: str = "confusion") -> np.ndarray:
    """One label-free score of every sample of `split`.

    Parameters
    ----------
    store : RunStore
        The run.
    split : str
        The split.
    name : str
        A label-free key of `SCORES`; `confusion` by default.

    Returns
    -------
    ndarray of float64, shape (samples,)
        The score, higher = harder.
    """
    check_label_free(name)
    if name == "confusion":
        return score_run(store, split, decomposition=False).confusion
    return difficulty_scores(store, split, names=[name])[name].to_numpy(np.float64)


def difficulty_scores(store: RunStore, split: str, *, names: Sequence[str] | None = None, progress: Callable[[int], None] | None = None) -> Any:
    """Difficulty scores of every sample of `split`, from the committed epochs.

    Parameters
    ----------
    store : RunStore
        The run.
    split : str
        One of its splits.
    names : sequence of str, optional
        The scores to compute (keys of `SCORES`); default all. Only what they read is read.
    progress : callable, optional
        Called with the number of samples of each block of the reduced record read.

    Returns
    -------
    pandas.DataFrame
        sample, split, label (-1 = unknown), then one column per score in `SCORES` order
        (label-using ones NaN where the label is unknown). Entropies are in bits. Memory is
        bounded by `BLOCK_BYTES`, not by the run.
    """
    import pandas as pd

    chosen = list(SCORES) if names is None else [name for name in SCORES if name in set(names)]
    unknown = [name for name in (names or []) if name not in SCORES]
    if unknown or not chosen:
        raise ParameterError(f"{{names}} must name difficulty scores ({', '.join(SCORES)}), got {unknown or list(names or [])}", "names")
    epochs = store.recorded_epochs
    if not epochs:
        raise InputError(f"{store.path} has no committed epoch yet; nothing to score")
    labels = store.labels(split)
    epoch_array = np.asarray(epochs)
    columns: dict[str, np.ndarray] = {}
    for reads, members in (("ensemble", None), ("member", [0])):
        wanted = [score for name in chosen if isinstance(score := REGISTRY[name], FromScores) and score.reads == reads]
        if wanted:
            scores = score_run(store, split, members=members)
            columns.update({score.info.name: np.asarray(score.compute(scores), dtype=np.float64) for score in wanted})
    streamed = [score for name in chosen if isinstance(score := REGISTRY[name], FromRecord)]
    if streamed:
        columns.update(_streamed(store, split, streamed, labels, epoch_array, progress))
    table = pd.DataFrame({"sample": store.sample_ids(split), "split": split, "label": labels})
    for name in chosen:
        table[name] = columns[name]
    return table


def _streamed(
    store: RunStore, split: str, scores: list[FromRecord], labels: np.ndarray, epochs: np.ndarray, progress: Callable[[int], None] | None
) -> dict[str, np.ndarray]:
    """The scores that read the reduced record, block by block of samples.

    Written against the reduced record (`RunStore.record_blocks`: computed from the raw
    probabilities of a raw run, read from a reduced one), so both give the same numbers.
    """
    out = {score.info.name: np.full(store.n_samples(split), np.nan) for score in scores}
    fields = sorted({field for score in scores for field in score.fields})
    for start, stop, record in store.record_blocks(split, BLOCK_BYTES, fields):
        block = Block(record, labels[start:stop], epochs)
        for score in scores:
            out[score.info.name][start:stop] = score.values(block)
        if progress is not None:
            progress(stop - start)
    return out
