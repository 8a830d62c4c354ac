"""The report's computation: the paper's analyses of one run (and of others against it) as
metrics and the arrays behind every figure, read from run stores; nothing is drawn or written.

No torch here: everything is read from run stores (and, for galleries, the dataset files).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__, analyses
from ..difficulty import SCORES, difficulty_scores, hardness
from ..errors import ParameterError
from ..runscores import score_run
from .examples import examples, gallery
from .inputs import check_signal_join, read_mitigation, read_signal, shared_samples
from .views import SCORE_UNIT, RunView, pick_split

__all__ = [
    "ReportOptions",
    "ReportResult",
    "TransferPair",
    "compute_report",
    "dataset_of",
]


@dataclass
class TransferPair:
    """Kendall's tau between the reference run's scores and another run's (fig. 3)."""

    name: str
    split: str
    n: int
    tau: float
    counts: np.ndarray  # (bins, bins) joint histogram
    edges: np.ndarray


@dataclass(frozen=True)
class ReportOptions:
    """What a report compares and how it bins, beside the reference run.

    Parameters
    ----------
    compare : sequence of paths
        Other ensembles' runs: Kendall's tau with the reference's scores (fig. 3).
    models : sequence of paths
        Other models' runs: their errors by the reference's score bins (fig. 4), and every
        difficulty score as a detector of their errors.
    mitigation : path, optional
        A `confusion mitigate` output folder whose metrics.json is shown (fig. 7).
    bins : int
        Score bins over [0, log2 C] bits.
    min_count : int
        Samples a bin needs to count in a correlation.
    gallery_per_class : int
        Easiest and hardest samples shown per class (fig. 1).
    signal : str, optional
        "FILE.csv:COLUMN" (or .parquet): a per-sample number joined by sample id, that every
        difficulty score is checked against (`read_signal`).
    ceiling_threshold : float
        Top probability of the reference's final ensemble above which a model's error that it
        shares is out of reach of a label-free score (`analyses.error_ceiling`).
    """

    compare: Sequence[str | Path] = ()
    models: Sequence[str | Path] = ()
    mitigation: str | Path | None = None
    bins: int = 20
    min_count: int = 20
    gallery_per_class: int = 6
    signal: str | None = None
    ceiling_threshold: float = 0.9


@dataclass
class ReportResult:
    """Everything the report shows, computed from run stores; `render` only draws and writes it.

    `metrics` is what metrics.json holds; the other fields are the arrays behind the figures
    and tables, so each number can be checked without the page.
    """

    reference: RunView
    metrics: dict
    split: str  # the split other runs are compared on
    detection_rows: list[list] = field(default_factory=list)
    curves: dict[str, analyses.BinnedError] = field(default_factory=dict)  # split -> own error by bin (fig. 2)
    pairs: list[TransferPair] = field(default_factory=list)  # fig. 3
    model_curves: dict[str, analyses.BinnedError] = field(default_factory=dict)  # fig. 4
    difficulty: pd.DataFrame | None = None  # every difficulty score of the reference split
    aggregate: tuple[list[float], list[float], list[str]] | None = None  # mean confusion, accuracy, names
    distribution_panels: dict = field(default_factory=dict)  # fig. 5
    error_panels: dict | None = None  # fig. 6
    gallery: tuple[np.ndarray, list, np.ndarray] | None = None  # images, rows, scores (fig. 1)
    examples: pd.DataFrame | None = None  # fig. 1 as a table, where there are no pictures to show
    signal: pd.DataFrame | None = None  # per difficulty score: agreement with an external signal
    signal_deciles: pd.DataFrame | None = None  # the signal's mean per confusion decile


def compute_report(
    run: str | Path, options: ReportOptions | None = None, *, progress: Callable[[str], Any] | None = None, **settings: Any
) -> ReportResult:
    """The paper's analyses of `run` (and of the options' compared runs and models against it);
    reads, writes nothing.

    Parameters
    ----------
    run : str or Path
        The reference run.
    options : ReportOptions, optional
        What to compare and how to bin; fields of it may also be given as keywords.
    progress : callable, optional
        Called with the name of each stage as it starts.
    **settings
        Fields of `ReportOptions` (``compare``, ``models``, ``bins``, ...), overriding `options`.

    Returns
    -------
    ReportResult
        The metrics and the arrays behind every figure and table.
    """
    options = replace(options or ReportOptions(), **settings)
    bins, min_count = options.bins, options.min_count
    if not 0 < options.ceiling_threshold < 1:
        raise ParameterError(f"{{ceiling_threshold}} must be a probability in (0, 1), got {options.ceiling_threshold}", "ceiling_threshold")
    signal_values = read_signal(options.signal) if options.signal is not None else None
    step = progress or (lambda message: None)
    reference = RunView.load(run)
    split = pick_split(reference.scores)
    result = ReportResult(reference, {"run": _run_facts(reference, bins, min_count)}, split)
    step("error identification")
    _error_identification(result, bins, min_count)
    # Other runs are only ever compared on the reference split: score just that one.
    others = [RunView.load(p, splits=[split]) for p in options.compare]
    zoo = [RunView.load(p, splits=[split]) for p in options.models]
    if others or zoo:
        step("transfer")
    _transfer(result, others, zoo, bins, min_count, options.ceiling_threshold)
    _aggregate(result, [reference, *others, *zoo])
    step("robustness")
    _robustness(result, [*zoo, *others], bins, min_count)
    result.gallery = gallery(reference, options.gallery_per_class)
    if result.gallery is None:
        result.examples = examples(reference, min(options.gallery_per_class, 3))
    if signal_values is not None:
        step("external signal")
        _signal(result, *signal_values)
    if options.mitigation is not None:
        result.metrics["mitigation"] = read_mitigation(options.mitigation)
    return result


def _run_facts(reference: RunView, bins: int, min_count: int) -> dict:
    return {
        "path": str(reference.store.path),
        "name": reference.name,
        "n_classes": reference.store.n_classes,
        "max_score_bits": reference.max_score,
        "members": reference.store.n_members,
        "recorded_epochs": reference.store.recorded_epochs,
        "config": reference.store.meta.get("config"),
        "unit": SCORE_UNIT,
        "bins": bins,
        "min_count_per_bin": min_count,
        "report_made": time.strftime("%Y-%m-%d %H:%M:%S"),
        "confusion_version": __version__,
    }


def _error_identification(result: ReportResult, bins: int, min_count: int) -> None:
    """Per split: the score's distribution, own error by bin, and the score as an error detector (3.1)."""
    reference = result.reference
    for split, scores in reference.scores.items():
        labels = reference.labels(split)
        entry = {
            "n": int(len(labels)),
            "mean_confusion": float(scores.confusion.mean()),
            "labelled": bool((labels >= 0).any()),
            # How much of the confusion is the members disagreeing (mutual information), not each unsure.
            "mean_expected_entropy": float(scores.expected_entropy.mean()),
            "mean_disagreement": float(scores.disagreement.mean()),
            "disagreement_share": float(scores.disagreement.mean() / scores.confusion.mean()) if scores.confusion.mean() > 0 else float("nan"),
        }
        known = labels >= 0
        if known.all() and known.any():
            binned = analyses.error_by_bin(
                scores.confusion, reference.member_error(split), max_score=reference.max_score, bins=bins, min_count=min_count
            )
            result.curves[split] = binned
            detection = analyses.detection_report(scores.confusion, reference.final[split], labels)
            entry.update(
                error_rate=detection["error_rate"],
                pearson_error_by_bin=binned.pearson,
                spearman_error_by_bin=binned.spearman,
                auroc_error=detection["auroc_error"],
                aurc_error=detection["aurc_error"],
                baselines=detection["baselines"],
                error_definition=detection["error_definition"],
            )
            result.detection_rows.append(
                [
                    split,
                    entry["n"],
                    entry["mean_confusion"],
                    entry["mean_disagreement"],
                    entry["error_rate"],
                    binned.pearson,
                    binned.spearman,
                    entry["auroc_error"],
                    detection["baselines"]["auroc_single_entropy"],
                    detection["baselines"]["auroc_msp"],
                    entry["aurc_error"],
                    detection["baselines"]["aurc_msp"],
                ]
            )
        else:
            result.detection_rows.append([split, entry["n"], entry["mean_confusion"], entry["mean_disagreement"]] + [None] * 8)
        result.metrics[split] = entry


def _transfer(result: ReportResult, others: list[RunView], zoo: list[RunView], bins: int, min_count: int, threshold: float) -> None:
    """Kendall's tau with each compared run; every other model's errors by the reference's scores (3.2)."""
    reference, split = result.reference, result.split
    transfer = {}
    for other in others:
        if split not in other.scores:
            continue
        in_ref, in_other = shared_samples(reference.store, other.store, split)
        a, b = reference.scores[split].confusion[in_ref], other.scores[split].confusion[in_other]
        tau = analyses.kendall_tau(a, b)
        counts, edges = analyses.joint_histogram(a, b, max_score=reference.max_score)
        result.pairs.append(TransferPair(other.name, split, int(len(in_ref)), tau, counts, edges))
        transfer[other.name] = {"kendall_tau": tau, "split": split, "n": int(len(in_ref))}
    result.metrics["transfer"] = transfer
    compared = [v for v in {str(v.store.path.resolve()): v for v in [*others, *zoo]}.values() if split in v.scores and (v.labels(split) >= 0).all()]
    if compared:
        result.difficulty = difficulty_scores(reference.store, split)
    hardness_by_score = {name: hardness(result.difficulty[name].to_numpy(), name) for name in SCORES} if compared else {}
    model_metrics: dict = {}
    by_score: dict = {}
    for view in compared:
        in_ref, in_view = analyses.align(reference.ids(split), view.ids(split))
        errors = view.member_error(split)[in_view]
        binned = analyses.error_by_bin(
            reference.scores[split].confusion[in_ref], errors, max_score=reference.max_score, bins=bins, min_count=min_count
        )
        result.model_curves[view.name] = binned
        found = analyses.transfer_report(
            {name: values[in_ref] for name, values in hardness_by_score.items()}, view.final[split].samples(in_view), view.labels(split)[in_view]
        )
        confusion_entry = found["scores"]["confusion"]
        model_metrics[view.name] = {
            "pearson_error_by_bin": binned.pearson,
            "error_rate": float(errors.mean()),
            "n": int(len(in_ref)),
            **{key: confusion_entry[key] for key in ("auroc_error", "aurc_error", "hard_error", "rest_error", "hard_to_rest")},
            "own_baselines": found["own_baselines"],
            "ceiling": analyses.error_ceiling(
                reference.scores[split].confusion[in_ref],
                reference.final[split].samples(in_ref),
                view.final[split].samples(in_view),
                view.labels(split)[in_view],
                threshold=threshold,
            ),
        }
        for name, entry in found["scores"].items():
            by_score.setdefault(name, {})[view.name] = entry
    result.metrics["models"] = model_metrics
    if by_score:
        result.metrics["difficulty"] = by_score
        result.metrics["difficulty_summary"] = _difficulty_summary(by_score, model_metrics)
        result.metrics["cost"] = _cost_of_scores(reference, split, compared)
        result.metrics["below_own_confidence"] = _below_own_confidence(reference.scores[split], by_score, model_metrics)


def _below_own_confidence(scores: Any, by_score: dict, model_metrics: dict) -> dict[str, Any]:
    """The models whose own confidence ranks their errors better than this run's confusion, and
    the run's own numbers that bear on why: its mean confusion epoch by epoch (an average over
    epochs weighs the early, unsure ones as much as the last) and what the last epoch alone gets."""
    below = {
        name: {
            "auroc_confusion": entry["auroc_error"],
            "auroc_own_msp": model_metrics[name]["own_baselines"]["auroc_msp"],
            "auroc_last_epoch_entropy": by_score.get("last_epoch_entropy", {}).get(name, {}).get("auroc_error", float("nan")),
        }
        for name, entry in by_score.get("confusion", {}).items()
        if entry["auroc_error"] < model_metrics[name]["own_baselines"]["auroc_msp"]
    }
    per_epoch = scores.per_epoch.mean(axis=1)
    return {
        "models": below,
        "n_models": len(model_metrics),
        "training_epochs": [int(e) for e in scores.training_epochs],
        "mean_confusion_per_epoch": [float(v) for v in per_epoch],
    }


def dataset_of(view: RunView) -> str | None:
    """The dataset a run was made from, where it says (trained runs, zoo models)."""
    config = view.store.meta.get("config") or {}
    return config.get("data") or (view.store.meta.get("dataset") or {}).get("name")


def _aggregate(result: ReportResult, views: list[RunView]) -> None:
    """Contribution 2: mean confusion against accuracy, over the runs that share the reference's
    dataset and split (the same samples, labelled): other runs would not be comparable."""
    split, reference = result.split, result.reference
    unique = list({str(v.store.path.resolve()): v for v in views}.values())
    dataset, ids = dataset_of(reference), set(reference.ids(split).tolist())
    labelled, left_out = [], {}
    for view in unique:
        if split not in view.scores or not (view.labels(split) >= 0).all():
            left_out[view.name] = f"no labelled {split} split"
        elif set(view.ids(split).tolist()) != ids:
            left_out[view.name] = f"other {split} samples"
        elif dataset_of(view) not in (None, dataset):
            left_out[view.name] = f"another dataset ({dataset_of(view)})"
        else:
            labelled.append(view)
    if len(labelled) < 3:
        return
    mean_confusion = [float(v.scores[split].confusion.mean()) for v in labelled]
    accuracy = [v.accuracy(split) for v in labelled]
    summary = analyses.aggregate(np.array(mean_confusion), np.array(accuracy))
    summary["runs"] = {v.name: {"mean_confusion": m, "accuracy": a} for v, m, a in zip(labelled, mean_confusion, accuracy)}
    summary.update(dataset=dataset, split=split, left_out=left_out)
    result.metrics["aggregate"] = summary
    result.aggregate = (mean_confusion, accuracy, [v.name for v in labelled])


def _robustness(result: ReportResult, candidates: list[RunView], bins: int, min_count: int) -> None:
    """Scores from fewer epochs and from one seed, against the most accurate other model's errors (3.3)."""
    reference, split = result.reference, result.split
    max_score = reference.max_score
    scores_all = reference.scores[split]
    one_seed = score_run(reference.store, split, members=[0])
    reference_model, reference_errors = reference.name, None
    labelled = [v for v in candidates if split in v.scores and (v.labels(split) >= 0).all()]
    if labelled:
        best = max(labelled, key=lambda v: v.accuracy(split))
        in_ref, in_best = analyses.align(reference.ids(split), best.ids(split))
        if len(in_ref) == len(reference.ids(split)):
            reference_model, reference_errors = best.name, best.member_error(split)[in_best]
    if reference_errors is None and (reference.labels(split) >= 0).all():
        reference_errors = reference.member_error(split)
    robust = analyses.robustness(
        scores_all,
        one_seed,
        reference_errors,
        max_score=max_score,
        bins=bins,
        min_count=min_count,
        epoch_numbers=list(scores_all.training_epochs),
    )
    robust["reference_model"] = reference_model
    robust["split"] = split
    result.metrics["robustness"] = robust
    subsets = analyses.epoch_subsets(len(scores_all.epochs))
    result.distribution_panels = {
        f"{n} seed{'s' if n != '1' else ''}": {k: sc.for_epochs(p).confusion for k, p in subsets.items()}
        for n, sc in (("1", one_seed), (str(reference.store.n_members), scores_all))
    }
    if reference_errors is not None:
        result.error_panels = {
            panel: {k: analyses.error_by_bin(v, reference_errors, max_score=max_score, bins=bins, min_count=min_count) for k, v in curves.items()}
            for panel, curves in result.distribution_panels.items()
        }


def _difficulty_summary(by_score: dict, model_metrics: dict) -> dict:
    """Per score: mean transfer AUROC and hard/rest error ratio over the compared models."""
    summary = {}
    for name, per_model in by_score.items():
        info = SCORES[name]
        summary[name] = {
            "mean_auroc_error": float(np.nanmean([m["auroc_error"] for m in per_model.values()])),
            "mean_hard_to_rest": float(np.nanmean([m["hard_to_rest"] for m in per_model.values()])),
            "n_models": len(per_model),
            "needs_labels": info.needs_labels,
            "reads": info.reads,
        }
    for baseline in ("msp", "entropy"):
        values = [m["own_baselines"][f"auroc_{baseline}"] for m in model_metrics.values()]
        summary[f"own_{baseline}"] = {
            "mean_auroc_error": float(np.nanmean(values)),
            "n_models": len(values),
            "needs_labels": False,
            "reads": "the model itself (its own last-epoch prediction)",
        }
    return summary


def _cost_of_scores(reference: RunView, split: str, compared: list) -> list[dict]:
    """Confusion from fewer epochs and members: the mean transfer AUROC each gets (the cost side)."""
    subsets, rows = {}, []
    for seeds, scores in (("all", reference.scores[split]), ("1", score_run(reference.store, split, members=[0]))):
        members = reference.store.n_members if seeds == "all" else 1
        for name, positions in analyses.epoch_subsets(len(scores.epochs), counts=(1, 5, 10, 20, 33)).items():
            subsets[f"{seeds}/{name}"] = scores.for_epochs(positions).confusion
            rows.append(
                {
                    "members": members,
                    "epochs": len(positions),
                    "predictions_recorded": members * len(positions),
                    "epochs_used": [int(scores.training_epochs[p]) for p in positions],
                }
            )
    aurocs = {key: [] for key in subsets}
    reference_ids = reference.ids(split)
    for view in compared:  # one alignment and one transfer report per model, every subset in it
        in_ref, in_view = analyses.align(reference_ids, view.ids(split))
        found = analyses.transfer_report(
            {key: values[in_ref] for key, values in subsets.items()}, view.final[split].samples(in_view), view.labels(split)[in_view]
        )
        for key in subsets:
            aurocs[key].append(found["scores"][key]["auroc_error"])
    for row, key in zip(rows, subsets):
        row["mean_auroc_error"] = float(np.nanmean(aurocs[key]))
    return rows


def _signal(result: ReportResult, column: str, ids: np.ndarray, values: np.ndarray) -> None:
    """Every difficulty score against the external signal: Spearman and Kendall correlation, the
    AUROC of the score (oriented higher = harder) for the signal's lowest quartile, and the
    signal's mean per confusion decile."""
    from scipy import stats

    reference = result.reference
    split = check_signal_join(reference.store, ids, result.split)
    in_run, in_signal = analyses.align(reference.ids(split), ids)
    signal = values[in_signal]
    table = difficulty_scores(reference.store, split) if result.difficulty is None or result.split != split else result.difficulty
    low = signal <= np.quantile(signal, 0.25)
    rows = []
    for name in SCORES:
        score = hardness(table[name].to_numpy()[in_run], name)
        known = np.isfinite(score)
        if known.sum() < 10:
            continue
        rows.append(
            {
                "score": name,
                "n": int(known.sum()),
                "spearman": float(stats.spearmanr(score[known], signal[known]).statistic),
                "kendall_tau": float(stats.kendalltau(score[known], signal[known]).statistic),
                "auroc_lowest_quartile": analyses.auroc(score[known], low[known]),
            }
        )
    result.signal = pd.DataFrame(rows)
    confusion = reference.scores[split].confusion[in_run]
    deciles = np.minimum((stats.rankdata(confusion, method="ordinal") - 1) * 10 // len(confusion), 9).astype(int)
    result.signal_deciles = pd.DataFrame(
        [
            {
                "decile": d + 1,
                "confusion_low": float(confusion[deciles == d].min()),
                "confusion_high": float(confusion[deciles == d].max()),
                "n": int((deciles == d).sum()),
                "signal_mean": float(signal[deciles == d].mean()),
                "signal_sem": float(signal[deciles == d].std(ddof=1) / math.sqrt((deciles == d).sum())) if (deciles == d).sum() > 1 else float("nan"),
            }
            for d in range(10)
            if (deciles == d).any()
        ]
    )
    result.metrics["signal"] = {
        "column": column,
        "split": split,
        "n": int(len(in_run)),
        "lowest_quartile_at": float(np.quantile(signal, 0.25)),
        "scores": {r["score"]: {k: v for k, v in r.items() if k != "score"} for r in rows},
    }
