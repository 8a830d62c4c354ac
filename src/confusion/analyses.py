"""What the paper measures, as plain functions over arrays (numpy and scipy only).

    error identification (3.1, fig. 2)   error_by_bin, auroc, aurc, detection_report
    aggregate confusion vs accuracy      aggregate
    transfer (3.2, figs. 3-4)            align, kendall_tau, joint_histogram, error_by_bin per model
    robustness (3.3, figs. 5-6)          epoch_subsets, robustness
    galleries (fig. 1)                   gallery

Scores are confusion in bits unless stated; "error" is top-1 error (1 = wrong) and needs
labels; nothing here needs them to compute a score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np  # scipy.stats is imported where it is used: 0.6 s, which training processes never need

from .errors import InputError
from .reduced import as_final

__all__ = [
    "MAX_BINS",
    "BinnedError",
    "aggregate",
    "align",
    "aurc",
    "auroc",
    "bin_index",
    "detection_report",
    "ensemble_accuracy",
    "error_ceiling",
    "epoch_subsets",
    "error_by_bin",
    "gallery",
    "joint_histogram",
    "kendall_tau",
    "mean_member_accuracy",
    "member_errors",
    "positions",
    "robustness",
    "transfer_report",
]


# ----------------------------------------------------------------------------- detection
def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of `scores` ranking `positives` (True) above the rest.

    Mann-Whitney form with ties counted half; 1.0 = perfect separation, 0.5 = chance.
    NaN when only one class is present.

    >>> auroc(np.array([0.1, 0.9, 0.4]), np.array([False, True, False]))
    1.0
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positives = np.asarray(positives, dtype=bool).ravel()
    if scores.shape != positives.shape:
        raise InputError(f"scores {scores.shape} and positives {positives.shape} differ in length")
    n_pos = int(positives.sum())
    n_neg = len(positives) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy import stats

    ranks = stats.rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def aurc(scores: np.ndarray, errors: np.ndarray) -> float:
    """Area under the risk-coverage curve (lower is better): keep samples from the least
    uncertain score up; at each coverage the risk is the error rate among those kept."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    errors = np.asarray(errors, dtype=np.float64).ravel()
    order = np.argsort(scores, kind="stable")
    risk = np.cumsum(errors[order]) / np.arange(1, len(order) + 1)
    return float(risk.mean()) if len(risk) else float("nan")


def member_errors(final_probs, labels: np.ndarray) -> np.ndarray:
    """(members, samples) top-1 errors of each member's final-epoch prediction.

    final_probs here and below: (members, samples, classes) probabilities, or the
    `FinalPredictions` a run store gives (`RunStore.final_predictions`, raw or reduced)."""
    return (as_final(final_probs).argmax != np.asarray(labels)[None]).astype(np.float64)


def ensemble_accuracy(final_probs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of the members' averaged prediction (eq. 1) over the labelled samples.

    final_probs: (members, samples, classes); labels: (samples,), -1 = unknown (left out).
    NaN when no sample is labelled.
    """
    labels = np.asarray(labels)
    known = labels >= 0
    if not known.any():
        return float("nan")
    predicted = as_final(final_probs).ensemble_argmax
    return float((predicted[known] == labels[known]).mean())


def mean_member_accuracy(final_probs: np.ndarray, labels: np.ndarray) -> float:
    """The members' top-1 accuracies, averaged (what one member scores, on average), labelled samples only."""
    labels = np.asarray(labels)
    known = labels >= 0
    if not known.any():
        return float("nan")
    return float(1.0 - member_errors(as_final(final_probs).samples(known), labels[known]).mean())


def detection_report(confusion: np.ndarray, final_probs: np.ndarray, labels: np.ndarray) -> dict:
    """The score as a detector of errors, next to two single-model baselines.

    The errors are each member's top-1 errors at its last recorded epoch, one event per
    (member, sample). Confusion ranks all members' events of a sample alike; the baselines
    use each member's own final prediction: its entropy and 1 - its max probability.

    final_probs: (members, samples, classes); labels: (samples,), all known.
    """
    final = as_final(final_probs)
    errors = member_errors(final, labels)  # (members, samples)
    repeated = np.broadcast_to(confusion, errors.shape)
    single_entropy = final.entropy
    msp = 1.0 - final.top1
    return {
        "error_rate": float(errors.mean()),
        "auroc_error": auroc(repeated, errors > 0),
        "aurc_error": aurc(repeated, errors),
        "baselines": {
            "auroc_single_entropy": auroc(single_entropy, errors > 0),
            "auroc_msp": auroc(msp, errors > 0),
            "aurc_single_entropy": aurc(single_entropy, errors),
            "aurc_msp": aurc(msp, errors),
        },
        "error_definition": "top-1 error of each ensemble member at its last recorded epoch, one event per member and sample",
    }


def transfer_report(hardness_by_score: dict[str, np.ndarray], final_probs: np.ndarray, labels: np.ndarray, *, top: float = 0.1) -> dict:
    """How well each difficulty score of a reference run picks out another model's errors.

    The events are that model's top-1 errors, one per (member, sample) at its last recorded
    epoch (as `detection_report`). Each score ranks all members' events of a sample alike; the
    model's own baselines use each member's own final prediction (entropy, 1 - max
    probability): what a user could rank by if they could afford to run that model.

    hardness_by_score: {score: (samples,)} oriented higher = harder (NaN = no value: left out).
    final_probs: (members, samples, classes) of the other model; labels: (samples,), all known.
    Returns {"n", "error_rate", "own_baselines": {auroc_msp, auroc_entropy, aurc_msp,
    aurc_entropy}, "scores": {score: {auroc_error, aurc_error, hard_error, rest_error,
    hard_to_rest}}}; hard = the top `top` fraction by the score, rest = the others.
    """
    final = as_final(final_probs)
    labels = np.asarray(labels)
    if final.n_samples != len(labels) or (labels < 0).any():
        raise InputError(f"final_probs must be (members, {len(labels)}, classes) with every label known")
    if not 0 < top < 1:
        raise InputError(f"top must be a fraction in (0, 1), got {top}")
    errors = member_errors(final, labels)  # (members, samples)
    own = {"entropy": final.entropy, "msp": 1.0 - final.top1}
    result = {
        "n": int(len(labels)),
        "error_rate": float(errors.mean()),
        "own_baselines": {
            **{f"auroc_{k}": auroc(v, errors > 0) for k, v in own.items()},
            **{f"aurc_{k}": aurc(v, errors) for k, v in own.items()},
        },
        "scores": {},
    }
    per_sample = errors.mean(axis=0)
    for name, values in hardness_by_score.items():
        values = np.asarray(values, dtype=np.float64)
        if values.shape != per_sample.shape:
            raise InputError(f"score {name!r} has shape {values.shape}, expected ({len(labels)},)")
        kept = np.isfinite(values)
        if not kept.any():
            continue
        events = np.broadcast_to(values[kept], errors[:, kept].shape)
        order = np.argsort(-values[kept], kind="stable")
        hard = order[: max(1, math.ceil(top * kept.sum()))]
        rest = np.setdiff1d(np.arange(kept.sum()), hard)
        hard_error = float(per_sample[kept][hard].mean())
        rest_error = float(per_sample[kept][rest].mean()) if len(rest) else float("nan")
        result["scores"][name] = {
            "auroc_error": auroc(events, errors[:, kept] > 0),
            "aurc_error": aurc(events, errors[:, kept]),
            "hard_error": hard_error,
            "rest_error": rest_error,
            "hard_to_rest": hard_error / rest_error if rest_error > 0 else float("nan"),
            "n": int(kept.sum()),
        }
    return result


def error_ceiling(confusion: np.ndarray, reference, final_probs, labels: np.ndarray, *, threshold: float = 0.9) -> dict:
    """How much of another model's error a label-free score of the reference run can see at all.

    An error of that model (one event per member and sample at its last epoch, as in
    `transfer_report`) is *shared and confident* where the reference run's final ensemble
    average predicts the same wrong class with top probability above `threshold`: no score of
    the reference run's predictions can call that sample hard. The ceiling AUROC is that of a
    score that ranks every other error first and keeps `confusion`'s order everywhere else.

    Parameters
    ----------
    confusion : ndarray, shape (samples,)
        The reference run's score, higher = harder.
    reference : FinalPredictions
        The reference run's last epoch on the same samples (its ensemble top probability).
    final_probs : ndarray or FinalPredictions
        The other model's final predictions, (members, samples, classes).
    labels : ndarray, shape (samples,)
        Every label known.
    threshold : float
        Top probability above which the reference is confidently wrong, in (0, 1).

    Returns
    -------
    dict
        threshold, shared_confident_error_share (of the model's error events), auroc_ceiling,
        n_errors (events). NaN where the reference keeps no ensemble top probability (top-k);
        the ceiling is NaN where `confusion` has no value for some sample.
    """
    if not 0 < threshold < 1:
        raise InputError(f"the ceiling's threshold must be a probability in (0, 1), got {threshold}")
    final = as_final(final_probs)
    errors = member_errors(final, labels) > 0
    confusion = np.asarray(confusion, dtype=np.float64)
    out = {"threshold": float(threshold), "n_errors": int(errors.sum()), "shared_confident_error_share": float("nan"), "auroc_ceiling": float("nan")}
    if reference.ensemble_top1 is None or not errors.any():
        return out
    shared = errors & (final.argmax == reference.ensemble_argmax[None]) & (reference.ensemble_top1[None] > threshold)
    out["shared_confident_error_share"] = float(shared.sum() / errors.sum())
    if not np.isfinite(confusion).all():  # a score missing somewhere has no order to keep
        return out
    ceiling = np.where(errors & ~shared, confusion.max() + 1.0, np.broadcast_to(confusion, errors.shape))
    out["auroc_ceiling"] = auroc(ceiling, errors)
    return out


# ----------------------------------------------------------------------------- error by bin
MAX_BINS = 10_000  # more fixed-width bins than this hold a handful of samples each at any size


def bin_index(scores: np.ndarray, inner_edges: np.ndarray) -> np.ndarray:
    """The one binning rule: bin 0 below the first inner edge, ..., len(inner_edges) at or above
    the last (a score on an edge goes to the bin above it). Used for the error-by-bin curves,
    the per-band evaluation and the mitigation bands alike."""
    return np.searchsorted(np.asarray(inner_edges, dtype=np.float64), np.asarray(scores, dtype=np.float64), side="right")


@dataclass
class BinnedError:
    """Top-1 error per fixed-width score bin; bins with fewer than `min_count` samples are skipped."""

    edges: np.ndarray  # (bins + 1,)
    counts: np.ndarray  # (bins,)
    error: np.ndarray  # (bins,), NaN where skipped
    used: np.ndarray  # (bins,) bool
    pearson: float
    spearman: float

    @property
    def centers(self) -> np.ndarray:
        return (self.edges[:-1] + self.edges[1:]) / 2

    def to_rows(self) -> list[dict]:
        return [
            {"bin_low": float(a), "bin_high": float(b), "count": int(n), "error": float(e) if u else None}
            for a, b, n, e, u in zip(self.edges[:-1], self.edges[1:], self.counts, self.error, self.used)
        ]


def error_by_bin(scores: np.ndarray, errors: np.ndarray, *, max_score: float, bins: int = 20, min_count: int = 20) -> BinnedError:
    """Mean error per bin of `scores` over [0, max_score] (fig. 2 right, fig. 4).

    errors: (samples,) in [0, 1] (a member-averaged error is fine). Pearson's rho and
    Spearman's rho are computed over the bins that are used: bin centre against error rate.
    """
    scores = np.asarray(scores, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    if scores.shape != errors.shape:
        raise InputError(f"scores {scores.shape} and errors {errors.shape} differ in shape")
    edges = np.linspace(0.0, max_score, bins + 1)
    index = bin_index(scores, edges[1:-1])
    counts = np.bincount(index, minlength=bins)
    sums = np.bincount(index, weights=errors, minlength=bins)
    used = counts >= max(1, min_count)
    error = np.where(used, sums / np.maximum(counts, 1), np.nan)
    centers = (edges[:-1] + edges[1:]) / 2
    pearson = spearman = float("nan")
    if used.sum() >= 3 and np.ptp(error[used]) > 0:
        from scipy import stats

        pearson = float(stats.pearsonr(centers[used], error[used]).statistic)
        spearman = float(stats.spearmanr(centers[used], error[used]).statistic)
    return BinnedError(edges, counts, error, used, pearson, spearman)


# ----------------------------------------------------------------------------- transfer
def align(ids_a: np.ndarray, ids_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (in a, in b) of the sample ids the two have in common, in a's order."""
    ids_a, ids_b = np.asarray(ids_a).astype(str), np.asarray(ids_b).astype(str)
    position_b = {sample: i for i, sample in enumerate(ids_b)}
    in_a = np.array([i for i, sample in enumerate(ids_a) if sample in position_b], dtype=np.intp)
    in_b = np.array([position_b[ids_a[i]] for i in in_a], dtype=np.intp)
    return in_a, in_b


def positions(ids: np.ndarray, wanted, where: str) -> np.ndarray:
    """Positions in `ids` of every sample id in `wanted`, in its order; InputError naming what is
    missing (`where` says where they were looked for). The one id-to-position lookup."""
    position = {sample: i for i, sample in enumerate(np.asarray(ids).astype(str))}
    wanted = np.asarray(wanted).astype(str)
    missing = [s for s in wanted if s not in position]
    if missing:
        raise InputError(f"{len(missing)} of these samples are not in {where} (e.g. {str(missing[0])!r})")
    return np.array([position[s] for s in wanted], dtype=np.intp)


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b between two score vectors over the same samples (1 = same order)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"score vectors differ in length: {a.shape} vs {b.shape}")
    if len(a) < 2:
        return float("nan")
    from scipy import stats

    return float(stats.kendalltau(a, b).statistic)


def joint_histogram(a: np.ndarray, b: np.ndarray, *, max_score: float, bins: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """(bins, bins) counts of (a, b) score pairs over [0, max_score]^2, and the edges (fig. 3)."""
    edges = np.linspace(0.0, max_score, bins + 1)
    counts, _, _ = np.histogram2d(np.clip(a, 0, max_score), np.clip(b, 0, max_score), bins=[edges, edges])
    return counts, edges


def aggregate(mean_confusion: np.ndarray, accuracy: np.ndarray) -> dict:
    """Contribution 2: across runs, mean confusion against accuracy (Pearson and Spearman)."""
    mean_confusion = np.asarray(mean_confusion, dtype=np.float64)
    accuracy = np.asarray(accuracy, dtype=np.float64)
    result = {"n_runs": int(len(accuracy)), "pearson": float("nan"), "spearman": float("nan")}
    if len(accuracy) >= 3 and np.ptp(accuracy) > 0 and np.ptp(mean_confusion) > 0:
        from scipy import stats

        result["pearson"] = float(stats.pearsonr(mean_confusion, accuracy).statistic)
        result["spearman"] = float(stats.spearmanr(mean_confusion, accuracy).statistic)
    return result


# ----------------------------------------------------------------------------- robustness
def epoch_subsets(n_epochs: int, counts=(5, 10, 20, 33)) -> dict[str, np.ndarray]:
    """Evenly spaced epoch positions, as the paper's every 20th/10th/5th/3rd of 100 epochs.

    k epochs out of T are the last epoch of each of k equal stretches: round((j + 1) T / k) - 1.
    Only counts below T are kept, then "all".
    """
    subsets = {}
    for k in counts:
        if k < n_epochs:
            positions = np.unique(np.round(np.arange(1, k + 1) * n_epochs / k).astype(int) - 1)
            subsets[str(k)] = positions
    subsets["all"] = np.arange(n_epochs)
    return subsets


def robustness(
    scores_all,
    scores_one_seed,
    reference_errors: np.ndarray | None,
    *,
    max_score: float,
    bins: int = 20,
    min_count: int = 20,
    epoch_numbers=None,
) -> dict:
    """Epoch and seed subsets of a run's scores: their Kendall tau with the full score and
    how they track a reference model's error (figs. 5-6).

    scores_all / scores_one_seed: `Scores` from all members and from member 0 alone.
    reference_errors: (samples,) errors of a reference model, or None.
    epoch_numbers: the 1-based training epoch of each recorded epoch (a run's
    `recorded_epochs`), so `epochs_used` names training epochs; default: positions + 1.
    """
    full = scores_all.confusion
    out: dict = {"epochs": {}, "seeds": {}}
    for seeds_name, scores in (("all", scores_all), ("1", scores_one_seed)):
        for name, positions in epoch_subsets(len(scores.epochs)).items():
            subset = scores.for_epochs(positions).confusion
            entry = {
                "epochs_used": [int(epoch_numbers[scores.epochs[p]]) if epoch_numbers is not None else int(scores.epochs[p]) + 1 for p in positions],
                "kendall_tau_with_full": kendall_tau(subset, full),
                "mean_confusion": float(subset.mean()),
            }
            if reference_errors is not None:
                binned = error_by_bin(subset, reference_errors, max_score=max_score, bins=bins, min_count=min_count)
                entry["pearson_reference_error_by_bin"] = binned.pearson
            out["epochs"].setdefault(seeds_name, {})[name] = entry
        out["seeds"][seeds_name] = {"kendall_tau_with_full": kendall_tau(scores.confusion, full)}
    return out


# ----------------------------------------------------------------------------- galleries
def gallery(scores: np.ndarray, classes: np.ndarray, *, per_class: int = 6) -> dict[int, dict[str, np.ndarray]]:
    """Per class, sample positions of the `per_class` easiest and hardest by score alone.

    classes: (samples,) the label, or, without labels, the ensemble's predicted class.
    """
    scores = np.asarray(scores)
    result = {}
    for label in np.unique(classes):
        in_class = np.flatnonzero(classes == label)
        order = in_class[np.argsort(scores[in_class], kind="stable")]
        result[int(label)] = {"easiest": order[:per_class], "hardest": order[::-1][:per_class]}
    return result
