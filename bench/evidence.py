"""The evidence behind "which difficulty score?": every score of a scoring run as a detector of
other models' errors, with 95% bootstrap intervals, against each model's own confidence.

Used by bench/difficulty.py; importable so its numbers can be checked on small runs
(tests/test_signals.py). Events are one per (member, sample) of each other model at its last
epoch, its top-1 errors the positives; a score ranks all members' events of a sample alike.
The bootstrap resamples the shared samples (with replacement) and recomputes every model's
AUROC from the same draw, so the interval of the mean is that of a new sample of the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Model:
    """What the evidence needs of one other model, on the reference's samples (in its order)."""

    name: str
    errors: np.ndarray  # (members, samples) bool
    own_msp: np.ndarray  # (members, samples) 1 - the member's top probability


def weighted_auroc(scores: np.ndarray, positives: np.ndarray, weights: np.ndarray, groups: np.ndarray | None = None) -> float:
    """AUROC (ties counted half) of events with `weights` (a bootstrap draw's counts).

    Parameters
    ----------
    scores, positives, weights : ndarray, same shape
        Event scores, whether each is an error, and how many times it is drawn.
    groups : ndarray, optional
        `np.unique(scores, return_inverse=True)[1]`, when the same scores are used again.

    Returns
    -------
    float
        The AUROC, NaN without both kinds of events.
    """
    scores, positives, weights = (np.ravel(a) for a in (scores, positives, weights))
    if groups is None:
        groups = np.unique(scores, return_inverse=True)[1]
    groups = np.ravel(groups)
    size = int(groups.max()) + 1
    p = np.bincount(groups, weights * positives, minlength=size)
    n = np.bincount(groups, weights * ~positives, minlength=size)
    total_p, total_n = p.sum(), n.sum()
    if total_p == 0 or total_n == 0:
        return float("nan")
    below = np.cumsum(n) - n
    return float((p * (below + 0.5 * n)).sum() / (total_p * total_n))


def load_models(reference_ids: np.ndarray, paths: list[Path], split: str = "val") -> tuple[np.ndarray, list[Model]]:
    """Each model's errors and own MSP on the samples every one of them shares with the reference.

    Returns
    -------
    tuple
        (positions of those samples in the reference, the models).
    """
    from confusion.analyses import align
    from confusion.store import RunStore

    stores = [RunStore.open(p) for p in paths]
    shared = np.asarray(reference_ids).astype(str)
    for store in stores:
        shared = shared[np.isin(shared, store.sample_ids(split).astype(str))]
    in_ref, _ = align(reference_ids, shared)
    models = []
    for path, store in zip(paths, stores):
        _, at = align(shared, store.sample_ids(split))
        final = store.final_predictions(split).samples(at)
        labels = store.labels(split)[at]
        models.append(Model(f"{Path(path).parent.name}/{Path(path).name}", final.argmax != labels[None], 1.0 - final.top1))
    return in_ref, models


def evidence(scores: dict[str, np.ndarray], models: list[Model], *, boot: int = 200, seed: int = 0, top: float = 0.1) -> dict[str, dict]:
    """Per score (oriented higher = harder, on the shared samples): mean AUROC over models with a
    95% bootstrap interval, per-model AUROC, models whose own MSP it beats, mean hard/rest error.

    Also a row "own_msp": each model's own 1 - max probability (what running it would give).
    """
    rng = np.random.default_rng(seed)
    n = models[0].errors.shape[1]
    draws = [np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64) for _ in range(boot)]
    own_groups = [np.unique(m.own_msp, return_inverse=True)[1].reshape(m.own_msp.shape) for m in models]
    own_point = np.array([weighted_auroc(m.own_msp, m.errors, np.ones_like(m.own_msp), g) for m, g in zip(models, own_groups)])
    out = {}
    for name, values in scores.items():
        values = np.asarray(values, dtype=np.float64)
        if not np.isfinite(values).all():
            continue
        groups = np.unique(values, return_inverse=True)[1]
        per_model, boot_means, hard_rest = [], [], []
        for model in models:
            tiled = np.broadcast_to(groups, model.errors.shape)
            per_model.append(weighted_auroc(np.broadcast_to(values, model.errors.shape), model.errors, np.ones(model.errors.shape), tiled))
            per_sample = model.errors.mean(axis=0)
            hard = np.argsort(-values, kind="stable")[: max(1, int(np.ceil(top * n)))]
            rest = np.setdiff1d(np.arange(n), hard)
            rest_error = per_sample[rest].mean()
            hard_rest.append(per_sample[hard].mean() / rest_error if rest_error > 0 else np.nan)  # no error outside the top: no ratio
        for w in draws:
            boot_means.append(
                np.mean(
                    [
                        weighted_auroc(
                            np.broadcast_to(values, m.errors.shape),
                            m.errors,
                            np.broadcast_to(w, m.errors.shape),
                            np.broadcast_to(groups, m.errors.shape),
                        )
                        for m in models
                    ]
                )
            )
        per_model = np.array(per_model)
        out[name] = {
            "mean_auroc": float(per_model.mean()),
            "ci95": [float(np.percentile(boot_means, 2.5)), float(np.percentile(boot_means, 97.5))],
            "per_model": dict(zip([m.name for m in models], map(float, per_model))),
            "beats_own_msp": int((per_model > own_point).sum()),
            "mean_hard_to_rest": float(np.nanmean(hard_rest)) if np.isfinite(hard_rest).any() else float("nan"),
        }
    own_boot = [
        np.mean([weighted_auroc(m.own_msp, m.errors, np.broadcast_to(w, m.errors.shape), g) for m, g in zip(models, own_groups)]) for w in draws
    ]
    out["own_msp"] = {
        "mean_auroc": float(own_point.mean()),
        "ci95": [float(np.percentile(own_boot, 2.5)), float(np.percentile(own_boot, 97.5))],
        "per_model": dict(zip([m.name for m in models], map(float, own_point))),
        "beats_own_msp": 0,
        "mean_hard_to_rest": float("nan"),
    }
    return out


def rank_average(*columns: np.ndarray) -> np.ndarray:
    """The mean of the columns' percentile ranks (ties averaged): a combination with no fit."""
    from scipy.stats import rankdata

    return np.mean([rankdata(c) / len(c) for c in columns], axis=0)


def print_table(found: dict[str, dict], models: list[Model], title: str) -> None:
    """The evidence as a markdown table, best mean AUROC first."""
    print(f"### {title}")
    print()
    print("| score | mean AUROC | 95% CI | beats own MSP on | mean hard/rest error | " + " | ".join(m.name for m in models) + " |")
    print("|---|---|---|---|---|" + "---|" * len(models))
    for name, row in sorted(found.items(), key=lambda item: -item[1]["mean_auroc"]):
        low, high = row["ci95"]
        cells = " | ".join(f"{row['per_model'][m.name]:.3f}" for m in models)
        beats = "-" if name == "own_msp" else f"{row['beats_own_msp']} of {len(models)}"
        ratio = "-" if name == "own_msp" else f"{row['mean_hard_to_rest']:.2f}"
        print(f"| {name} | {row['mean_auroc']:.3f} | {low:.3f}-{high:.3f} | {beats} | {ratio} | {cells} |")
    print()
