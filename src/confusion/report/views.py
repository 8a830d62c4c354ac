"""What the report reads of one run (`RunView`: per split, scores, labels and final
predictions), its name on the page, and the split a report is about."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import analyses
from ..errors import InputError
from ..runscores import score_run
from ..store import RunStore

__all__ = ["SCORE_UNIT", "RunView", "pick_split", "run_label"]

SCORE_UNIT = "bits"


@dataclass
class RunView:
    """What the report needs of one run: per split, scores, labels and final predictions."""

    store: RunStore
    name: str
    scores: dict = field(default_factory=dict)  # split -> Scores (all members)
    final: dict = field(default_factory=dict)  # split -> FinalPredictions (the last committed epoch)

    @classmethod
    def load(cls, path: str | Path, name: str | None = None, splits: Sequence[str] | None = None) -> RunView:
        store = RunStore.open(path)
        if not store.layout.keeps_record:
            raise InputError(
                f"{path} holds top-k logs: the report needs every class probability or the reduced record; "
                f"`confusion score` and `confusion hardset` read top-k logs (with guaranteed bounds)"
            )
        view = cls(store, name or run_label(store))
        for split in splits or store.splits:
            if split not in store.splits:
                continue
            view.scores[split] = score_run(store, split)
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


def pick_split(splits, preferred: str = "val") -> str:
    """The split a report is about: `preferred` where the run has it, else its first (`splits`:
    names, or a mapping keyed by them)."""
    return preferred if preferred in splits else next(iter(splits))
