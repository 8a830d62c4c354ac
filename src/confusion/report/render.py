"""The report's page: figures, CSV tables, metrics.json and index.html drawn from a computed
`ReportResult`; no analysis happens here.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__, figures
from .._files import write_json_atomic, write_table_atomic, write_text_atomic
from ..difficulty import SCORES
from .compute import ReportResult
from .views import SCORE_UNIT, RunView

__all__ = ["finite", "render_report"]


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
        sections.insert(
            0,
            _section(
                "Easiest and hardest samples (paper figure 1)",
                "Per class (the label where known), the samples with the lowest and the highest confusion, chosen "
                "by the score alone, captioned with it in bits.",
                files,
                "",
            ),
        )
    elif result.examples is not None and len(result.examples):
        # Documents or metadata are worth reading first; bare sample ids (a Recorder run) go last.
        sections.insert(0 if _described(result.examples) else len(sections), _render_examples(result, tables))
    if result.signal is not None:
        sections.append(_render_signal(result, out))
    if "mitigation" in metrics:
        sections.append(_render_mitigation(metrics["mitigation"], out))
    write_json_atomic(out / "metrics.json", finite(metrics))
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
            [
                "split",
                "samples",
                "mean confusion (bits)",
                "mean disagreement (bits)",
                "top-1 error",
                "Pearson ρ (bins)",
                "Spearman (bins)",
                "AUROC confusion",
                "AUROC single entropy",
                "AUROC MSP",
                "AURC confusion",
                "AURC MSP",
            ],
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
            result.model_curves,
            unit=SCORE_UNIT,
            title=f"Other models' top-1 error per bin of {reference.name}'s confusion",
            directory=out,
            stem="fig4_models_error_by_bin",
        )
    return _section(
        "Confusion transfers across sizes and architectures (paper 3.2, figures 3-4)",
        "Kendall's τ between this run's scores and each compared run's, on the samples they share, with the "
        "2-D histogram of the pairs. Then, for each other model, its top-1 error (members at their last epoch) "
        f"in bins of this run's {result.split} confusion: if confusion transfers, every curve rises.",
        _pngs(files),
        _table(["compared run", "split", "samples", "Kendall τ"], [[p.name, p.split, p.n, p.tau] for p in result.pairs])
        + _table(
            ["model", "samples", "top-1 error", "Pearson ρ (bins)"],
            [[n, m["n"], m["error_rate"], m["pearson_error_by_bin"]] for n, m in model_metrics.items()],
        ),
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


def _difficulty_section(metrics: dict, split: str, reference_name: str, out: Path, tables: Path) -> str:
    """Which difficulty score of this run best predicts every other model's errors: table and heatmap."""
    by_score, summary = metrics["difficulty"], metrics["difficulty_summary"]
    models = list(metrics["models"])
    names = list(by_score)
    grid = np.array(
        [[by_score[n].get(m, {}).get("auroc_error", np.nan) for m in models] for n in names]
        + [[metrics["models"][m]["own_baselines"][f"auroc_{b}"] for m in models] for b in ("msp", "entropy")]
    )
    labels = [f"{n}{' (labels)' if SCORES[n].needs_labels else ''}" for n in names] + ["own 1 - max prob", "own entropy"]
    files = figures.score_model_heatmap(grid, labels, models, title=f"AUROC of {reference_name}'s scores for each model's errors", directory=out)
    rows = [
        [label, *grid[i], summary[key]["mean_auroc_error"], summary[key].get("mean_hard_to_rest"), summary[key]["reads"]]
        for i, (label, key) in enumerate(zip(labels, [*names, "own_msp", "own_entropy"]))
    ]
    columns = ["score", *models, "mean AUROC", "mean hard/rest error", "reads"]
    write_table_atomic(pd.DataFrame(rows, columns=columns), tables / "difficulty_transfer.csv")
    cost_rows = [[c["members"], c["epochs"], c["predictions_recorded"], c["mean_auroc_error"]] for c in metrics["cost"]]
    ceilings = {m: metrics["models"][m].get("ceiling", {}) for m in models}
    ceiling_rows = [
        [m, c.get("shared_confident_error_share"), c.get("auroc_ceiling"), by_score.get("confusion", {}).get(m, {}).get("auroc_error")]
        for m, c in ceilings.items()
    ]
    threshold = next((c["threshold"] for c in ceilings.values() if "threshold" in c), 0.9)
    return _section(
        "Which difficulty score predicts another model's errors?",
        f"Each score of this run on {split}, as a detector of every other model's top-1 errors (one event per member "
        "and sample at that model's last epoch): AUROC, 1 = perfect, 0.5 = chance. Rows marked (labels) need labels; "
        "the last two rows are each model's own confidence, which needs that model to be run. Mean hard/rest error: the "
        "models' error on the top 10% by the score over their error on the rest. Below: the paper's confusion from fewer "
        "members and epochs (the last of k equal stretches; 1 epoch = the last), and the mean AUROC each gets."
        + _why_below(metrics.get("below_own_confidence")),
        [f for f in files if f.endswith(".png")],
        _table(columns, rows)
        + _table(["members", "epochs", "predictions recorded per sample", "mean AUROC"], cost_rows)
        + f"<p>The ceiling: how much of each model's error a label-free score of this run can see at all. An error is out "
        f"of reach where this run's final ensemble predicts the same wrong class with top probability above {threshold:g} "
        "(shared, confident); the ceiling AUROC is that of a score that ranks every other error first and keeps confusion's "
        "order elsewhere.</p>" + _table(["model", "shared confident error share", "AUROC ceiling", "AUROC confusion"], ceiling_rows),
    )


def _why_below(facts: dict | None) -> str:
    """One sentence, from the run's own numbers, where its confusion ranks a model's errors below
    that model's own confidence."""
    if not facts or not facts["models"]:
        return ""
    models = facts["models"]
    names = ", ".join(list(models)[:4]) + (" and others" if len(models) > 4 else "")
    mean = lambda key: float(np.nanmean([m[key] for m in models.values()]))  # noqa: E731
    sentence = (
        f" For {len(models)} of {facts['n_models']} models ({names}), this run's confusion ranks their errors below their own "
        f"confidence (mean AUROC {mean('auroc_confusion'):.3f} against {mean('auroc_own_msp'):.3f}): they are well "
        "calibrated, their own uncertainty already marks what they get wrong, and a score from another run can only approach it."
    )
    per_epoch, epochs = facts["mean_confusion_per_epoch"], facts["training_epochs"]
    if len(per_epoch) > 1 and per_epoch[0] > 1.5 * per_epoch[-1]:
        sentence += (
            f" Here the average over epochs also weighs the early, unsure epochs as much as the last: the mean confusion is "
            f"{per_epoch[0]:.2f} bits at epoch {epochs[0]} and {per_epoch[-1]:.2f} at epoch {epochs[-1]}, and the last epoch's "
            f"entropy alone gets a mean AUROC of {mean('auroc_last_epoch_entropy'):.3f} for these models."
        )
    return sentence


EXAMPLE_TEXT_CHARS = 400  # a document is cut here on the page (tables/examples_*.csv keep it whole)


def _described(examples: pd.DataFrame) -> bool:
    """Whether the examples hold more than the six columns every run has (class, which, sample,
    confusion, label, ensemble predicts): a source file, a text, metadata."""
    return len(examples.columns) > 6


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
    extra = "" if _described(examples) else " The run holds no text or metadata for them (give some with `confusion import --meta`)."
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
        _table(
            ["score", "samples", "Spearman", "Kendall τ", "AUROC, lowest quartile"],
            [[r.score, r.n, r.spearman, r.kendall_tau, r.auroc_lowest_quartile] for r in result.signal.itertuples()],
        ),
    )


def finite(value: Any) -> Any:
    """JSON has no NaN: write null instead."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, np.generic):
        return finite(value.item())
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

    def cell(value: Any) -> str:  # numbers line up on the right, words read from the left
        number = isinstance(value, int | float | np.integer | np.floating) or value is None
        return f"<td{'' if number else ' class=t'}>{html.escape(_format(value))}</td>"

    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    # A wide table (16 columns of scores) scrolls inside its box instead of wrapping into a wall of narrow cells.
    return f"<div class=wide><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _section(title: str, text: str, images: list[str], table_html: str) -> str:
    pictures = "".join(f'<img src="{html.escape(name)}" alt="{html.escape(name)}">' for name in images)
    return f"<section><h2>{html.escape(title)}</h2><p>{html.escape(text)}</p><div class=figs>{pictures}</div>{table_html}</section>"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:1em 0;font-size:.85em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4;white-space:nowrap}td:first-child,th:first-child,td.t{text-align:left}.figs img{max-width:100%;margin:.4em .4em .4em 0;vertical-align:top}
.wide{overflow-x:auto;max-width:100%}td{white-space:nowrap}td.t{white-space:normal;min-width:12em}p{text-align:left}
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
        f"<h1>confusion report: {html.escape(view.name)}</h1><p>{html.escape(summary)}</p>" + "".join(sections) + "<h2>What produced this page</h2>"
        f"<div class=settings>{html.escape(settings)}</div>"
        f"<p>confusion {html.escape(__version__)}, {html.escape(run['report_made'])}. Tables as CSV in tables/, numbers in metrics.json.</p>"
        "</body></html>\n"
    )
