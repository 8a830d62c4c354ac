"""`confusion report`: the paper's analyses of one run (and others to compare), as a static
HTML page with PNG/SVG figures, CSV tables and metrics.json, readable offline.

No torch here: everything is read from run stores (and, for galleries, the dataset files).
"""

from __future__ import annotations

import html
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from . import __version__, analyses, figures
from ._files import atomic_folder, check_replaceable_folder, write_json_atomic, write_table_atomic, write_text_atomic
from .datasets import load_for_run
from .difficulty import SCORES, difficulty_scores, hardness
from .errors import InputError
from .store import RunStore

SCORE_UNIT = "bits"


@dataclass
class RunView:
    """What the report needs of one run: per split, scores, labels and final predictions."""

    store: RunStore
    name: str
    scores: dict = field(default_factory=dict)  # split -> Scores (all members)
    final: dict = field(default_factory=dict)  # split -> FinalPredictions (the last committed epoch)

    @classmethod
    def load(cls, path: str | Path, name: str | None = None, splits: Sequence[str] | None = None) -> "RunView":
        store = RunStore.open(path)
        if store.keep == "topk":
            raise InputError(
                f"{path} holds top-k logs: the report needs every class probability or the reduced record; "
                f"`confusion score` and `confusion hardset` read top-k logs (with guaranteed bounds)"
            )
        view = cls(store, name or run_label(store))
        for split in splits or store.splits:
            if split not in store.splits:
                continue
            view.scores[split] = store.scores(split)
            view.final[split] = store.final_predictions(split)
        return view

    @property
    def max_score(self) -> float:
        return math.log2(self.store.n_classes)

    def labels(self, split: str) -> np.ndarray:
        return self.store.labels(split)

    def ids(self, split: str) -> np.ndarray:
        return self.store.sample_ids(split)

    def member_error(self, split: str) -> np.ndarray:
        """(samples,) top-1 error at the last epoch, averaged over members (NaN where unlabelled)."""
        labels = self.labels(split)
        errors = analyses.member_errors(self.final[split], labels).mean(axis=0)
        return np.where(labels >= 0, errors, np.nan)

    def accuracy(self, split: str) -> float:
        """Mean member accuracy at the last epoch (what a single model of this run scores)."""
        return analyses.mean_member_accuracy(self.final[split], self.labels(split))


def run_label(store: RunStore) -> str:
    """'small (cnn-s, 3 members)', or 'cnn-m (1 member)' where the directory is named after the arch."""
    arch = store.meta.get("arch") or store.meta.get("source", "run")
    name = Path(store.path).name
    members = f"{store.n_members} member{'s' if store.n_members != 1 else ''}"
    same = name in (arch, arch.replace(":", "-"))
    return f"{name} ({members})" if same else f"{name} ({arch}, {members})"


def _pick_split(splits, preferred: str = "val") -> str:
    """The split a report is about: `preferred` where the run has it, else its first (`splits`:
    names, or a mapping keyed by them)."""
    return preferred if preferred in splits else next(iter(splits))


@dataclass
class TransferPair:
    """Kendall's tau between the reference run's scores and another run's (fig. 3)."""

    name: str
    split: str
    n: int
    tau: float
    counts: np.ndarray  # (bins, bins) joint histogram
    edges: np.ndarray


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


def build_report(
    run: str | Path,
    out: str | Path,
    *,
    compare: Sequence[str | Path] = (),
    models: Sequence[str | Path] = (),
    mitigation: str | Path | None = None,
    bins: int = 20,
    min_count: int = 20,
    gallery_per_class: int = 6,
    signal: str | None = None,
    progress=None,
) -> dict:
    """Write OUT/index.html, figures, tables and metrics.json; returns the metrics.

    The page is drawn into a temporary sibling folder that replaces OUT only when complete."""
    check_replaceable_folder(out, "index.html")
    result = compute_report(
        run, compare=compare, models=models, mitigation=mitigation, bins=bins, min_count=min_count,
        gallery_per_class=gallery_per_class, signal=signal, progress=progress,
    )
    with atomic_folder(out, "index.html") as staging:
        return render_report(result, staging)


# ----------------------------------------------------------------------------- compute
def compute_report(
    run: str | Path,
    *,
    compare: Sequence[str | Path] = (),
    models: Sequence[str | Path] = (),
    mitigation: str | Path | None = None,
    bins: int = 20,
    min_count: int = 20,
    gallery_per_class: int = 6,
    signal: str | None = None,
    progress=None,
) -> ReportResult:
    """The paper's analyses of `run` (and of `compare`/`models` against it); reads, writes nothing.

    signal: "FILE.csv:COLUMN" (or .parquet), a per-sample number joined by sample id, that
    every difficulty score is checked against (see `read_signal`)."""
    signal_values = read_signal(signal) if signal is not None else None
    step = progress or (lambda message: None)
    reference = RunView.load(run)
    split = _pick_split(reference.scores)
    result = ReportResult(reference, {"run": _run_facts(reference, bins, min_count)}, split)
    step("error identification")
    _error_identification(result, bins, min_count)
    # Other runs are only ever compared on the reference split: score just that one.
    others = [RunView.load(p, splits=[split]) for p in compare]
    zoo = [RunView.load(p, splits=[split]) for p in models]
    if others or zoo:
        step("transfer")
    _transfer(result, others, zoo, bins, min_count)
    _aggregate(result, [reference, *others, *zoo])
    step("robustness")
    _robustness(result, [*zoo, *others], bins, min_count)
    result.gallery = _gallery(reference, gallery_per_class)
    if result.gallery is None:
        result.examples = _examples(reference, min(gallery_per_class, 3))
    if signal_values is not None:
        step("external signal")
        _signal(result, *signal_values)
    if mitigation is not None:
        result.metrics["mitigation"] = json.loads((Path(mitigation) / "metrics.json").read_text(encoding="utf-8"))
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
            binned = analyses.error_by_bin(scores.confusion, reference.member_error(split), max_score=reference.max_score, bins=bins, min_count=min_count)
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
                [split, entry["n"], entry["mean_confusion"], entry["mean_disagreement"], entry["error_rate"], binned.pearson, binned.spearman,
                 entry["auroc_error"], detection["baselines"]["auroc_single_entropy"], detection["baselines"]["auroc_msp"],
                 entry["aurc_error"], detection["baselines"]["aurc_msp"]]
            )
        else:
            result.detection_rows.append([split, entry["n"], entry["mean_confusion"], entry["mean_disagreement"]] + [None] * 8)
        result.metrics[split] = entry


def _transfer(result: ReportResult, others: list[RunView], zoo: list[RunView], bins: int, min_count: int) -> None:
    """Kendall's tau with each compared run; every other model's errors by the reference's scores (3.2)."""
    reference, split = result.reference, result.split
    transfer = {}
    for other in others:
        if split not in other.scores:
            continue
        in_ref, in_other = _shared_samples(reference.store, other.store, split)
        a, b = reference.scores[split].confusion[in_ref], other.scores[split].confusion[in_other]
        tau = analyses.kendall_tau(a, b)
        counts, edges = analyses.joint_histogram(a, b, max_score=reference.max_score)
        result.pairs.append(TransferPair(other.name, split, int(len(in_ref)), tau, counts, edges))
        transfer[other.name] = {"kendall_tau": tau, "split": split, "n": int(len(in_ref))}
    result.metrics["transfer"] = transfer
    compared = [
        v for v in {str(v.store.path.resolve()): v for v in [*others, *zoo]}.values()
        if split in v.scores and (v.labels(split) >= 0).all()
    ]
    if compared:
        result.difficulty = difficulty_scores(reference.store, split)
    hardness_by_score = {name: hardness(result.difficulty[name].to_numpy(), name) for name in SCORES} if compared else {}
    model_metrics: dict = {}
    by_score: dict = {}
    for view in compared:
        in_ref, in_view = analyses.align(reference.ids(split), view.ids(split))
        errors = view.member_error(split)[in_view]
        binned = analyses.error_by_bin(reference.scores[split].confusion[in_ref], errors, max_score=reference.max_score, bins=bins, min_count=min_count)
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
        }
        for name, entry in found["scores"].items():
            by_score.setdefault(name, {})[view.name] = entry
    result.metrics["models"] = model_metrics
    if by_score:
        result.metrics["difficulty"] = by_score
        result.metrics["difficulty_summary"] = _difficulty_summary(by_score, model_metrics)
        result.metrics["cost"] = _cost_of_scores(reference, split, compared)


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
    one_seed = reference.store.scores(split, members=[0])
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
        scores_all, one_seed, reference_errors, max_score=max_score, bins=bins, min_count=min_count,
        epoch_numbers=reference.store.recorded_epochs,
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


# ----------------------------------------------------------------------------- render
def render_report(result: ReportResult, out: str | Path) -> dict:
    """Draw the figures and write tables, metrics.json and index.html into `out`; returns the metrics."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = out / "tables"
    reference, metrics, split = result.reference, result.metrics, result.split
    for name, scores in reference.scores.items():
        write_table_atomic(scores.to_frame(reference.ids(name), reference.labels(name), name), tables / f"scores_{name}.csv")
    for name, binned in result.curves.items():
        write_table_atomic(pd.DataFrame(binned.to_rows()), tables / f"error_by_bin_{name}.csv")
    if result.difficulty is not None:
        write_table_atomic(result.difficulty, tables / f"difficulty_{split}.csv")
    sections = [_render_detection(result, out)]
    if result.pairs or metrics["models"]:
        sections.append(_render_transfer(result, out))
    if "difficulty" in metrics:
        sections.append(_difficulty_section(metrics, split, reference.name, out, tables))
    if result.aggregate is not None:
        sections.append(_render_aggregate(result, out))
    sections.append(_render_robustness(result, out))
    if result.gallery is not None:
        images, rows, scores = result.gallery
        files = figures.gallery(images, rows, scores, unit=SCORE_UNIT, directory=out)
        sections.insert(0, _section(
            "Easiest and hardest samples (paper figure 1)",
            "Per class (the label where known), the samples with the lowest and the highest confusion, chosen "
            "by the score alone, captioned with it in bits.",
            files,
            "",
        ))
    elif result.examples is not None and len(result.examples):
        sections.insert(0, _render_examples(result, tables))
    if result.signal is not None:
        sections.append(_render_signal(result, out))
    if "mitigation" in metrics:
        sections.append(_render_mitigation(metrics["mitigation"], out))
    write_json_atomic(out / "metrics.json", _finite(metrics))
    write_text_atomic(out / "index.html", _page(reference, metrics, sections))
    return metrics


def _pngs(files: list[str]) -> list[str]:
    return [f for f in files if f.endswith(".png")]


def _render_detection(result: ReportResult, out: Path) -> str:
    reference, max_score, min_count = result.reference, result.reference.max_score, result.metrics["run"]["min_count_per_bin"]
    files = figures.score_histograms({s: sc.confusion for s, sc in reference.scores.items()}, max_score=max_score, unit=SCORE_UNIT, directory=out)
    if result.curves:
        files += figures.error_curves(
            result.curves, unit=SCORE_UNIT, title="Top-1 error per confusion bin (own members, last epoch)", directory=out, stem="fig2_error_by_bin"
        )
    return _section(
        "Error identification without labels (paper 3.1, figure 2)",
        f"Left: how many samples get each confusion score (log scale); {_shape_of(reference.scores[result.split].confusion, max_score)} "
        f"{_diversity_sentence(result.metrics[result.split])} "
        "Right: top-1 error of the run's own members at their last recorded epoch, averaged over members, "
        f"in fixed-width bins of the score over [0, log2 C = {max_score:.2f} bits]; bins with fewer than {min_count} "
        "samples are left out. ρ is Pearson's correlation of bin centre and error. The AUROC columns treat the score as a "
        "detector of each member's final-epoch errors; the baselines are one member's own final-epoch entropy and "
        "1 − max probability (MSP). AURC: area under the risk-coverage curve, lower is better.",
        _pngs(files),
        _table(
            ["split", "samples", "mean confusion (bits)", "mean disagreement (bits)", "top-1 error", "Pearson ρ (bins)", "Spearman (bins)",
             "AUROC confusion", "AUROC single entropy", "AUROC MSP", "AURC confusion", "AURC MSP"],
            result.detection_rows,
        ),
    )


def _shape_of(scores: np.ndarray, max_score: float) -> str:
    """One sentence on how the scores spread, true for this run (no claim the data does not back)."""
    low = float((scores < 0.1 * max_score).mean())
    high = float((scores > 0.5 * max_score).mean())
    if low >= 0.5:
        return f"most samples are easy ({low:.0%} score below a tenth of the maximum; {high:.0%} above half of it)."
    if high >= 0.5:
        return f"most samples confuse the ensemble ({high:.0%} score above half of the maximum; {low:.0%} below a tenth)."
    return f"the scores spread out ({low:.0%} below a tenth of the maximum, {high:.0%} above half)."


DIVERSITY_FLOOR = 0.05  # below this share of the confusion, the members are effectively one model


def _diversity_sentence(entry: dict) -> str:
    share = entry.get("disagreement_share", float("nan"))
    if not math.isfinite(share):
        return ""
    text = (
        f"The members disagree by {entry['mean_disagreement']:.3f} bits on average (mean disagreement, the mutual "
        f"information), {share:.1%} of the mean confusion; the rest is uncertainty every member shares."
    )
    if share < DIVERSITY_FLOOR:
        text += (
            " That is so little that the ensemble is effectively one model: its score is one model's entropy. "
            "Members that differ more: `confusion train --bagging`, `--feature-subset 0.5` (feature and text data), "
            "or mixed architectures `--arch a,b,c`."
        )
    return text


def _render_transfer(result: ReportResult, out: Path) -> str:
    reference, model_metrics = result.reference, result.metrics["models"]
    files: list[str] = []
    for index, pair in enumerate(result.pairs):
        files += figures.joint_histogram(
            pair.counts, pair.edges, tau=pair.tau, names=(reference.name, pair.name), unit=SCORE_UNIT, directory=out, stem=f"fig3_transfer_{index}"
        )
    if result.model_curves:
        files += figures.error_curves(
            result.model_curves, unit=SCORE_UNIT, title=f"Other models' top-1 error per bin of {reference.name}'s confusion",
            directory=out, stem="fig4_models_error_by_bin",
        )
    return _section(
        "Confusion transfers across sizes and architectures (paper 3.2, figures 3-4)",
        "Kendall's τ between this run's scores and each compared run's, on the samples they share, with the "
        "2-D histogram of the pairs. Then, for each other model, its top-1 error (members at their last epoch) "
        f"in bins of this run's {result.split} confusion: if confusion transfers, every curve rises.",
        _pngs(files),
        _table(["compared run", "split", "samples", "Kendall τ"], [[p.name, p.split, p.n, p.tau] for p in result.pairs])
        + _table(["model", "samples", "top-1 error", "Pearson ρ (bins)"],
                 [[n, m["n"], m["error_rate"], m["pearson_error_by_bin"]] for n, m in model_metrics.items()]),
    )


def _render_aggregate(result: ReportResult, out: Path) -> str:
    mean_confusion, accuracy, names = result.aggregate
    summary = result.metrics["aggregate"]
    files = figures.aggregate_scatter(mean_confusion, accuracy, names, pearson=summary["pearson"], unit=SCORE_UNIT, directory=out)
    left_out = summary.get("left_out") or {}
    skipped = f" Left out: {'; '.join(f'{n} ({why})' for n, why in left_out.items())}." if left_out else ""
    return _section(
        "Confused models fare worse (contribution 2)",
        f"Each run's mean confusion on {summary.get('dataset') or 'the reference dataset'} {result.split} (from its own members and epochs) "
        f"against its mean member top-1 accuracy, over the {len(names)} runs on exactly these samples: Pearson ρ = {summary['pearson']:.3f}.{skipped}",
        _pngs(files),
        "",
    )


def _render_robustness(result: ReportResult, out: Path) -> str:
    robust = result.metrics["robustness"]
    reference_model = robust["reference_model"]
    files = figures.subset_distributions(result.distribution_panels, max_score=result.reference.max_score, unit=SCORE_UNIT, directory=out)
    if result.error_panels is not None:
        files += figures.subset_error_panels(result.error_panels, unit=SCORE_UNIT, reference=reference_model, directory=out)
    rows = [
        [seeds, name, entry["mean_confusion"], entry["kendall_tau_with_full"], entry.get("pearson_reference_error_by_bin")]
        for seeds, subsets in robust["epochs"].items()
        for name, entry in subsets.items()
    ]
    return _section(
        "How many epochs and seeds (paper 3.3, figures 5-6)",
        f"Scores from k epochs spaced evenly across the {len(result.reference.store.recorded_epochs)} recorded ones (the last of each "
        "of k equal stretches, as the paper's every 20th/10th/5th/3rd of 100), from member 0 alone and from all "
        f"members; their distributions, Kendall τ with the full score, and the top-1 error of {reference_model} "
        "per bin of each.",
        _pngs(files),
        _table(["seeds", "epochs", "mean confusion (bits)", "Kendall τ with full", f"Pearson ρ, error of {reference_model}"], rows),
    )


def _render_mitigation(mitigation_metrics: dict, out: Path) -> str:
    methods, bands = mitigation_metrics["methods"], mitigation_metrics["bands"]
    files = figures.mitigation_bars(methods, bands, out)
    rows = [[m, g, methods[m][g]["n"], methods[m][g]["error_mean"], methods[m][g]["error_std"]] for m in methods for g in [*bands, "overall"]]
    return _section(
        "Confusion bands as groups (paper 3.4, figure 7)",
        f"Validation samples banded by their own confusion ({mitigation_metrics.get('band_definition', '')}); "
        f"top-1 error per band, mean ± std over {mitigation_metrics.get('seeds', '?')} seeds.",
        _pngs(files),
        _table(["method", "band", "samples", "mean error", "std"], rows),
    )


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
    for seeds, scores in (("all", reference.scores[split]), ("1", reference.store.scores(split, members=[0]))):
        members = reference.store.n_members if seeds == "all" else 1
        for name, positions in analyses.epoch_subsets(len(scores.epochs), counts=(1, 5, 10, 20, 33)).items():
            subsets[f"{seeds}/{name}"] = scores.for_epochs(positions).confusion
            rows.append({
                "members": members,
                "epochs": len(positions),
                "predictions_recorded": members * len(positions),
                "epochs_used": [int(reference.store.recorded_epochs[p]) for p in positions],
            })
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


def _difficulty_section(metrics: dict, split: str, reference_name: str, out: Path, tables: Path) -> str:
    """Which difficulty score of this run best predicts every other model's errors: table and heatmap."""
    by_score, summary = metrics["difficulty"], metrics["difficulty_summary"]
    models = list(metrics["models"])
    names = list(by_score)
    grid = np.array([[by_score[n].get(m, {}).get("auroc_error", np.nan) for m in models] for n in names]
                    + [[metrics["models"][m]["own_baselines"][f"auroc_{b}"] for m in models] for b in ("msp", "entropy")])
    labels = [f"{n}{' (labels)' if SCORES[n].needs_labels else ''}" for n in names] + ["own 1 - max prob", "own entropy"]
    files = figures.score_model_heatmap(grid, labels, models, title=f"AUROC of {reference_name}'s scores for each model's errors", directory=out)
    rows = [
        [label, *grid[i], summary[key]["mean_auroc_error"], summary[key].get("mean_hard_to_rest"), summary[key]["reads"]]
        for i, (label, key) in enumerate(zip(labels, [*names, "own_msp", "own_entropy"]))
    ]
    columns = ["score", *models, "mean AUROC", "mean hard/rest error", "reads"]
    write_table_atomic(pd.DataFrame(rows, columns=columns), tables / "difficulty_transfer.csv")
    cost_rows = [[c["members"], c["epochs"], c["predictions_recorded"], c["mean_auroc_error"]] for c in metrics["cost"]]
    return _section(
        "Which difficulty score predicts another model's errors?",
        f"Each score of this run on {split}, as a detector of every other model's top-1 errors (one event per member "
        "and sample at that model's last epoch): AUROC, 1 = perfect, 0.5 = chance. Rows marked (labels) need labels; "
        "the last two rows are each model's own confidence, which needs that model to be run. Mean hard/rest error: the "
        "models' error on the top 10% by the score over their error on the rest. Below: the paper's confusion from fewer "
        "members and epochs (the last of k equal stretches; 1 epoch = the last), and the mean AUROC each gets.",
        [f for f in files if f.endswith(".png")],
        _table(columns, rows) + _table(["members", "epochs", "predictions recorded per sample", "mean AUROC"], cost_rows),
    )


def _gallery(view: RunView, per_class: int) -> tuple[np.ndarray, list, np.ndarray] | None:
    """Fig. 1's pictures for image datasets whose files are on this machine; None otherwise."""
    config = view.store.meta.get("config")
    if not config or (view.store.meta.get("dataset") or {}).get("kind", "images") != "images":
        return None
    try:
        dataset = load_for_run(config, run=view.store.path)
    except Exception:  # the data may live on another machine: the report goes on without pictures
        return None
    split = _pick_split(view.scores)
    if split not in dataset.splits:
        return None
    data_split = dataset.splits[split]
    ids = view.ids(split)
    try:
        in_data = analyses.positions(data_split.ids, ids, "the dataset")
    except InputError:  # not the data the run was made from: no pictures rather than wrong ones
        return None
    labels = view.labels(split)
    classes = labels if (labels >= 0).all() else view.final[split].ensemble_argmax
    scores = view.scores[split].confusion
    picks = analyses.gallery(scores, classes, per_class=per_class)
    shown = sorted({int(i) for p in picks.values() for side in p.values() for i in side})
    local = {sample: k for k, sample in enumerate(shown)}  # only the images shown are kept
    images = data_split.images[in_data[shown]]
    rows = [(view.store.classes[c], [local[int(i)] for i in p["easiest"]], [local[int(i)] for i in p["hardest"]]) for c, p in picks.items()]
    return images, rows, scores[shown]


EXAMPLE_TEXT_CHARS = 400  # a document is cut here on the page (tables/examples_*.csv keep it whole)


def _examples(view: RunView, per_class: int) -> pd.DataFrame:
    """Fig. 1 as a table: per class, the easiest and hardest samples by the score alone, with
    their text, metadata or source file where the run holds them."""
    split = _pick_split(view.scores)
    labels = view.labels(split)
    predicted = view.final[split].ensemble_argmax
    classes = labels if (labels >= 0).all() else predicted
    scores = view.scores[split].confusion
    names = view.store.classes
    ids = view.ids(split)
    meta = view.store.metadata(split)
    sources = view.store.sources(split)
    rows = []
    for label, picks in analyses.gallery(scores, classes, per_class=per_class).items():
        for side in ("hardest", "easiest"):
            for i in picks[side]:
                row = {
                    "class": names[label], "which": side, "sample": ids[i], "confusion": float(scores[i]),
                    "label": names[labels[i]] if labels[i] >= 0 else "", "ensemble predicts": names[predicted[i]],
                }
                if sources is not None:
                    row["source"] = sources[i]
                if meta is not None:
                    row.update({column: meta[column].iloc[i] for column in meta.columns[1:]})
                rows.append(row)
    return pd.DataFrame(rows)


def read_signal(spec: str) -> tuple[str, np.ndarray, np.ndarray]:
    """'FILE.csv:COLUMN' -> (column name, sample ids, values): a per-sample number a user trusts
    (human agreement, annotation time), joined to the run by its `sample` (or `id`) column."""
    from .datasets import read_id_table

    path_text, _, column = spec.rpartition(":")
    path = Path(path_text)
    if not path_text or not column:
        raise InputError(f"--signal takes FILE.csv:COLUMN (or .parquet), got {spec!r}")
    table, key = read_id_table(path, "--signal")
    if column not in table.columns:
        raise InputError(f"--signal {path} has no column {column!r}; it has {', '.join(map(str, table.columns[:8]))}")
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(np.float64)
    keep = np.isfinite(values)
    if keep.sum() < 10:
        raise InputError(f"--signal {path}:{column} has {int(keep.sum())} numeric values; at least 10 are needed")
    ids = table[key].to_numpy()[keep]
    if len(set(ids.tolist())) != len(ids):
        raise InputError(f"--signal {path}: a sample id appears twice")
    return column, ids, values[keep]


def _signal(result: ReportResult, column: str, ids: np.ndarray, values: np.ndarray) -> None:
    """Every difficulty score against the external signal: Spearman and Kendall correlation, the
    AUROC of the score (oriented higher = harder) for the signal's lowest quartile, and the
    signal's mean per confusion decile."""
    from scipy import stats

    reference = result.reference
    matches = {name: int(np.isin(reference.ids(name), ids).sum()) for name in reference.scores}
    split = result.split if matches[result.split] >= 10 else max(matches, key=matches.get)  # the reference split first
    in_run, in_signal = analyses.align(reference.ids(split), ids)
    if len(in_run) < 10:
        raise InputError(f"--signal names {len(in_run)} samples of the run; at least 10 must match its sample ids")
    signal = values[in_signal]
    table = difficulty_scores(reference.store, split) if result.difficulty is None or result.split != split else result.difficulty
    low = signal <= np.quantile(signal, 0.25)
    rows = []
    for name, info in SCORES.items():
        score = hardness(table[name].to_numpy()[in_run], name)
        known = np.isfinite(score)
        if known.sum() < 10:
            continue
        rows.append({
            "score": name, "n": int(known.sum()),
            "spearman": float(stats.spearmanr(score[known], signal[known]).statistic),
            "kendall_tau": float(stats.kendalltau(score[known], signal[known]).statistic),
            "auroc_lowest_quartile": analyses.auroc(score[known], low[known]),
        })
    result.signal = pd.DataFrame(rows)
    confusion = reference.scores[split].confusion[in_run]
    deciles = np.minimum((stats.rankdata(confusion, method="ordinal") - 1) * 10 // len(confusion), 9).astype(int)
    result.signal_deciles = pd.DataFrame([
        {"decile": d + 1, "confusion_low": float(confusion[deciles == d].min()), "confusion_high": float(confusion[deciles == d].max()),
         "n": int((deciles == d).sum()), "signal_mean": float(signal[deciles == d].mean()),
         "signal_sem": float(signal[deciles == d].std(ddof=1) / math.sqrt((deciles == d).sum())) if (deciles == d).sum() > 1 else float("nan")}
        for d in range(10) if (deciles == d).any()
    ])
    result.metrics["signal"] = {
        "column": column, "split": split, "n": int(len(in_run)), "lowest_quartile_at": float(np.quantile(signal, 0.25)),
        "scores": {r["score"]: {k: v for k, v in r.items() if k != "score"} for r in rows},
    }


def _render_examples(result: ReportResult, tables: Path) -> str:
    examples = result.examples
    write_table_atomic(examples, tables / f"examples_{result.split}.csv")
    shown = [c for c in examples.columns if c != "source" or "text" not in examples.columns][:10]

    def cell(value):
        text = "" if value is None or (isinstance(value, float) and not math.isfinite(value)) else value
        if isinstance(text, str) and len(text) > EXAMPLE_TEXT_CHARS:
            return text[:EXAMPLE_TEXT_CHARS].rstrip() + " …"
        return text

    what = "documents" if "text" in examples.columns else "samples"
    extra = "" if len(examples.columns) > 6 else " The run holds no text or metadata for them (give some with `confusion import --meta`)."
    return _section(
        "Easiest and hardest samples (paper figure 1)",
        f"Per class (the label where known, else the ensemble's prediction), the {what} with the highest and the lowest "
        f"confusion on {result.split}, chosen by the score alone; the score in bits.{extra} Whole rows: "
        f"tables/examples_{result.split}.csv.",
        [],
        _table(shown, [[cell(v) for v in row] for row in examples[shown].itertuples(index=False)]),
    )


def _render_signal(result: ReportResult, out: Path) -> str:
    facts = result.metrics["signal"]
    deciles = result.signal_deciles
    files = figures.signal_by_decile(deciles, column=facts["column"], unit=SCORE_UNIT, directory=out)
    write_table_atomic(result.signal, out / "tables" / "signal.csv")
    write_table_atomic(deciles, out / "tables" / "signal_by_decile.csv")
    return _section(
        f"Against an external signal: {facts['column']}",
        f"{facts['n']} {facts['split']} samples joined by id. Per difficulty score (oriented so higher = harder): its Spearman "
        f"and Kendall correlation with {facts['column']}, and its AUROC for the samples in the lowest quartile of "
        f"{facts['column']} (at or below {facts['lowest_quartile_at']:.4g}); 0.5 is chance. The figure: the mean of "
        f"{facts['column']} (± one standard error) in each decile of confusion.",
        _pngs(files),
        _table(["score", "samples", "Spearman", "Kendall τ", "AUROC, lowest quartile"],
               [[r.score, r.n, r.spearman, r.kendall_tau, r.auroc_lowest_quartile] for r in result.signal.itertuples()]),
    )


def _finite(value):
    """JSON has no NaN: write null instead."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


def _format(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, (float, np.floating)):
        return "–" if not math.isfinite(float(value)) else f"{float(value):.4f}"
    return str(value)


def _table(columns: list[str], rows: list[list]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_format(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(title: str, text: str, images: list[str], table_html: str) -> str:
    pictures = "".join(f'<img src="{html.escape(name)}" alt="{html.escape(name)}">' for name in images)
    return f"<section><h2>{html.escape(title)}</h2><p>{html.escape(text)}</p><div class=figs>{pictures}</div>{table_html}</section>"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:1em 0;font-size:.85em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.figs img{max-width:100%;margin:.4em .4em .4em 0;vertical-align:top}
.settings{font-size:.8em;background:#fafafa;border:1px solid #eee;padding:.6em;white-space:pre-wrap;font-family:monospace}
"""


def _page(view: RunView, metrics: dict, sections: list[str]) -> str:
    run = metrics["run"]
    epochs = run["recorded_epochs"]
    settings = json.dumps(
        {
            "run": run["path"],
            "config": run["config"],
            "recorded_epochs": f"{len(epochs)}: {epochs[0]}..{epochs[-1]}" if len(epochs) > 3 else epochs,
            "versions": view.store.meta.get("versions"),
        },
        indent=2,
    )
    summary = (
        f"{view.store.n_members} members, {len(run['recorded_epochs'])} recorded epochs, {run['n_classes']} classes "
        f"({', '.join(view.store.classes)}); scores in bits, range 0 to {run['max_score_bits']:.3f}."
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>confusion report: {html.escape(view.name)}</title><style>{CSS}</style></head><body>"
        f"<h1>confusion report: {html.escape(view.name)}</h1><p>{html.escape(summary)}</p>"
        + "".join(sections)
        + "<h2>What produced this page</h2>"
        f"<div class=settings>{html.escape(settings)}</div>"
        f"<p>confusion {html.escape(__version__)}, {html.escape(run['report_made'])}. Tables as CSV in tables/, numbers in metrics.json.</p>"
        "</body></html>\n"
    )


def _shared_samples(reference: RunStore, other: RunStore, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the samples of `split` two runs share (as analyses.align); refused below 2."""
    in_ref, in_other = analyses.align(reference.sample_ids(split), other.sample_ids(split))
    if len(in_ref) < 2:
        raise InputError(f"--compare {other.path} shares {len(in_ref)} {split} samples with {reference.path}; Kendall tau needs the same samples")
    return in_ref, in_other


def check_inputs(run, compare, models, mitigation) -> None:
    """Everything a report reads opens, and every --compare run shares samples with `run`,
    before any work."""
    stores = [RunStore.open(path) for path in [run, *compare, *models]]  # a one-line RunStoreError for anything that is not a run
    for store in stores:  # a damaged id or label array is named now, not after half the figures
        for split in store.splits:
            store.sample_ids(split)
            store.labels(split)
    reference = stores[0]
    split = _pick_split(reference.splits)
    for other in stores[1 : 1 + len(compare)]:
        if split in other.splits:
            _shared_samples(reference, other, split)
    if mitigation is not None and not (Path(mitigation) / "metrics.json").is_file():
        raise InputError(f"--mitigation {mitigation} has no metrics.json (make it with `confusion mitigate`)")
