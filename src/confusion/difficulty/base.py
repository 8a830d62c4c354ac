"""What a difficulty score is: its `ScoreInfo`, what it reads (`FromScores`: confusion scores;
`FromRecord`: the reduced record, block by block, `LabelScore` where it needs labels) and the
registry every score class joins with `register`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from ..scores import Scores

__all__ = [
    "REGISTRY",
    "Block",
    "DifficultyScore",
    "FromFit",
    "FromKept",
    "FromNeighbourhood",
    "FromViews",
    "FromRecord",
    "FromScores",
    "LabelScore",
    "ScoreInfo",
    "early_epoch_position",
    "register",
]


@dataclass(frozen=True)
class ScoreInfo:
    """What a difficulty score is: its range and unit, which way is harder, and its cost."""

    name: str
    needs_labels: bool
    harder: str  # "higher" or "lower"
    range: str
    unit: str
    reads: str  # which recorded predictions it needs: members x epochs
    source: str
    description: str


@dataclass
class Block:
    """What a score of the reduced record reads of one block of samples: the record's fields
    (member fields (members, epochs, samples), ensemble fields (epochs, samples)), the samples'
    labels (-1 = unknown) and the training epochs of the recorded slots."""

    record: dict[str, np.ndarray]
    labels: np.ndarray
    epochs: np.ndarray

    def samples(self, index: np.ndarray) -> Block:
        """The same block for a subset of its samples.

        Parameters
        ----------
        index : ndarray
            Sample positions within the block.

        Returns
        -------
        Block
            The record's fields, labels and epochs of those samples.
        """
        return Block({name: values[..., index] for name, values in self.record.items()}, self.labels[index], self.epochs)


class DifficultyScore:
    """A difficulty score: what it is (`info`) and what it reads."""

    info: ClassVar[ScoreInfo]
    reads: ClassVar[str]  # "ensemble" (all members' scores), "member" (member 0's) or "record"


class FromScores(DifficultyScore):
    """A score computed from confusion scores (eqs. 1-3 and their decomposition): of all members
    (`reads = "ensemble"`) or of member 0 alone (`reads = "member"`)."""

    def compute(self, scores: Scores) -> np.ndarray:
        """The score of every sample.

        Parameters
        ----------
        scores : Scores
            Confusion scores in bits (all members, or member 0, as `reads` says).

        Returns
        -------
        ndarray, shape (samples,)
            The score.
        """
        raise NotImplementedError


class FromRecord(DifficultyScore):
    """A score computed from the reduced record, block by block of samples."""

    reads = "record"
    fields: ClassVar[tuple[str, ...]] = ()  # the record's fields it reads

    def compute(self, block: Block) -> np.ndarray:
        """The score of every sample of `block`.

        Parameters
        ----------
        block : Block
            The record's `fields`, labels and epochs of a block of samples.

        Returns
        -------
        ndarray, shape (samples,)
            The score.
        """
        raise NotImplementedError

    def values(self, block: Block) -> np.ndarray:
        """`compute` for every sample of `block`, as float64.

        Parameters
        ----------
        block : Block
            A block of samples.

        Returns
        -------
        ndarray of float64, shape (samples,)
            The score.
        """
        return np.asarray(self.compute(block), dtype=np.float64)


class LabelScore(FromRecord):
    """A score that needs each sample's label: computed on the labelled samples, NaN elsewhere."""

    def values(self, block: Block) -> np.ndarray:
        """`compute` on the labelled samples of `block`; NaN where the label is unknown.

        Parameters
        ----------
        block : Block
            A block of samples.

        Returns
        -------
        ndarray of float64, shape (samples,)
            The score.
        """
        out = np.full(len(block.labels), np.nan)
        known = np.flatnonzero(block.labels >= 0)
        if len(known):
            out[known] = self.compute(block.samples(known))
        return out


class FromKept(DifficultyScore):
    """A score of what a run keeps beside its predictions, read once per split for every score of
    its kind (`found`: `Neighbourhood` or `ViewScores`)."""

    def compute(self, found: Any) -> np.ndarray:
        """The score of every sample.

        Parameters
        ----------
        found : Neighbourhood or ViewScores
            What the split keeps, as its reader gives it.

        Returns
        -------
        ndarray, shape (samples,)
            The score.
        """
        raise NotImplementedError


class FromNeighbourhood(FromKept):
    """A score of where a sample sits among the training samples in the members' embeddings
    (`confusion.neighbours`): `compute` gets the split's `Neighbourhood`."""

    reads = "neighbours"


class FromViews(FromKept):
    """A score of how the members' predictions move under test-time views (`confusion.views`):
    `compute` gets the split's `ViewScores`."""

    reads = "views"


class FromFit(DifficultyScore):
    """A score fitted on a labelled calibration split over other label-free scores
    (`confusion.combined`); computed by `difficulty_scores` itself."""

    reads = "fit"


AnyScore = FromScores | FromRecord | FromNeighbourhood | FromViews | FromFit
REGISTRY: dict[str, AnyScore] = {}
Registered = TypeVar("Registered", bound="FromScores | FromRecord | FromNeighbourhood | FromViews | FromFit")


def register(cls: type[Registered]) -> type[Registered]:
    """Add a score class to the registry (and its `info` to `SCORES`), in definition order.

    Parameters
    ----------
    cls : type
        A subclass of `FromScores` or `FromRecord` with its `info`.

    Returns
    -------
    type
        `cls`, so this is a class decorator.
    """
    REGISTRY[cls.info.name] = cls()
    return cls


def early_epoch_position(n_epochs: int) -> int:
    """Position of EL2N's early epoch: the first recorded epoch at or after 10% of them.

    Parameters
    ----------
    n_epochs : int
        Recorded epochs.

    Returns
    -------
    int
        A position in 0..n_epochs-1.
    """
    return max(0, math.ceil(0.1 * n_epochs) - 1)
