"""PyTorch Lightning: record one ensemble member after every training epoch.

    from confusion.integrations.lightning import ConfusionCallback
    trainer = pl.Trainer(max_epochs=20, callbacks=[
        ConfusionCallback("runs/mine", member=seed, members=3, dataloaders={"val": val_loader})])

After every training epoch the callback runs a no-grad eval-mode pass over each given loader's
dataset, in dataset order (the loader's own sampler and shuffling are not used, so any loader
will do), and records the class probabilities of this member. Under multi-process DDP every
rank predicts its share of the batches; rank 0 gathers them and writes, so each epoch is
recorded once. At the last epoch (``embeddings=``) it also records the input of the model's
classifier head, for the neighbourhood scores. The run store is created on first use (classes from the model's output, labels
from the batches); the other members' jobs join it. Needs the `lightning` extra.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, install_extra

try:
    import pytorch_lightning as pl
    import torch
    from lightning_fabric.utilities.apply_func import move_data_to_device
    from torch.utils.data import DataLoader, IterableDataset
except ModuleNotFoundError as error:  # one line that names the extra, not a bare "No module named"
    raise ModuleNotFoundError(
        f"confusion.integrations.lightning needs the lightning extra: {install_extra('lightning')} ({error.name} is not installed)",
        name=error.name,
    ) from None

from ..engine import view_of
from ..reduced import check_keep
from ._common import check_embeddings, check_member, check_view_names, embeds_at, head_inputs, open_or_create

__all__ = [
    "INDEX_KEYS",
    "INPUT_KEYS",
    "LABEL_KEYS",
    "ConfusionCallback",
]

INPUT_KEYS = ("input", "inputs", "x", "image", "images", "pixel_values", "features")
LABEL_KEYS = ("label", "labels", "y", "target", "targets")
INDEX_KEYS = ("index", "idx", "indices")


class ConfusionCallback(pl.Callback):
    """Record member `member`'s predictions on every split after every training epoch.

    Parameters
    ----------
    path : the run directory (created on first use if it does not exist).
    member : which member this training run is (0..members-1); one per seed.
    dataloaders : {split: DataLoader}, e.g. {"val": val_loader, "train": train_eval_loader}.
        Batches are a tensor, a tuple/list (inputs first, labels second) or a dict (keys
        "input"/"x"/..., "label"/"y"/...). An IterableDataset's batches must carry their sample
        positions (third element, or key "index").
    members : the ensemble size; needed by whichever job creates the run.
    logits : the model returns logits (default) rather than probabilities.
    forward : optional ``forward(pl_module, batch) -> (batch, classes)`` when calling the
        module on the inputs is not how it predicts.
    classes : class names, optional.
    keep : "raw" or "reduced" (`Recorder.create`), for the job that creates the run.
    embeddings : "last" (default: the epoch training ends, at ``max_epochs`` or when a callback
        stops it), "all" epochs or "none": also record the input of the classifier head, for
        the neighbourhood scores and `combined` (`MemberWriter.log_embeddings`).
    embedding_layer : the head whose input is the embedding; default the module's last
        ``nn.Linear``.
    views : test-time views recorded with the embeddings where the inputs are images (a 4-D
        tensor, called through the module itself): default 2-pixel shifts left, right, up and
        down; add "flip" where a horizontal flip keeps the label; () for none
        (`MemberWriter.log_views`, the view scores).
    """

    def __init__(
        self,
        path: str | Path,
        member: int = 0,
        dataloaders: Mapping[str, DataLoader] | None = None,
        *,
        members: int | None = None,
        logits: bool = True,
        forward: Callable[[Any, Any], torch.Tensor] | None = None,
        classes: Sequence[str] | None = None,
        keep: str = "raw",
        embeddings: str = "last",
        embedding_layer: torch.nn.Module | None = None,
        views: Sequence[str] = ("left", "right", "up", "down"),
    ):
        check_member(member, members)
        self.keep = check_keep(keep)
        self.embeddings = check_embeddings(embeddings)
        self.embedding_layer = embedding_layer
        self.views = check_view_names(views)
        if not dataloaders or not isinstance(dataloaders, Mapping):
            raise InputError("dataloaders must be a dict {split: DataLoader}, e.g. {'val': val_loader}")
        self.path = Path(path)
        self.member = member
        self.members = members
        self.dataloaders = dict(dataloaders)
        self.logits = logits
        self.forward = forward
        self.classes = classes
        self.writer = None

    # ----------------------------------------------------------------- hooks
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch + 1
        done = trainer.is_global_zero and self.writer is not None and epoch <= self.writer.last_epoch
        if trainer.strategy.broadcast(done, src=0):  # resumed past it: recorded before
            return
        rank, world = trainer.global_rank, trainer.world_size
        embed = embeds_at(self.embeddings, epoch, epoch == trainer.max_epochs or trainer.should_stop)
        local = {split: self._predict(loader, pl_module, rank, world, embed) for split, loader in self.dataloaders.items()}
        if world > 1:
            gathered: list = [None] * world
            torch.distributed.all_gather_object(gathered, local)
        else:
            gathered = [local]
        if trainer.is_global_zero:
            parts = {split: [g[split] for g in gathered] for split in self.dataloaders}
            self._record(epoch, {split: _concatenate(p) for split, p in parts.items()}, pl_module)
        trainer.strategy.barrier("confusion-recorded")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # ----------------------------------------------------------------- work
    def _predict(self, loader: DataLoader, pl_module, rank: int, world: int, embed: bool):
        """This rank's share of one split: (positions, outputs float32, labels, embeddings or None,
        views or None) as numpy arrays."""
        dataset = loader.dataset
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            if world > 1:
                raise InputError("an IterableDataset cannot be shared out over DDP ranks; give a map-style dataset")
            batches, plan = loader, None
        else:
            size = loader.batch_size or 256
            plan = [list(range(a, min(a + size, len(dataset)))) for a in range(0, len(dataset), size)][rank::world]
            batches = DataLoader(dataset, batch_sampler=plan, collate_fn=loader.collate_fn, num_workers=loader.num_workers)
        positions, outputs, labels, viewed = [], [], [], []
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad(), head_inputs(pl_module, self.embedding_layer, embed) as embedded:
                for number, batch in enumerate(batches):
                    index = _field(batch, INDEX_KEYS, 2) if plan is None else torch.as_tensor(plan[number])
                    if index is None:
                        raise InputError("batches of an IterableDataset must carry their sample positions (key 'index')")
                    on_device = move_data_to_device(batch, pl_module.device)
                    inputs = None if self.forward else _inputs(on_device)
                    out = self.forward(pl_module, on_device) if self.forward else pl_module(inputs)
                    positions.append(np.asarray(torch.as_tensor(index).cpu(), dtype=np.int64))
                    outputs.append(out.detach().float().cpu().numpy())
                    if embed and self.views and inputs is not None and inputs.dim() == 4:
                        kept = len(embedded)  # the views' own head inputs are not embeddings
                        seen = [pl_module(view_of(inputs, v)).detach().float().cpu().numpy() for v in self.views]
                        del embedded[kept:]
                        viewed.append(np.stack(seen, axis=1))
                    label = _field(batch, LABEL_KEYS, 1)
                    labels.append(np.full(len(out), -1) if label is None else torch.as_tensor(label).cpu().numpy().astype(np.int64))
        finally:
            pl_module.train(was_training)
        views = np.concatenate(viewed) if viewed and len(viewed) == len(outputs) else None
        return np.concatenate(positions), np.concatenate(outputs), np.concatenate(labels), np.concatenate(embedded) if embed else None, views

    def _record(self, epoch: int, splits: dict, pl_module) -> None:
        if self.writer is None:
            n_classes = next(iter(splits.values()))[1].shape[1]
            labels = {}
            for split, (positions, _, split_labels, _, _) in splits.items():
                dataset = self.dataloaders[split].dataset
                n = len(dataset) if hasattr(dataset, "__len__") else int(positions.max()) + 1
                labels[split] = np.full(n, -1, dtype=np.int64)
                labels[split][positions] = split_labels
            info = {"framework": f"pytorch-lightning {pl.__version__}", "model": type(pl_module).__name__}
            recorder = open_or_create(
                self.path, members=self.members, n_classes=n_classes, labels=labels, classes=self.classes, info=info, keep=self.keep
            )
            self.writer = recorder.member(self.member)
            if epoch <= self.writer.last_epoch:
                return
        for split, (positions, outputs, _, embedded, views) in splits.items():
            self.writer.log(split, epoch, outputs, index=positions, logits=self.logits)
            if embedded is not None:
                self.writer.log_embeddings(split, epoch, embedded, index=positions)
            if views is not None:
                self.writer.log_views(split, epoch, views, index=positions, logits=self.logits)
        self.writer.end_epoch(epoch)


def _field(batch, keys: Sequence[str], position: int):
    if isinstance(batch, Mapping):
        return next((batch[k] for k in keys if k in batch), None)
    if isinstance(batch, (tuple, list)) and len(batch) > position:
        return batch[position]
    return None


def _inputs(batch):
    if isinstance(batch, torch.Tensor):
        return batch
    found = _field(batch, INPUT_KEYS, 0)
    if found is None:
        raise InputError(f"cannot find the inputs in a batch with keys {list(batch)}; pass forward=")
    return found


def _concatenate(parts: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    optional = [None if any(p[i] is None for p in parts) else np.concatenate([p[i] for p in parts]) for i in (3, 4)]
    return (*(np.concatenate([p[i] for p in parts]) for i in range(3)), *optional)  # type: ignore[return-value]
