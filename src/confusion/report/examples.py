"""Fig. 1 of the paper: per class, the easiest and hardest samples by the score alone, as
pictures where the dataset's images are on this machine, else as a table with their text,
metadata or source file."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import analyses
from ..datasets import load_for_run
from ..errors import InputError
from .views import RunView, pick_split

__all__ = ["examples", "gallery"]


def gallery(view: RunView, per_class: int) -> tuple[np.ndarray, list, np.ndarray] | None:
    """Fig. 1's pictures for image datasets whose files are on this machine; None otherwise."""
    config = view.store.meta.get("config")
    if not config or (view.store.meta.get("dataset") or {}).get("kind", "images") != "images":
        return None
    try:
        dataset = load_for_run(config, run=view.store.path)
    except Exception:  # the data may live on another machine: the report goes on without pictures
        return None
    split = pick_split(view.scores)
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


def examples(view: RunView, per_class: int) -> pd.DataFrame:
    """Fig. 1 as a table: per class, the easiest and hardest samples by the score alone, with
    their text, metadata or source file where the run holds them."""
    split = pick_split(view.scores)
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
                    "class": names[label],
                    "which": side,
                    "sample": ids[i],
                    "confusion": float(scores[i]),
                    "label": names[labels[i]] if labels[i] >= 0 else "",
                    "ensemble predicts": names[predicted[i]],
                }
                if sources is not None:
                    row["source"] = sources[i]
                if meta is not None:
                    row.update({column: meta[column].iloc[i] for column in meta.columns[1:]})
                rows.append(row)
    return pd.DataFrame(rows)
