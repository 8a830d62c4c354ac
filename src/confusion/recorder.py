"""Record predictions from any training loop: the public face of the run store's contract.

    from confusion import Recorder
    Recorder.create("runs/mine", n_classes=10, members=3, splits={"val": val_labels})
    with Recorder.open("runs/mine").member(m) as w:          # in member m's own process
        for epoch in range(w.last_epoch + 1, epochs + 1):     # resumes after the last ended epoch
            ...train one epoch...
            for x, y, index in val_loader:                    # any order, any batch size
                w.log("val", epoch, model(x), index=index, logits=True)
            w.end_epoch(epoch)                                # commits once every member ended it

Numpy only: outputs may be torch tensors on any device, but torch is never imported here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import InputError, ParameterError, RunStoreError
from .importing import load_labels
from .store import MemberWriter, RunStore, SplitData
from .store.commit import to_numpy
from .store.format import MAX_CLASSES, MAX_MEMBERS, MAX_SAMPLES, check_count

__all__ = [
    "IndexedDataset",
    "Recorder",
]


class Recorder:
    """A run store seen by the processes that write it. Create once, open anywhere."""

    def __init__(self, store: RunStore):
        self.store = store

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        n_classes: int,
        members: int,
        splits: Mapping[str, Any],
        ids: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
        classes: Sequence[str] | None = None,
        exist_ok: bool = False,
        info: Mapping[str, Any] | None = None,
        keep: str = "raw",
    ) -> Recorder:
        """Make the run directory `path` for an ensemble of `members` models over `n_classes`.

        Parameters
        ----------
        splits : {name: labels}; labels are (samples,) class indices, -1 where unknown (never
            used for the score), as a list, numpy array or tensor; or an int, the number of
            samples of a split without labels.
        ids : {name: (samples,) sample ids} (or just the ids, with one split), optional;
            default "0".."samples-1".
        classes : class names, optional; default "0".."C-1".
        exist_ok : open the run if another job of it already made it (it must have the same
            classes, members, splits and labels), instead of refusing.
        info : JSON-able facts to keep in run.json (model, dataset, hyper-parameters).
        keep : "raw" (every class probability) or "reduced": only the few numbers per prediction
            every analysis needs (`confusion.reduced`), written as each epoch is committed; the
            raw probabilities of a committed epoch are then deleted (over 100x smaller at
            C = 1,000). Subsets of 2 of 3 members and class probabilities need raw.
        """
        n_classes = check_count(n_classes, "n_classes", MAX_CLASSES)
        members = check_count(members, "members", MAX_MEMBERS)
        if not isinstance(splits, Mapping) or not splits:
            raise InputError("splits must be a dict {name: labels}, with at least one split")
        described = {}
        for name, labels in splits.items():
            if isinstance(labels, (int, np.integer)) and not isinstance(labels, bool):
                labels = np.full(check_count(labels, "splits", MAX_SAMPLES), -1)
            array = to_numpy(labels, f"labels of split {name!r}")
            labels = load_labels(array, len(array) if array.ndim == 1 else -1, n_classes)
            split_ids = _ids_of(ids, name, len(splits), len(labels))
            described[name] = SplitData(ids=split_ids, labels=labels)
        store = RunStore.create(
            path,
            n_classes=n_classes,
            members=[{"index": m, "seed": None} for m in range(members)],
            epoch_capacity=0,
            splits=described,
            classes=classes,
            info={"source": "recorder", **dict(info or {})},
            exist_ok=exist_ok,
            keep=keep,
        )
        _check_same_run(store, n_classes, members, described, keep)
        return cls(store)

    @classmethod
    def open(cls, path: str | os.PathLike) -> Recorder:
        """Open a run made by `create` (or by `confusion train` / `import`) to write into it."""
        return cls(RunStore.open(path, mode="a"))

    def member(self, member: int) -> MemberWriter:
        """The writer of member `member`: `log`, `end_epoch`, `last_epoch`, `close`.

        One process per member; a second writer of the same member is refused while the
        first is open (RunLockedError).
        """
        return self.store.member_writer(member)

    @property
    def members(self) -> int:
        return self.store.n_members

    @property
    def committed_epochs(self) -> list[int]:
        """Training epochs ended by every member, in order (what scoring reads)."""
        self.store.refresh()
        return self.store.recorded_epochs

    def status(self) -> dict[str, Any]:
        """Per member, the epochs it ended and who writes it now; the committed epochs."""
        self.store.refresh()
        return self.store.status()


def _ids_of(ids, split: str, n_splits: int, n_samples: int):
    """The ids given for `split`: from a {split: ids} dict, or a plain sequence when there is one split."""
    if ids is None:
        return np.arange(n_samples).astype(str)
    if isinstance(ids, Mapping):
        return ids[split] if split in ids else np.arange(n_samples).astype(str)
    if n_splits != 1:
        raise InputError("ids must be a dict {split: ids} when there are several splits")
    return to_numpy(ids, "ids")


def _check_same_run(store: RunStore, n_classes: int, members: int, splits: dict[str, SplitData], keep: str) -> None:
    """An existing run joined with exist_ok must be the run the caller describes."""
    found = (store.n_classes, store.n_members, sorted(store.splits), store.keep)
    wanted = (n_classes, members, sorted(splits), keep)
    if found != wanted:
        raise RunStoreError(
            f"{store.path} holds another run ({found[0]} classes, {found[1]} members, splits {found[2]}, keep {found[3]}; "
            f"asked for {wanted[0]}, {wanted[1]}, {wanted[2]}, keep {wanted[3]})"
        )
    for name, split in splits.items():
        if store.n_samples(name) != len(split.ids) or not np.array_equal(store.labels(name), split.labels):
            raise RunStoreError(f"{store.path}: split {name!r} has other samples or labels than the ones given")


class IndexedDataset:
    """A map-style dataset that also yields each sample's position, for `MemberWriter.log`'s
    `index` when a loader shuffles: `(x, y)` becomes `(x, y, index)`, a single tensor `x`
    becomes `(x, index)`, a dict gains the key ``index``.

    Parameters
    ----------
    dataset : Sequence-like
        Anything with ``__len__`` and ``__getitem__`` (a `TensorDataset`, an `ImageFolder`, a
        Hugging Face dataset).

    Examples
    --------
    >>> loader = DataLoader(IndexedDataset(TensorDataset(x, y)), batch_size=256, shuffle=True)  # doctest: +SKIP
    >>> for x, y, index in loader:  # doctest: +SKIP
    ...     writer.log("val", epoch, model(x), index=index, logits=True)
    """

    def __init__(self, dataset: Any):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise ParameterError("{dataset} must have a length and samples by position (a map-style dataset)", "dataset")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int) -> Any:
        sample = self.dataset[position]
        if isinstance(sample, tuple):
            return (*sample, position)
        if isinstance(sample, dict):
            return {**sample, "index": position}
        return sample, position
