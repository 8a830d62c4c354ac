"""Difficulty scores from one recording: the paper's confusion and what a user would weigh it against.

Every score here is computed from the same run store (members x recorded epochs of class
probabilities), so they compete on equal data. Label-free scores can build a benchmark
without labels; the label-using ones are reference points from the data-pruning and
label-noise literature and are empty (NaN) where a sample's label is unknown.

`SCORES` documents each one: range, unit, which direction is harder, what it costs (which
members and epochs it reads) and where it comes from. `hardness(values, name)` orients any of
them so that higher = harder, which is how `analyses.transfer_report` ranks samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import InputError
from .store import RunStore


@dataclass(frozen=True)
class ScoreInfo:
    """What a difficulty score is: its range and unit, which way is harder, and its cost."""

    name: str
    needs_labels: bool
    harder: str  # "higher" or "lower"
    range: str
    unit: str
    reads: str  # which recorded predictions it needs: members x epochs
    source: str
    description: str


SCORES: dict[str, ScoreInfo] = {
    s.name: s
    for s in [
        ScoreInfo("confusion", False, "higher", "0..log2 C", "bits", "all members x all epochs",
                  "Simsek, Hall & Sagun 2022; Albiero et al. (eqs. 1-3)",
                  "entropy of the members' average prediction, averaged over epochs"),
        ScoreInfo("expected_entropy", False, "higher", "0..log2 C", "bits", "all members x all epochs",
                  "the decomposition of confusion (Depeweg et al. 2018)",
                  "the members' mean entropy, averaged over epochs: what every member is unsure of"),
        ScoreInfo("disagreement", False, "higher", "0..log2 C", "bits", "all members x all epochs",
                  "mutual information between prediction and member (Depeweg et al. 2018)",
                  "confusion minus expected entropy: where the members disagree"),
        ScoreInfo("last_epoch_entropy", False, "higher", "0..log2 C", "bits", "all members x last epoch",
                  "deep-ensemble predictive entropy (Lakshminarayanan et al. 2017)",
                  "entropy of the members' average prediction at the last recorded epoch only (no epoch average)"),
        ScoreInfo("member_entropy", False, "higher", "0..log2 C", "bits", "member 0 x all epochs",
                  "one model's entropy averaged over training (no seed average)",
                  "member 0's entropy, averaged over epochs"),
        ScoreInfo("single_model_entropy", False, "higher", "0..log2 C", "bits", "member 0 x last epoch",
                  "the single-model baseline (Hendrycks & Gimpel 2017; FiftyOne's hardness)",
                  "member 0's entropy at the last recorded epoch: one trained model, nothing averaged"),
        ScoreInfo("ensemble_msp", False, "higher", "0..1-1/C", "probability", "all members x all epochs",
                  "maximum softmax probability (Hendrycks & Gimpel 2017), of the ensemble, averaged over epochs",
                  "1 - max class probability of the members' average, averaged over epochs"),
        ScoreInfo("flips", False, "higher", "0..epochs-1", "count", "all members x all epochs",
                  "prediction flips across training (Toneva et al. 2019, label-free)",
                  "how often the ensemble's predicted class changes between consecutive recorded epochs"),
        ScoreInfo("stable_epoch", False, "higher", "first..last recorded epoch", "training epoch", "all members x all epochs",
                  "learning speed (Jiang et al. 2021, 'Characterizing structural regularities')",
                  "the first epoch from which the ensemble's predicted class never changes again"),
        ScoreInfo("cartography_confidence", True, "lower", "0..1", "probability", "all members x all epochs",
                  "Dataset Cartography (Swayamdipta et al. 2020)",
                  "mean probability of the labelled class, over epochs and members"),
        ScoreInfo("cartography_variability", True, "higher", "0..0.5", "probability", "all members x all epochs",
                  "Dataset Cartography (Swayamdipta et al. 2020)",
                  "standard deviation over epochs of the probability of the labelled class, averaged over members"),
        ScoreInfo("forgetting_events", True, "higher", "0..(epochs-1)/2", "count", "all members x all epochs",
                  "forgetting events (Toneva et al. 2019)",
                  "times a member goes from right to wrong between consecutive recorded epochs, averaged over members"),
        ScoreInfo("margin", True, "lower", "-1..1", "probability", "all members x all epochs",
                  "area under the margin, AUM (Pleiss et al. 2020), on probabilities",
                  "probability of the label minus the largest other, averaged over epochs and members"),
        ScoreInfo("el2n", True, "higher", "0..sqrt 2", "L2 norm", "all members x one early epoch",
                  "EL2N (Paul et al. 2021)",
                  "L2 norm of (probabilities - one-hot label) at the first recorded epoch at or after 10% of training, "
                  "averaged over members"),
    ]
}

LABEL_FREE = [name for name, info in SCORES.items() if not info.needs_labels]
IN_BITS = [name for name, info in SCORES.items() if info.unit == "bits"]  # on confusion's 0..log2 C scale
WITH_LABELS = [name for name, info in SCORES.items() if info.needs_labels]
BLOCK_BYTES = 64 * 2**20  # float32 working set per block of samples


def hardness(values: np.ndarray, name: str) -> np.ndarray:
    """`values` of score `name` oriented so that higher = harder (lower-is-harder scores negated)."""
    if name not in SCORES:
        raise InputError(f"unknown difficulty score {name!r}; choose from {', '.join(SCORES)}")
    values = np.asarray(values, dtype=np.float64)
    return -values if SCORES[name].harder == "lower" else values


def check_label_free(name: str) -> None:
    if name not in LABEL_FREE:
        raise InputError(f"--score must be a label-free score ({', '.join(LABEL_FREE)}), got {name!r}")


def label_free_score(store: RunStore, split: str, name: str = "confusion") -> np.ndarray:
    """One label-free score of every sample of `split` (all of them: higher = harder)."""
    check_label_free(name)
    if name == "confusion":
        return store.scores(split, decomposition=False).confusion
    return difficulty_scores(store, split)[name].to_numpy(np.float64)


def early_epoch_position(n_epochs: int) -> int:
    """Position of EL2N's early epoch: the first recorded epoch at or after 10% of them."""
    return max(0, math.ceil(0.1 * n_epochs) - 1)


def difficulty_scores(store: RunStore, split: str, *, progress: Callable[[int], None] | None = None):
    """Every score in `SCORES` for every sample of `split`, from the committed epochs.

    Returns a DataFrame: sample, split, label (-1 = unknown), then one column per score
    (label-using ones NaN where the label is unknown). Entropies are in bits. Memory is
    bounded by `BLOCK_BYTES`, not by the run.
    """
    import pandas as pd

    epochs = store.recorded_epochs
    if not epochs:
        raise InputError(f"{store.path} has no committed epoch yet; nothing to score")
    scores = store.scores(split)
    columns: dict[str, np.ndarray] = {
        "confusion": scores.confusion,
        "expected_entropy": scores.expected_entropy,
        "disagreement": scores.disagreement,
        "last_epoch_entropy": scores.per_epoch[-1],
    }
    one_member = store.scores(split, members=[0])
    columns["member_entropy"] = one_member.confusion
    columns["single_model_entropy"] = one_member.per_epoch[-1]
    columns.update(_streamed(store, split, np.asarray(epochs), progress))
    labels = store.labels(split)
    table = pd.DataFrame({"sample": store.sample_ids(split), "split": split, "label": labels})
    for name in SCORES:
        table[name] = columns[name]
    return table


def _streamed(store: RunStore, split: str, epochs: np.ndarray, progress) -> dict[str, np.ndarray]:
    """The scores that need arg-maxes and label probabilities, block by block of samples.

    Written against the reduced record (`RunStore.record_blocks`: computed from the raw
    probabilities of a raw run, read from a reduced one), so both give the same numbers.
    """
    labels = store.labels(split)
    n_epochs, n_samples = len(epochs), store.n_samples(split)
    out = {name: np.full(n_samples, np.nan) for name in ["ensemble_msp", "flips", "stable_epoch", *WITH_LABELS]}
    early = early_epoch_position(n_epochs)
    for start, stop, record in store.record_blocks(split, BLOCK_BYTES):
        rows = slice(start, stop)
        out["ensemble_msp"][rows] = (1.0 - record["ensemble_top1"].astype(np.float64)).mean(axis=0)
        predicted = record["ensemble_argmax"]  # (epochs, samples) of eq. 1's average
        changed = predicted[1:] != predicted[:-1]
        out["flips"][rows] = changed.sum(axis=0)
        # Last position where the prediction changed (0 if never): from there on it is final.
        last_change = np.where(changed.any(axis=0), n_epochs - 1 - np.argmax(changed[::-1], axis=0), 0)
        out["stable_epoch"][rows] = epochs[last_change]
        _label_scores(out, rows, record, labels[rows], early)
        if progress is not None:
            progress(stop - start)
    return out


def _label_scores(out: dict, rows: slice, record: dict, labels: np.ndarray, early: int) -> None:
    """Cartography, forgetting, margin and EL2N for the labelled samples of one block."""
    known = np.flatnonzero(labels >= 0)
    if not len(known):
        return
    y = labels[known]
    of_label = record["member_label"][:, :, known].astype(np.float64)  # (members, epochs, known)
    argmax = record["member_argmax"][:, :, known]
    correct = argmax == y
    largest_other = record["member_other"][:, :, known].astype(np.float64)  # the largest class but the label
    sumsq = record["member_sumsq"][:, early, known].astype(np.float64)  # ||p - onehot(y)||^2 = sum p^2 - 2 p_y + 1
    positions = np.arange(rows.start, rows.stop)[known]
    out["cartography_confidence"][positions] = of_label.mean(axis=(0, 1))
    out["cartography_variability"][positions] = of_label.std(axis=1).mean(axis=0)
    out["forgetting_events"][positions] = (correct[:, :-1] & ~correct[:, 1:]).sum(axis=1).mean(axis=0)
    out["margin"][positions] = (of_label - largest_other).mean(axis=(0, 1))
    out["el2n"][positions] = np.sqrt(np.maximum(sumsq - 2.0 * of_label[:, early] + 1.0, 0.0)).mean(axis=0)
