"""Hugging Face `Trainer`: record one ensemble member after every epoch.

    from confusion.integrations.transformers import ConfusionCallback
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val)
    ConfusionCallback("runs/mine", member=seed, members=3).attach(trainer)
    trainer.train()

After every epoch the callback predicts the eval dataset (and, with ``record_train=True``, the
train dataset, or any datasets given) through the trainer's own prediction loop (and, at the last
epoch, the input of the model's classifier head: ``embeddings=``): its batch
size, collator, device and mixed precision, gathered over processes in dataset order. The
main process records the logits as this member's class probabilities. The run store is created
on first use (classes from the model's ``id2label``, labels from the datasets); the other
members' jobs join it. Needs the `transformers` extra.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, install_extra

try:
    import torch
    import transformers
    from transformers import TrainerCallback
except ModuleNotFoundError as error:  # one line that names the extra, not a bare "No module named"
    raise ModuleNotFoundError(
        f"confusion.integrations.transformers needs the transformers extra: {install_extra('transformers')} ({error.name} is not installed)",
        name=error.name,
    ) from None

from ..reduced import check_keep
from ._common import check_embeddings, check_member, check_view_names, embeds_at, head_inputs, open_or_create

__all__ = [
    "ConfusionCallback",
]


class ConfusionCallback(TrainerCallback):
    """Record member `member`'s predictions after every epoch of a `transformers.Trainer`.

    Parameters
    ----------
    path : the run directory (created on first use if it does not exist).
    member : which member this training run is (0..members-1); one per seed.
    members : the ensemble size; needed by whichever job creates the run.
    trainer : the Trainer; or call ``attach(trainer)``, which also adds the callback to it.
    datasets : {split: dataset} to record; default {"val": trainer.eval_dataset}, plus
        {"train": trainer.train_dataset} with ``record_train=True``.
    classes : class names; default the model config's ``id2label``.
    keep : "raw" or "reduced" (`Recorder.create`), for the job that creates the run.
    embeddings : "last" (default: the epoch training ends), "all" epochs or "none": also record
        the input of the classifier head (one process only), for the neighbourhood scores and
        `combined` (`MemberWriter.log_embeddings`).
    embedding_layer : the head whose input is the embedding; default the model's last
        ``nn.Linear`` (``classifier`` in the ``*ForSequenceClassification`` models).
    views : test-time views recorded with the embeddings for image models (a 4-D
        ``pixel_values``): one more prediction pass each, through the trainer's own loop; default
        2-pixel shifts left, right, up and down; add "flip" where a flip keeps the label; () for
        none (`MemberWriter.log_views`, the view scores).
    """

    def __init__(
        self,
        path: str | Path,
        member: int = 0,
        *,
        members: int | None = None,
        trainer: Any = None,
        datasets: Mapping[str, Any] | None = None,
        record_train: bool = False,
        classes: Sequence[str] | None = None,
        keep: str = "raw",
        embeddings: str = "last",
        embedding_layer: Any = None,
        views: Sequence[str] = ("left", "right", "up", "down"),
    ):
        check_member(member, members)
        self.keep = check_keep(keep)
        self.embeddings = check_embeddings(embeddings)
        self.embedding_layer = embedding_layer
        self.views = check_view_names(views)
        self.path = Path(path)
        self.member = member
        self.members = members
        self.trainer = trainer
        self.datasets = dict(datasets) if datasets is not None else None
        self.record_train = record_train
        self.classes = classes
        self.writer = None

    def attach(self, trainer) -> ConfusionCallback:
        """Bind to `trainer` and add this callback to it; returns self."""
        self.trainer = trainer
        trainer.add_callback(self)
        return self

    # ----------------------------------------------------------------- hooks
    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer is None:
            raise InputError("ConfusionCallback needs the Trainer: ConfusionCallback(...).attach(trainer), or trainer=")
        self._splits()  # refuse a missing dataset now, not after the first epoch
        if self.embeddings != "none" and (args.world_size > 1 or args.n_gpu > 1):
            raise InputError("the callback records embeddings from one process; pass embeddings='none' to train on several")

    def on_epoch_end(self, args, state, control, **kwargs):
        epoch = int(round(state.epoch or 0))
        if epoch < 1:
            return
        last = epoch >= round(args.num_train_epochs) or control.should_training_stop
        embed = embeds_at(self.embeddings, epoch, last)
        predicted, embedded, viewed = {}, {}, {}
        for split, dataset in self._splits().items():
            with head_inputs(self.trainer.model, self.embedding_layer, embed) as captured, _pixels_seen(self.trainer.model) as pixels:
                predicted[split] = self.trainer.predict(dataset)
            if embed:
                embedded[split] = np.concatenate(captured)
            if embed and self.views and pixels and pixels[0] == 4:
                viewed[split] = np.stack([_logits(self._predict_view(dataset, v).predictions) for v in self.views], axis=1)
        if not state.is_world_process_zero:
            return
        outputs = {split: _logits(result.predictions) for split, result in predicted.items()}
        if self.writer is None:
            labels = {split: _labels(result.label_ids, len(outputs[split])) for split, result in predicted.items()}
            n_classes = next(iter(outputs.values())).shape[1]
            model = self.trainer.model
            info = {"framework": f"transformers {transformers.__version__}", "model": type(model).__name__}
            recorder = open_or_create(
                self.path,
                members=self.members,
                n_classes=n_classes,
                labels=labels,
                classes=self._classes(model, n_classes),
                info=info,
                keep=self.keep,
            )
            self.writer = recorder.member(self.member)
            if epoch <= self.writer.last_epoch:
                return
        for split, values in outputs.items():
            self.writer.log(split, epoch, values, logits=True)
            if split in embedded:
                self.writer.log_embeddings(split, epoch, embedded[split])
            if split in viewed:
                self.writer.log_views(split, epoch, viewed[split], logits=True)
        self.writer.end_epoch(epoch)

    def on_train_end(self, args, state, control, **kwargs):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # ----------------------------------------------------------------- helpers
    def _predict_view(self, dataset, view: str):
        """The trainer's prediction loop with every batch's pixel_values seen through `view`."""
        from ..engine import view_of

        def through_view(_module, args, kwargs):
            if isinstance(kwargs.get("pixel_values"), torch.Tensor):
                kwargs = {**kwargs, "pixel_values": view_of(kwargs["pixel_values"], view)}
            elif args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
                args = (view_of(args[0], view), *args[1:])
            return args, kwargs

        hook = self.trainer.model.register_forward_pre_hook(through_view, with_kwargs=True)
        try:
            return self.trainer.predict(dataset)
        finally:
            hook.remove()

    def _splits(self) -> dict[str, Any]:
        if self.datasets is not None:
            return self.datasets
        if self.trainer.eval_dataset is None:
            raise InputError("the Trainer has no eval_dataset; give one, or datasets={'val': ...} to the callback")
        splits = {"val": self.trainer.eval_dataset}
        if self.record_train:
            splits["train"] = self.trainer.train_dataset
        return splits

    def _classes(self, model, n_classes: int) -> list[str] | None:
        if self.classes is not None:
            return list(self.classes)
        names = getattr(getattr(model, "config", None), "id2label", None) or {}
        if len(names) == n_classes:
            return [str(names.get(i, names.get(str(i), i))) for i in range(n_classes)]
        return None


@contextlib.contextmanager
def _pixels_seen(model):
    """Note the number of axes of the first pixel_values the model is given (images: 4)."""
    seen: list[int] = []

    def note(_module, args, kwargs):
        pixels = kwargs.get("pixel_values", args[0] if args else None)
        if not seen and isinstance(pixels, torch.Tensor):
            seen.append(pixels.dim())

    hook = model.register_forward_pre_hook(note, with_kwargs=True)
    try:
        yield seen
    finally:
        hook.remove()


def _logits(predictions) -> np.ndarray:
    """The (samples, classes) logits from what `Trainer.predict` returns (a tuple for some models)."""
    if isinstance(predictions, (tuple, list)):
        predictions = predictions[0]
    values = np.asarray(predictions, dtype=np.float32)
    if values.ndim != 2:
        raise InputError(f"the model's predictions are shaped {values.shape}; a classifier's logits are (samples, classes)")
    return values


def _labels(label_ids, n: int) -> np.ndarray:
    if label_ids is None:
        return np.full(n, -1, dtype=np.int64)
    if isinstance(label_ids, (tuple, list)):
        label_ids = label_ids[0]
    labels = np.asarray(label_ids).astype(np.int64).reshape(-1)
    labels[labels < 0] = -1  # -100 marks "no label" in transformers
    return labels
