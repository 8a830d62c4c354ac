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

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..combined import FOLDS, CombinedFit, check_folds, fit_combined
from ..errors import InputError, ParameterError
from ..neighbours import K, check_k, neighbourhood, neighbourhood_epoch
from ..runscores import score_run
from ..store import RunStore
from ..views import view_epoch, view_scores
from . import catalog
from .base import (
    REGISTRY,
    Block,
    DifficultyScore,
    FromFit,
    FromKept,
    FromNeighbourhood,
    FromRecord,
    FromScores,
    FromViews,
    LabelScore,
    ScoreInfo,
    early_epoch_position,
    register,
)

__all__ = [
    "BLOCK_BYTES",
    "COMBINED_BASE",
    "IN_BITS",
    "LABEL_FREE",
    "NEIGHBOURHOOD",
    "VIEW_SCORES",
    "REGISTRY",
    "SCORES",
    "WITH_LABELS",
    "Block",
    "DifficultyScore",
    "FromFit",
    "FromNeighbourhood",
    "FromRecord",
    "FromViews",
    "FromScores",
    "LabelScore",
    "ScoreInfo",
    "catalog",
    "check_label_free",
    "combined_features",
    "combined_values",
    "difficulty_scores",
    "early_epoch_position",
    "fit_combined_run",
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


def difficulty_scores(
    store: RunStore, split: str, *, names: Sequence[str] | None = None, k: int = K, progress: Callable[[int], None] | None = None
) -> Any:
    """Difficulty scores of every sample of `split`, from the committed epochs.

    Parameters
    ----------
    store : RunStore
        The run.
    split : str
        One of its splits.
    names : sequence of str, optional
        The scores to compute (keys of `SCORES`); default all. Only what they read is read.
        Named, a score the run cannot give (the neighbourhood scores without embeddings,
        `combined` without a labelled calibration split) is an error; by default its column
        is NaN and `table.attrs["notes"]` says why.
    k : int
        Neighbours of the neighbourhood scores.
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
    notes: list[str] = []
    for reads, members in (("ensemble", None), ("member", [0])):
        wanted = [score for name in chosen if isinstance(score := REGISTRY[name], FromScores) and score.reads == reads]
        if wanted:
            scores = score_run(store, split, members=members)
            columns.update({score.info.name: np.asarray(score.compute(scores), dtype=np.float64) for score in wanted})
    streamed = [score for name in chosen if isinstance(score := REGISTRY[name], FromRecord)]
    if streamed:
        columns.update(_streamed(store, split, streamed, labels, epoch_array, progress))
    kept_signals: tuple[tuple[type[FromKept], Callable[[RunStore, str], int | None], Callable[[], Any], str], ...] = (
        (
            FromNeighbourhood,
            neighbourhood_epoch,
            lambda: neighbourhood(store, split, k=k),
            "the run keeps no embeddings (train with --embeddings last)",
        ),
        (
            FromViews,
            view_epoch,
            lambda: view_scores(store, split),
            "the run keeps no test-time views at its last epoch (train images with --views auto)",
        ),
    )
    for kind, kept_at, read, absent in kept_signals:  # scores of what a run keeps beside its predictions
        reading = [score for name in chosen if isinstance(score := REGISTRY[name], kind)]
        if not reading:
            continue
        if kept_at(store, split) is not None or names is not None:  # asked by name: no such data is an error
            found = read()
            columns.update({score.info.name: np.asarray(score.compute(found), dtype=np.float64) for score in reading})
        else:
            notes.append(f"{', '.join(s.info.name for s in reading)}: empty, {absent}")
            columns.update({score.info.name: np.full(len(labels), np.nan) for score in reading})
    if "combined" in chosen:
        try:
            columns["combined"] = combined_values(store, split, k=k, known=columns)
            notes += few_errors_note(store)
        except InputError as error:
            if names is not None:
                raise
            notes.append(f"combined: empty, {error}")
            columns["combined"] = np.full(len(labels), np.nan)
    table = pd.DataFrame({"sample": store.sample_ids(split), "split": split, "label": labels})
    for name in chosen:
        table[name] = columns[name]
    table.attrs["notes"] = notes
    return table


COMBINED_BASE = ["confusion"]
NEIGHBOURHOOD = [name for name, score in REGISTRY.items() if isinstance(score, FromNeighbourhood)]
VIEW_SCORES = [name for name, score in REGISTRY.items() if isinstance(score, FromViews)]


def combined_features(store: RunStore, calibration: str) -> list[str]:
    """The label-free scores `combined` reads: confusion, knn_disagreement where the run keeps
    embeddings of the calibration split, and view_confusion where it keeps test-time views.

    Only these three: each is a different look at a sample (the members' predictions over
    training, where it sits among the training samples, how its predictions move under views).
    Fitted to the run's own errors with every label-free score, the fit learns this ensemble's
    own confidence (ensemble_msp, last_epoch_entropy) and transfers worse to other models' errors
    than confusion alone (README, "Which difficulty score?": 0.861 against 0.881 on the demo).

    Parameters
    ----------
    store : RunStore
        The run.
    calibration : str
        The calibration split.

    Returns
    -------
    list of str
        Keys of `SCORES`.
    """
    around = ["knn_disagreement"] if neighbourhood_epoch(store, calibration) is not None else []
    return COMBINED_BASE + around + (["view_confusion"] if view_epoch(store, calibration) is not None else [])


def fit_combined_run(
    store: RunStore, *, calibration: str = "val", folds: int = FOLDS, target: str | os.PathLike = "ensemble", k: int = K, save: bool = True
) -> CombinedFit:
    """Fit `combined` on the run's labelled calibration split and keep it in RUN/combined.json.

    Parameters
    ----------
    store : RunStore
        The run.
    calibration : str
        The labelled split it is fitted on (its labels are the only ones it reads).
    folds : int
        Cross-fitting folds, 2..50.
    target : str or path
        "ensemble" (this run's final errors) or the directory of another run holding the same
        calibration samples (by id), whose final ensemble's errors it predicts.
    k : int
        Neighbours of the neighbourhood scores.
    save : bool
        Write RUN/combined.json (best effort where the run is read-only).

    Returns
    -------
    CombinedFit
        The fit.
    """
    folds = check_folds(folds)
    check_k(k)
    if calibration not in store.splits:
        raise ParameterError(f"{{calibration}} must be a split of {store.path} ({', '.join(store.splits)}), got {calibration!r}", "calibration")
    labels = store.labels(calibration)
    labelled = np.flatnonzero(labels >= 0)
    if len(labelled) < 2 * folds:
        raise InputError(f"combined is fitted on the labels of split {calibration!r}, and it has {len(labelled)} labelled samples")
    ids = store.sample_ids(calibration)
    if str(target) == "ensemble":
        predicted = store.final_predictions(calibration).ensemble_argmax
        target_name = "ensemble"
    else:
        predicted, target_name = _other_run_predictions(Path(target), calibration, ids)
    names = combined_features(store, calibration)
    table = difficulty_scores(store, calibration, names=names, k=k)
    features = table[names].to_numpy(np.float64)[labelled]
    fit = fit_combined(
        features,
        predicted[labelled] != labels[labelled],
        ids[labelled],
        names,
        folds=folds,
        calibration=calibration,
        target=target_name,
        recorded_epochs=store.recorded_epochs,
        extra={"k": k},
    )
    if save:
        with contextlib.suppress(OSError):
            fit.save(store.path)
    return fit


def _other_run_predictions(other_path: Path, calibration: str, ids: np.ndarray) -> tuple[np.ndarray, str]:
    """Another run's final ensemble prediction of each calibration sample, joined by sample id."""
    other = RunStore.open(other_path)
    if calibration not in other.splits:
        raise ParameterError(f"{{target}} {other_path} has no split {calibration!r}", "target")
    position = {sample: i for i, sample in enumerate(other.sample_ids(calibration))}
    missing = [sample for sample in ids if sample not in position]
    if missing:
        raise ParameterError(f"{{target}} {other_path} lacks {len(missing)} samples of split {calibration!r} (first: {str(missing[0])!r})", "target")
    own = other.final_predictions(calibration).ensemble_argmax
    return own[[position[sample] for sample in ids]], str(other_path.resolve())


FEW_ERRORS = 50  # errors of the target on the calibration split below which a fit of `combined` is unstable


def few_errors_note(store: RunStore) -> list[str]:
    """A note where `combined` was fitted on fewer than `FEW_ERRORS` errors, else none.

    On BBC News (README, "Which difficulty score?") the scoring ensemble makes 10 errors on
    444 val documents; `combined` fitted to them ranks the other models' errors at AUROC 0.908
    against confusion's 0.958.

    Parameters
    ----------
    store : RunStore
        The run, with its fit kept in RUN/combined.json.

    Returns
    -------
    list of str
        The note, or nothing.
    """
    fit = CombinedFit.load(store.path)
    if fit is None or fit.n_errors >= FEW_ERRORS:
        return []
    return [
        f"combined: fitted on {fit.n_errors} errors among {fit.n_calibration} samples of {fit.calibration!r}; under {FEW_ERRORS} "
        "its order is unstable and confusion is the safer score"
    ]


def combined_values(store: RunStore, split: str, *, k: int = K, known: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """`combined` of every sample of `split`: from RUN/combined.json where it was fitted on the
    run's present epochs and signals, else fitted now (with the kept fit's settings, or the
    defaults: calibration val, 5 folds, the run's own errors) and kept.

    Parameters
    ----------
    store : RunStore
        The run.
    split : str
        The split to score (any: an unlabeled one too).
    k : int
        Neighbours of the neighbourhood scores, for a fit made now.
    known : dict of str to ndarray, optional
        Scores of `split` already computed, reused.

    Returns
    -------
    ndarray of float64, shape (samples,)
        Log-odds of an error; a calibration sample is scored by the fit of the folds without it.
    """
    fit = CombinedFit.load(store.path)
    stale = fit is not None and (fit.recorded_epochs != store.recorded_epochs or fit.features != combined_features(store, fit.calibration))
    if fit is None or stale:
        if fit is None:
            fit = fit_combined_run(store, k=k)
        else:  # refitted as it was fitted; a target run no longer there gives way to the run's own errors
            target = fit.target if fit.target == "ensemble" or Path(fit.target).is_dir() else "ensemble"
            fit = fit_combined_run(store, calibration=fit.calibration, folds=fit.folds, target=target, k=fit.extra.get("k", k))
    columns = dict(known or {})
    missing = [name for name in fit.features if name not in columns]
    if missing:
        computed = difficulty_scores(store, split, names=missing, k=fit.extra.get("k", k))
        columns.update({name: computed[name].to_numpy(np.float64) for name in missing})
    features = np.column_stack([columns[name] for name in fit.features])
    return fit.apply(features, store.sample_ids(split), calibration=split == fit.calibration)


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
