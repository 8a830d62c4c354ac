"""The shape every dataset shares (`Split`, `Dataset`) and the readers both the image and
feature loaders (`datasets`) and the text loader (`text`) use: tables, labels given as integers
or class names, and seeded train/val splits. numpy only (pandas for tables, imported on use).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = ["Dataset", "Split", "labels_and_classes", "read_id_table", "read_table", "seeded_split", "split_rows"]


@dataclass
class Split:
    images: np.ndarray  # (samples, channels, height, width) uint8, or (samples, features) float32
    labels: np.ndarray  # (samples,) int64, -1 = unknown
    ids: np.ndarray  # (samples,) str, stable across runs
    sources: np.ndarray | None = None  # (samples,) str: the file each sample came from
    meta: dict[str, np.ndarray] | None = None  # per-sample columns (e.g. "text"), row-aligned

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> Split:
        return Split(
            self.images[index],
            self.labels[index],
            self.ids[index],
            None if self.sources is None else self.sources[index],
            None if self.meta is None else {name: column[index] for name, column in self.meta.items()},
        )


@dataclass
class Dataset:
    name: str
    classes: list[str]
    splits: dict[str, Split]
    flip_preserves_label: bool = True  # horizontal flips are a safe augmentation
    info: dict = field(default_factory=dict)
    kind: str = "images"  # "images", "features" (float vectors) or "text" (embedded documents)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(channels, height, width) for images, (features,) for feature and text data."""
        return tuple(self.splits["train"].images.shape[1:])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        if self.kind != "images":
            raise InputError(f"{self.name} holds {self.kind}, not images")
        return self.input_shape  # type: ignore[return-value]

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def seeded_split(n: int, labels: np.ndarray, seed: int, val_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/val indices, the same for the same seed on every machine."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(len(members))]
        cut = int(round(len(members) * val_fraction))
        val.append(members[:cut])
        train.append(members[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def labels_and_classes(values: np.ndarray, classes: list[str] | None, what: str) -> tuple[np.ndarray, list[str]]:
    """Integer labels (-1 = unknown) and class names from integer or class-name labels."""
    values = np.asarray(values)
    if values.dtype.kind in "OUS":
        text = np.array(["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip() for v in values])
        known = text != ""
        if classes is None:
            numeric = all(t.lstrip("-").isdigit() for t in text[known])
            if numeric and known.any():
                return labels_and_classes(np.where(known, text, "-1").astype(np.int64), None, what)
            classes = sorted(set(text[known].tolist()))
        index = {name: k for k, name in enumerate(classes)}
        unknown = sorted(set(text[known].tolist()) - set(index))
        if unknown:
            raise InputError(f"{what}: label {unknown[0]!r} is not one of the classes {', '.join(classes[:8])}")
        return np.array([index[t] if t else -1 for t in text], dtype=np.int64), list(classes)
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        if (values[finite] != np.round(values[finite])).any():
            raise InputError(f"{what}: labels must be whole numbers or class names, not fractions")
        values = np.where(finite, values, -1)
    if values.dtype.kind not in "iuf":
        raise InputError(f"{what}: labels must be integers or class names, got {values.dtype}")
    if values.dtype.kind == "u" and values.size and values.max() > np.iinfo(np.int64).max:
        raise InputError(f"{what}: labels are far beyond any class index")
    labels = values.astype(np.int64)
    if (labels < -1).any():
        raise InputError(f"{what}: integer labels must be class indices (or -1 for unknown)")
    n_classes = int(labels.max()) + 1 if labels.size else 0
    if classes is None:
        classes = [str(c) for c in range(n_classes)]
    if n_classes > len(classes):
        raise InputError(f"{what}: label {n_classes - 1} is beyond the {len(classes)} classes given")
    return labels, list(classes)


def split_rows(labels: np.ndarray, split: np.ndarray | None, seed: int, what: str) -> dict[str, np.ndarray]:
    """Row positions of train and val: from a `split` column, or a seeded stratified 80/20 split."""
    if split is not None:
        split = np.array([str(s).strip().lower() for s in split])
        bad = sorted(set(split.tolist()) - {"train", "val"})
        if bad:
            raise InputError(f"{what}: the split column may hold train or val, not {bad[0]!r}")
        rows = {name: np.flatnonzero(split == name) for name in ("train", "val")}
    else:
        known = np.flatnonzero(labels >= 0)
        train, val = seeded_split(len(known), labels[known], seed)
        rows = {"train": known[train], "val": np.sort(np.concatenate([known[val], np.flatnonzero(labels < 0)]))}
    for name, positions_ in rows.items():
        if len(positions_) == 0:
            raise InputError(f"{what}: the {name} split is empty")
    if (labels[rows["train"]] < 0).any():
        raise InputError(f"{what}: every training row needs a label")
    return rows


def read_table(file: Path, what: str):
    """A .csv or .parquet file as a DataFrame, or one clear error."""
    import pandas as pd

    try:
        if file.suffix.lower() == ".parquet":
            return pd.read_parquet(file)
        return pd.read_csv(file, keep_default_na=False, na_values=[""])
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise InputError(f"{what} {file} is not a readable table: {str(error).splitlines()[0]}") from None


def read_id_table(path: Path, option: str):
    """A user's per-sample table for `option` (--meta, --signal): (DataFrame, name of its id
    column, `sample` or else `id`, as strings)."""
    if not path.is_file() or path.suffix.lower() not in (".csv", ".parquet"):
        raise InputError(f"{option} {path} must be an existing .csv or .parquet file")
    table = read_table(path, option)
    key = "sample" if "sample" in table.columns else "id" if "id" in table.columns else None
    if key is None:
        raise InputError(f"{option} {path} needs a 'sample' (or 'id') column of sample ids")
    table[key] = table[key].astype(str)
    return table, key
