"""The paper's figures, drawn with matplotlib (Agg: no display needed).

Each function takes arrays, writes `<stem>.png` (and `<stem>.svg` where cheap) into a
directory and returns the file names it wrote. Every score axis is labelled in its unit.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .analyses import BinnedError

__all__ = [
    "DPI",
    "aggregate_scatter",
    "error_curves",
    "gallery",
    "joint_histogram",
    "mitigation_bars",
    "score_histograms",
    "score_model_heatmap",
    "signal_by_decile",
    "subset_distributions",
    "subset_error_panels",
]

DPI = 110

# matplotlib.pyplot, imported by the first figure drawn: every command imports this module
# through the report, and the 0.3 s import is paid only by those that draw.
plt = None


def _plain_text(draw):
    """Draw with the Agg backend (no display needed) and mathtext off: names that come from users
    (classes, runs, columns) may hold `$`."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        global plt
        if plt is None:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot

            plt = matplotlib.pyplot
        with plt.rc_context({"text.parse_math": False}):
            return draw(*args, **kwargs)

    return wrapper


def _plain_log_ticks(figure) -> None:
    """Log-scale ticks (axes and colour bars) as plain numbers: with mathtext off (user names
    may hold `$`), matplotlib's own log labels would print as `$\\mathdefault{10^{3}}$`."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    for axes in figure.axes:
        for axis in (axes.xaxis, axes.yaxis):
            if axis.get_scale() == "log":
                axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
                axis.set_minor_formatter(NullFormatter())


def _save(figure, directory: Path, stem: str, svg: bool = True) -> list[str]:
    _plain_log_ticks(figure)
    directory.mkdir(parents=True, exist_ok=True)
    names = [f"{stem}.png"]
    figure.savefig(directory / names[0], dpi=DPI, bbox_inches="tight")
    if svg:
        names.append(f"{stem}.svg")
        figure.savefig(directory / names[1], bbox_inches="tight")
    plt.close(figure)
    return names


@_plain_text
def score_histograms(
    scores_by_split: dict[str, np.ndarray], *, max_score: float, unit: str, directory: Path, stem: str = "fig2_distribution"
) -> list[str]:
    """Fig. 2 left: distribution of confusion scores per split, log-scale counts."""
    figure, axis = plt.subplots(figsize=(6, 3.6))
    edges = np.linspace(0, max_score, 41)
    for split, scores in scores_by_split.items():
        axis.hist(scores, bins=edges, histtype="step", linewidth=1.6, label=f"{split} (n={len(scores)})")
    axis.set_yscale("log")
    axis.set_xlabel(f"confusion score ({unit})")
    axis.set_ylabel("samples (log scale)")
    axis.set_title("Distribution of confusion scores")
    axis.legend()
    return _save(figure, directory, stem)


@_plain_text
def error_curves(curves: dict[str, BinnedError], *, unit: str, title: str, directory: Path, stem: str, ylabel: str = "top-1 error") -> list[str]:
    """Fig. 2 right / fig. 4 / fig. 6: top-1 error per score bin, one curve each, Pearson in the legend."""
    figure, axis = plt.subplots(figsize=(6.4, 4))
    _curves(axis, curves, "")
    axis.set_xlabel(f"confusion score bin ({unit})")
    axis.set_ylabel(ylabel)
    axis.set_ylim(-0.02, 1.02)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    return _save(figure, directory, stem)


def _curves(axis, curves: dict[str, BinnedError], suffix: str) -> None:
    """Error per bin, one line each; a curve with fewer than two bins that hold enough samples is
    said in the panel, not drawn as a lone dot with "ρ=nan"."""
    sparse = []
    for name, binned in curves.items():
        used = binned.used
        if used.sum() < 2:
            sparse.append(f"{name}{suffix}")
            continue
        rho = f"ρ={binned.pearson:.2f}" if np.isfinite(binned.pearson) else "ρ: too few bins"
        axis.plot(binned.centers[used], binned.error[used], marker="o", markersize=3, label=f"{name}{suffix} ({rho})")
    if sparse:
        axis.text(0.02, 0.5, "too few samples per bin to draw:\n" + "\n".join(sparse), transform=axis.transAxes, fontsize=8, color="grey")
    if len(sparse) < len(curves):
        axis.legend(fontsize=8, loc="upper left")


@_plain_text
def joint_histogram(counts: np.ndarray, edges: np.ndarray, *, tau: float, names: tuple[str, str], unit: str, directory: Path, stem: str) -> list[str]:
    """Fig. 3: 2-D histogram of two runs' scores on the same samples, with Kendall's tau."""
    figure, axis = plt.subplots(figsize=(4.8, 4.4))
    shown = np.where(counts > 0, counts, np.nan)
    from matplotlib.colors import LogNorm

    mesh = axis.pcolormesh(
        edges, edges, shown.T, norm=LogNorm(vmin=1, vmax=max(1, np.nanmax(shown) if np.isfinite(shown).any() else 1)), cmap="viridis"
    )
    figure.colorbar(mesh, ax=axis, label="samples")
    axis.plot([edges[0], edges[-1]], [edges[0], edges[-1]], color="grey", linewidth=0.8, linestyle="--")
    axis.set_xlabel(f"{names[0]} confusion ({unit})")
    axis.set_ylabel(f"{names[1]} confusion ({unit})")
    axis.set_title(f"Kendall τ = {tau:.3f}")
    return _save(figure, directory, stem)


@_plain_text
def aggregate_scatter(
    mean_confusion: Sequence[float],
    accuracy: Sequence[float],
    names: Sequence[str],
    *,
    pearson: float,
    unit: str,
    directory: Path,
    stem: str = "aggregate",
) -> list[str]:
    """Contribution 2: each run's mean confusion against its accuracy."""
    figure, axis = plt.subplots(figsize=(5.2, 4))
    axis.scatter(mean_confusion, accuracy)
    for x, y, name in zip(mean_confusion, accuracy, names):
        axis.annotate(name, (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
    axis.set_xlabel(f"mean confusion ({unit})")
    axis.set_ylabel("top-1 accuracy")
    axis.set_title(f"Confused models fare worse (Pearson ρ = {pearson:.2f})")
    axis.grid(alpha=0.3)
    return _save(figure, directory, stem)


@_plain_text
def subset_distributions(
    panels: dict[str, dict[str, np.ndarray]], *, max_score: float, unit: str, directory: Path, stem: str = "fig5_epochs_seeds"
) -> list[str]:
    """Fig. 5: score distributions from k epochs, one panel per number of seeds."""
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), sharey=True, squeeze=False)
    edges = np.linspace(0, max_score, 41)
    for axis, (panel, curves) in zip(axes[0], panels.items()):
        for name, scores in curves.items():
            axis.hist(scores, bins=edges, histtype="step", linewidth=1.4, label=f"{name} epochs")
        axis.set_yscale("log")
        axis.set_xlabel(f"confusion score ({unit})")
        axis.set_title(panel)
        axis.legend(fontsize=8)
    axes[0][0].set_ylabel("samples (log scale)")
    return _save(figure, directory, stem)


@_plain_text
def subset_error_panels(
    panels: dict[str, dict[str, BinnedError]], *, unit: str, reference: str, directory: Path, stem: str = "fig6_epochs_seeds_error"
) -> list[str]:
    """Fig. 6: a reference model's error per bin of scores from k epochs, per number of seeds."""
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), sharey=True, squeeze=False)
    for axis, (panel, curves) in zip(axes[0], panels.items()):
        _curves(axis, curves, " epochs")
        axis.set_xlabel(f"confusion score bin ({unit})")
        axis.set_title(panel)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"top-1 error of {reference}")
    return _save(figure, directory, stem)


@_plain_text
def gallery(
    images: np.ndarray, rows: list[tuple[str, list[int], list[int]]], scores: np.ndarray, *, unit: str, directory: Path, stem: str = "fig1_gallery"
) -> list[str]:
    """Fig. 1: per class, the easiest (left) and hardest (right) samples, captioned with the score."""
    per_side = max(max(len(e), len(h)) for _, e, h in rows)
    columns = 2 * per_side
    figure, axes = plt.subplots(len(rows), columns, figsize=(columns * 0.95, len(rows) * 1.15), squeeze=False)
    for row, (name, easiest, hardest) in enumerate(rows):
        for column in range(columns):
            axis = axes[row][column]
            axis.axis("off")
            side = easiest if column < per_side else hardest
            position = column if column < per_side else column - per_side
            if position >= len(side):
                continue
            index = side[position]
            picture = images[index]
            picture = picture[0] if picture.shape[0] == 1 else picture.transpose(1, 2, 0)
            axis.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=255)
            axis.set_title(f"{scores[index]:.2f}", fontsize=7)
        axes[row][0].text(-0.15, 0.5, name, transform=axes[row][0].transAxes, ha="right", va="center", fontsize=8)
    figure.suptitle(f"easiest (left) and hardest (right) by confusion alone ({unit})", fontsize=9)
    return _save(figure, directory, stem, svg=False)


@_plain_text
def mitigation_bars(table: dict[str, dict[str, dict]], bands: list[str], directory: Path, stem: str = "fig7_mitigation") -> list[str]:
    """Fig. 7: top-1 error per confusion band and overall, per method, mean ± std over seeds."""
    methods = list(table)
    groups = [*bands, "overall"]
    width = 0.8 / max(1, len(methods))
    figure, axis = plt.subplots(figsize=(1.6 + 1.4 * len(groups), 3.8))
    for k, method in enumerate(methods):
        means = [table[method][g]["error_mean"] for g in groups]
        spreads = [table[method][g]["error_std"] for g in groups]
        positions = np.arange(len(groups)) + (k - (len(methods) - 1) / 2) * width
        bars = axis.bar(positions, means, width, yerr=spreads, capsize=3, label=method)
        for bar, value in zip(bars, means):
            axis.annotate(
                f"{value:.1%}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
                xytext=(0, 2),
                textcoords="offset points",
            )
    axis.set_xticks(np.arange(len(groups)), groups)
    axis.set_ylabel("top-1 error (val)")
    axis.set_title("Confusion bands as groups: error per band")
    axis.legend(fontsize=8)
    return _save(figure, directory, stem)


@_plain_text
def score_model_heatmap(
    values: np.ndarray, scores: Sequence[str], models: Sequence[str], *, title: str, directory: Path, stem: str = "difficulty_transfer"
) -> list[str]:
    """A (scores x models) table of AUROCs as a heatmap, each cell labelled with its value."""
    values = np.asarray(values, dtype=np.float64)
    figure, axis = plt.subplots(figsize=(1.2 + 0.9 * len(models), 0.9 + 0.38 * len(scores)))
    image = axis.imshow(
        values,
        cmap="viridis",
        aspect="auto",
        vmin=np.nanmin(values) if np.isfinite(values).any() else 0.5,
        vmax=np.nanmax(values) if np.isfinite(values).any() else 1.0,
    )
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            axis.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=7, color="white" if value < np.nanmean(values) else "black")
    axis.set_xticks(range(len(models)), [str(m) for m in models], rotation=35, ha="right", fontsize=8)
    axis.set_yticks(range(len(scores)), [str(s) for s in scores], fontsize=8)
    axis.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axis, fraction=0.03, label="AUROC for the model's errors")
    return _save(figure, directory, stem)


@_plain_text
def signal_by_decile(deciles, *, column: str, unit: str, directory: Path, stem: str = "signal_by_decile") -> list[str]:
    """An external per-sample signal's mean (± one standard error) per decile of confusion."""
    figure, axis = plt.subplots(figsize=(6, 3.6))
    centres = (deciles["confusion_low"] + deciles["confusion_high"]) / 2
    axis.errorbar(deciles["decile"], deciles["signal_mean"], yerr=deciles["signal_sem"].fillna(0), marker="o", capsize=3)
    axis.set_xticks(deciles["decile"])
    axis.set_xticklabels([f"{d}\n{c:.2f}" for d, c in zip(deciles["decile"], centres)], fontsize=7)
    axis.set_xlabel(f"confusion decile (1 = easiest) and its centre ({unit})")
    axis.set_ylabel(f"mean {column}")
    axis.set_title(f"{column} by confusion decile")
    axis.grid(alpha=0.3)
    return _save(figure, directory, stem)
