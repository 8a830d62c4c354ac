"""Named, typed hooks the trainer fires, for a display, a log or a cluster coordinator.

Workers send events (`StepEnded`, `EpochEnded`, `EpochsCommitted`) through their message queue;
the coordinator (`confusion.training.train`, `train_on_cluster`) fires each on a
`TrainingHooks` object, which implements the hooks it needs (as Lightning's callbacks do).
No torch here: a terminal display imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["EpochEnded", "EpochsCommitted", "StepEnded", "TrainingHooks"]


class TrainingHooks:
    """Override the hooks you need; each does nothing by default."""

    def on_step(self, member: int, epoch: int, step: int, steps: int, loss: float) -> None:
        """A member finished step `step` of `steps` of `epoch` (every 20 steps, and the last).

        Parameters
        ----------
        member : int
            The member's index.
        epoch : int
            The 1-based training epoch.
        step, steps : int
            Steps done and steps in the epoch.
        loss : float
            The mean training loss of the epoch so far.
        """

    def on_epoch_end(self, member: int, epoch: int, metrics: dict[str, Any]) -> None:
        """A member finished `epoch` (and recorded it, where it is recorded).

        Parameters
        ----------
        member : int
            The member's index.
        epoch : int
            The 1-based training epoch.
        metrics : dict
            train_loss, train_accuracy, val_accuracy, train_seconds, eval_seconds.
        """

    def on_commit(self, epochs: list[int]) -> None:
        """The run store committed `epochs`: every member has recorded them.

        Parameters
        ----------
        epochs : list of int
            The training epochs committed since the last call, in order.
        """


@dataclass(frozen=True)
class StepEnded:
    """`TrainingHooks.on_step`, as a worker sends it."""

    member: int
    epoch: int
    step: int
    steps: int
    loss: float

    def fire(self, hooks: TrainingHooks) -> None:
        """Call `hooks.on_step` with this event.

        Parameters
        ----------
        hooks : TrainingHooks
            The hooks to call.
        """
        hooks.on_step(self.member, self.epoch, self.step, self.steps, self.loss)


@dataclass(frozen=True)
class EpochEnded:
    """`TrainingHooks.on_epoch_end`, as a worker sends it."""

    member: int
    epoch: int
    metrics: dict[str, Any]

    def fire(self, hooks: TrainingHooks) -> None:
        """Call `hooks.on_epoch_end` with this event.

        Parameters
        ----------
        hooks : TrainingHooks
            The hooks to call.
        """
        hooks.on_epoch_end(self.member, self.epoch, self.metrics)


@dataclass(frozen=True)
class EpochsCommitted:
    """`TrainingHooks.on_commit`, as the coordinator sees it."""

    epochs: list[int]

    def fire(self, hooks: TrainingHooks) -> None:
        """Call `hooks.on_commit` with this event.

        Parameters
        ----------
        hooks : TrainingHooks
            The hooks to call.
        """
        hooks.on_commit(self.epochs)
