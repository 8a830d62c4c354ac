"""Hard sets: the most confusing samples of a split, chosen without labels, as a manifest.

A manifest is a table with one row per chosen sample: `sample` (id), `split`, `confusion`
(bits), `confusion_normalized`, `rank` (1 = hardest by the chosen score), `label` (-1 when
unknown), `predicted` (the ensemble's class at the last epoch), `source` (file path, when the
data came from files), `score` (the name of the score that chose it, `confusion` by default),
`score_value` and `score_unit`, and `unit` (of the confusion column: bits), then the run's
per-sample metadata (a document's `text`, columns given to `import --meta`). From top-k logs
(`confusion.topk`) it also has `confusion_low`/`confusion_high`, the guaranteed bounds, and
`certain`: whether the sample is chosen whatever the mass the logs left out (`certain_choice`).
`materialize`
writes the chosen images as class folders or one .npz that other tools read, and
`materialize_texts` the chosen documents as one CSV. numpy and pandas only.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ._files import atomic_folder
from .analyses import positions
from .difficulty import SCORES, check_label_free, label_free_score
from .errors import InputError, ParameterError
from .runscores import score_run
from .store import RunStore

__all__ = [
    "MANIFEST_COLUMNS",
    "certain_choice",
    "check_selection",
    "class_folders",
    "images_for",
    "manifest",
    "materialize",
    "materialize_texts",
    "read_manifest",
    "select",
]

MANIFEST_COLUMNS = [
    "sample",
    "split",
    "confusion",
    "confusion_normalized",
    "rank",
    "label",
    "predicted",
    "source",
    "score",
    "score_value",
    "score_unit",
    "unit",
]


def check_selection(top: float | None, threshold: float | None) -> None:
    """The rule of a hard set: one of --top (a fraction) or --threshold (a score every
    label-free score can reach: they are all >= 0)."""
    if (top is None) == (threshold is None):
        raise ParameterError("give exactly one of {top} FRACTION or {threshold} BITS", "top", "threshold")
    if top is not None and not 0.0 < top <= 1.0:
        raise ParameterError(f"{{top}} must be a fraction in (0, 1], got {top}", "top")
    if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
        raise ParameterError(f"{{threshold}} must be a number >= 0 in the score's unit (bits for confusion), got {threshold}", "threshold")


def select(scores: np.ndarray, *, top: float | None = None, threshold: float | None = None, groups: np.ndarray | None = None) -> np.ndarray:
    """Positions of the chosen samples, most confusing first.

    top: fraction in (0, 1]: the ceil(top * n) highest scores (within each group when
    `groups` is given, e.g. classes, so every class keeps its share).
    threshold: every sample with score >= threshold (same unit as `scores`).
    Ties are broken by sample order, so the choice is reproducible.
    """
    scores = np.asarray(scores, dtype=np.float64)
    check_selection(top, threshold)
    if threshold is not None:
        chosen = np.flatnonzero(scores >= threshold)
    else:
        partitions = [np.arange(len(scores))] if groups is None else [np.flatnonzero(groups == g) for g in np.unique(groups)]
        chosen_parts = []
        for part in partitions:
            order = part[np.argsort(-scores[part], kind="stable")]
            chosen_parts.append(order[: math.ceil(top * len(part))])
        chosen = np.concatenate(chosen_parts) if chosen_parts else np.array([], dtype=np.intp)
    return chosen[np.argsort(-scores[chosen], kind="stable")]


def manifest(
    store: RunStore, split: str, *, top: float | None = None, threshold: float | None = None, per_class: bool = False, score: str = "confusion"
) -> pd.DataFrame:
    """The hard-set manifest of one split of a run (see the module docstring).

    score: the label-free difficulty score that ranks the samples (`confusion.difficulty`);
    `threshold` is in its unit. The manifest's `score` and `score_value` columns name it and
    give its value; `confusion` is there whatever ranked them.
    """
    check_selection(top, threshold)  # before any scoring
    check_label_free(score)
    store.chosen_splits([split])
    if store.layout.bounded and score != "confusion":
        raise InputError(f"{store.path} holds top-k logs: hard sets rank by confusion (with bounds), not {score}")
    scores = score_run(store, split, decomposition=False)  # confusion only: one log per class of the average
    values = scores.confusion if score == "confusion" else label_free_score(store, split, score)
    labels = store.labels(split)
    predicted = store.final_predictions(split).ensemble_argmax
    # Per class by the label where every sample has one, else by the ensemble's prediction.
    groups = (labels if (labels >= 0).all() else predicted) if per_class else None
    chosen = select(values, top=top, threshold=threshold, groups=groups)
    sources = store.sources(split)
    table = pd.DataFrame(
        {
            "sample": store.sample_ids(split)[chosen],
            "split": split,
            "confusion": scores.confusion[chosen],
            "confusion_normalized": scores.confusion_normalized[chosen],
            "rank": np.arange(1, len(chosen) + 1),
            "label": labels[chosen],
            "predicted": predicted[chosen],
            "source": sources[chosen] if sources is not None else "",
            "score": score,
            "score_value": values[chosen],
            "score_unit": SCORES[score].unit,
            "unit": scores.unit,  # of the confusion column
        },
        columns=MANIFEST_COLUMNS,
    )
    if scores.bounded:  # top-k logs: which choices hold whatever the missing probability mass was
        low, high = scores.confusion_low, scores.confusion_high
        table.insert(4, "confusion_low", low[chosen])
        table.insert(5, "confusion_high", high[chosen])
        table.insert(6, "certain", certain_choice(low, high, chosen, top=top, threshold=threshold, groups=groups))
    for name, values in store.metadata_columns(split, table.columns).items():
        table[name] = values[chosen]
    return table


def certain_choice(low: np.ndarray, high: np.ndarray, chosen: np.ndarray, *, top=None, threshold=None, groups=None) -> np.ndarray:
    """For each chosen sample, whether every completion of the top-k logs chooses it too: its
    lower bound reaches the threshold, or fewer other samples (of its group) than the number
    chosen could score above its lower bound."""
    from .topk import certain_in_top

    if threshold is not None:
        return low[chosen] >= threshold
    certain = np.zeros(len(chosen), dtype=bool)
    labels = np.zeros(len(low), dtype=np.int64) if groups is None else np.asarray(groups)
    for group in np.unique(labels[chosen]):
        members = np.flatnonzero(labels == group)
        picked = np.flatnonzero(labels[chosen] == group)
        local = np.searchsorted(members, chosen[picked])
        certain[picked] = certain_in_top(low[members], high[members], local, math.ceil(top * len(members)))
    return certain


def read_manifest(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"hard-set manifest {path} does not exist")
    try:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"sample": str}, keep_default_na=False)
    except (ValueError, OSError) as error:
        raise InputError(f"{path} is not a readable manifest: {error}") from None
    missing = [c for c in ("sample", "split") if c not in table.columns]
    if missing:
        raise InputError(f"{path} is not a hard-set manifest: it lacks columns {missing}")
    table["sample"] = table["sample"].astype(str)
    return table


def _safe_name(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._")
    return cleaned or "sample"


def materialize(
    table: pd.DataFrame, images: np.ndarray, classes: list[str], out: str | Path, *, format: str = "folders", run: str | Path | None = None
) -> list[Path]:
    """Write the chosen images: class folders of PNGs (label, or "unlabeled"), or one .npz.

    images: (len(table), channels, height, width) uint8, in the table's row order.
    Returns the files written (a manifest.csv copy included).
    """
    from PIL import Image

    out = Path(out)
    if format not in ("folders", "npz"):
        raise ParameterError(f"{{format}} must be folders or npz, got {format!r}", "format")
    if format == "folders" and images.ndim != 4:
        raise ParameterError("feature vectors cannot be written as pictures: use {format} npz", "format")
    folders = class_folders(classes)
    written = []
    # Written into a fresh sibling that replaces OUT whole: nothing already in OUT (a symlink
    # planted there, say) is ever written through, and a failure leaves OUT as it was.
    with atomic_folder(out, "hardset", run) as staging:
        if format == "npz":
            np.savez(
                staging / "hardset.npz",
                x=images,
                y=table["label"].to_numpy(np.int64),
                ids=table["sample"].to_numpy(str),
                confusion=table["confusion"].to_numpy(np.float64),
                classes=np.array(classes),
            )
            written.append(out / "hardset.npz")
        else:
            for row, picture in zip(table.itertuples(index=False), images):
                relative = Path(folders[row.label] if row.label >= 0 else "unlabeled") / f"{row.rank:05d}_{_safe_name(row.sample)}.png"
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                array = picture[0] if picture.shape[0] == 1 else picture.transpose(1, 2, 0)
                Image.fromarray(array).save(staging / relative)
                written.append(out / relative)
        table.to_csv(staging / "manifest.csv", index=False)
    written.append(out / "manifest.csv")
    return written


def class_folders(classes: list[str]) -> list[str]:
    """A folder name per class, safe on every filesystem and distinct even where two names
    sanitise alike ('a/b' and 'a_b', 'Cat' and 'cat'): then each is prefixed by its index."""
    names = [_safe_name(c) for c in classes]
    if len({n.lower() for n in names}) < len(names) or "unlabeled" in names:
        names = [f"{k:0{len(str(len(classes)))}d}_{n}" for k, n in enumerate(names)]
    return names


def materialize_texts(table: pd.DataFrame, classes: list[str], out: str | Path, *, run: str | Path | None = None) -> list[Path]:
    """Write the chosen documents as OUT/hardset.csv (rank, sample, label and predicted class
    names, confusion, text, any other metadata) and OUT/manifest.csv."""
    if "text" not in table.columns:
        raise InputError("the run holds no document texts to materialize")
    # A metadata column of the same name (a user's own label_name) keeps its values as meta_<name>.
    named = table.rename(columns={c: f"meta_{c}" for c in ("label_name", "predicted_name") if c in table.columns})
    named.insert(3, "label_name", [classes[k] if k >= 0 else "" for k in table["label"]])
    named.insert(4, "predicted_name", [classes[k] for k in table["predicted"]])
    first = ["rank", "sample", "split", "label_name", "predicted_name", "confusion", "score", "score_value", "text"]
    named = named[first + [c for c in named.columns if c not in first]]
    out = Path(out)
    with atomic_folder(out, "hardset", run) as staging:
        named.to_csv(staging / "hardset.csv", index=False)
        table.to_csv(staging / "manifest.csv", index=False)
    return [out / "hardset.csv", out / "manifest.csv"]


def images_for(table: pd.DataFrame, dataset) -> np.ndarray:
    """The dataset's images for the manifest's rows (by split and sample id), in row order."""
    first = next(iter(dataset.splits.values())).images
    pictures = np.zeros((len(table), *dataset.input_shape), first.dtype)  # images, or feature vectors
    for split in table["split"].unique():
        if split not in dataset.splits:
            raise InputError(f"the dataset has no split {split!r} (it has {', '.join(dataset.splits)})")
        rows = np.flatnonzero((table["split"] == split).to_numpy())
        where = f"the dataset's {split} split; was the manifest made from it?"
        pictures[rows] = dataset.splits[split].images[positions(dataset.splits[split].ids, table["sample"].to_numpy()[rows], where)]
    return pictures
