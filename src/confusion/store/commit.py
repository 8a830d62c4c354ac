"""The commit rule and its writers: the only way predictions enter a run.

Every writer (the trainer's workers, `confusion import`, a user's loop through
`confusion.Recorder`, a job per seed on another machine sharing the directory) goes through it:
a member writes only its own chunks and, once a whole epoch of every split is written, marks
that (member, epoch) ended in its member file. The k-th epoch a member ends goes into epoch slot
k, so a writer knows its slot without asking anyone. Slot k is committed, and
`run.json["recorded_epochs"][k]` names its training epoch (1-based), as soon as every member
has ended its k-th epoch and they agree on its number; commits happen in slot order, exactly
once, under the commit lock, by whichever writer ends the last member of an epoch. A member
only writes the slot after its last ended one, so a committed slot never changes, and a crash
never leaves a half epoch that scoring would read. The epoch axis grows as epochs arrive; its
length need not be known in advance. Splits added or replaced after training (`confusion
import`) are listed in run.json only once their data is whole (`confusion.store.splits`).
"""

from __future__ import annotations

import contextlib
import json
import os
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from .._files import write_json_atomic
from ..errors import InputError, ParameterError
from ..scores import describe_invalid, softmax
from .chunks import write_rows
from .embeddings import VIEWS_DIR, EmbeddingLog, check_embeddings
from .format import ARRAYS, epoch_number, open_group
from .locks import commit_lock, hold_lock

if TYPE_CHECKING:
    from .run import RunStore

__all__ = ["MemberWriter", "commit_ready", "ensure_capacity", "json_info", "to_numpy"]


def commit_ready(store: RunStore) -> list[int]:
    """Commit every slot that all members have ended with the same epoch.

    Safe to call from any number of processes at once: the lock makes each slot commit once.
    The layout derives its record of the new slots before run.json lists them.

    Parameters
    ----------
    store : RunStore
        The run.

    Returns
    -------
    list of int
        The training epochs this call committed (often none).
    """
    with commit_lock(store.path):
        store.refresh()
        ended = store.ended_epochs()
        committed = store.meta["recorded_epochs"]
        new = []
        slot = len(committed)
        while all(len(e) > slot for e in ended) and len({e[slot] for e in ended}) == 1:
            new.append(int(ended[0][slot]))
            slot += 1
        if new:
            store.layout.before_commit(store, range(len(committed), slot), store.splits, committed + new)
            committed.extend(new)
            store.save_meta()
            store.layout.after_commit(store, len(committed), store.splits)
    return new


def ensure_capacity(store: RunStore, slots: int) -> None:
    """Grow the epoch axis of every split to hold at least `slots` epochs.

    Parameters
    ----------
    store : RunStore
        The run.
    slots : int
        The epoch slots needed.
    """
    if slots <= store.epoch_capacity:
        return
    import zarr

    with commit_lock(store.path):
        store.refresh()
        if slots > store.epoch_capacity:
            for split in store.splits:
                array = zarr.open_array(store.path / ARRAYS / split / "probs", mode="a", zarr_format=3)
                if array.shape[1] < slots:
                    array.resize((array.shape[0], slots, *array.shape[2:]))
                store.layout.resize(zarr.open_group(store.path / ARRAYS / split, mode="a", zarr_format=3), slots)
            store.meta["epoch_capacity"] = int(slots)
            store.save_meta()
    store._group = open_group(store.path, "a")


_OPEN_WRITERS: dict[tuple[str, int], weakref.ref[MemberWriter]] = {}


class MemberWriter:
    """The writer of one member: logs its predictions, epoch by epoch, and ends its epochs.

    Rows arrive in any order and any batch size; they are buffered and written straight into
    the member's own chunk files (each row at its place), so no other process's rows are
    touched and a step of a training loop costs a copy. `end_epoch` checks that every row of
    every split was logged, records the epoch as ended in the member file, and commits every
    epoch that all members have now ended. One process per member: opening a writer takes the
    member's lock (a writer of the same member opened earlier in the same process is closed).
    Use it as a context manager or call `close()`.

    Parameters
    ----------
    store : RunStore
        The run.
    member : int
        The member this writer records, 0..M-1.

    Raises
    ------
    InputError
        For a member outside the run, or a run that members do not write (top-k logs).
    RunLockedError
        When another process writes this member.
    """

    FLUSH_BYTES = 16 * 2**20  # buffered rows are written once they reach this size

    def __init__(self, store: RunStore, member: int):
        if isinstance(member, bool) or not isinstance(member, (int, np.integer)) or not 0 <= member < store.n_members:
            raise InputError(f"member must be an integer in 0..{store.n_members - 1}, got {member!r}")
        if not store.layout.member_writable:
            raise InputError(f"{store.path} holds top-k logs; it is written by `confusion import --topk`, not by a member writer")
        self.store = store
        self.member = int(member)
        # Within one process, opening a member again (a loop restarted in a notebook, say)
        # closes the writer opened before; across processes the lock refuses a second writer.
        key = (os.path.realpath(store.path), self.member)
        reference = _OPEN_WRITERS.get(key)
        previous = reference() if reference is not None else None
        if previous is not None:
            previous.close()
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(hold_lock(store.path, f".member-{self.member}.lock"))
        _OPEN_WRITERS[key] = weakref.ref(self)
        state = store.member_state(self.member)
        if any(len(e) > len(store.recorded_epochs) for e in store.ended_epochs()):
            store.commit_ready()  # an epoch whose committer was killed before it committed
        self._ended: list[int] = [int(e) for e in state["ended"]]
        self._info: dict[str, Any] = dict(state["info"])
        self._epoch: int | None = None  # the epoch being logged, until end_epoch
        self._logged: dict[str, np.ndarray] = {}
        self._cursor: dict[str, int] = {}  # per split, rows logged in order (no index) this epoch
        self._logged_by_index: set[str] = set()  # splits logged with index this epoch
        self._buffer: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._buffered = 0
        sizes = {split: store.n_samples(split) for split in store.splits}
        self._embeddings = EmbeddingLog(store.path, self.member, sizes)
        self._views = EmbeddingLog(store.path, self.member, sizes, dims=None, folder=VIEWS_DIR)
        self.closed = False

    # ----------------------------------------------------------------- facts
    @property
    def ended_epochs(self) -> list[int]:
        """Training epochs this member has ended, in order (what a resumed loop skips)."""
        return list(self._ended)

    @property
    def last_epoch(self) -> int:
        """The last epoch this member ended, 0 if none: resume training after it."""
        return self._ended[-1] if self._ended else 0

    @property
    def open_epoch(self) -> int | None:
        """The epoch being logged now, until `end_epoch`; None between epochs."""
        return self._epoch

    # ----------------------------------------------------------------- write
    def log(self, split: str, epoch: int, outputs, index=None, logits: bool = False, *, validate: bool = True) -> None:
        """Record rows of one split for one epoch.

        Parameters
        ----------
        split : a split of the run (e.g. "val", "train").
        epoch : the 1-based training epoch these predictions were made after.
        outputs : (batch, classes) probabilities, or logits with ``logits=True``; a numpy
            array or a torch tensor on any device, any float dtype.
        index : (batch,) positions of the rows in the split (0..samples-1). Omitted, the rows
            continue where this split's last call of the epoch ended: a loader that goes
            through the split in order (no shuffling) needs no index; one that shuffles does.
            A split is logged one way or the other within an epoch, not both.
        logits : apply a softmax over classes before storing.
        validate : check for NaN, negative values and rows that do not sum to 1 (skip only
            when the caller has checked them already).
        """
        self._check_writable()
        self.store._split_group(split)  # an unknown split is refused here
        n_samples = self.store.n_samples(split)
        epoch = epoch_number(epoch)
        rows = to_numpy(outputs, "outputs")
        if rows.ndim != 2 or rows.shape[1] != self.store.n_classes:
            raise InputError(f"outputs must be (batch, {self.store.n_classes}) for this run, got shape {rows.shape}")
        if rows.dtype.kind != "f":
            raise InputError(f"outputs must be floating point, got dtype {rows.dtype}")
        same_epoch = self._epoch == epoch
        cursor = self._cursor.get(split) if same_epoch else None  # rows logged in order so far, or None
        indexed = same_epoch and split in self._logged_by_index
        if index is None:
            if indexed:
                raise InputError(f"split {split!r} was logged with index this epoch; give index for every batch of it")
            start = cursor or 0
            if start + rows.shape[0] > n_samples:
                raise InputError(
                    f"{start + rows.shape[0]} rows of split {split!r} ({n_samples} samples) logged in order this epoch: "
                    "a loader that shuffles, or goes round twice, must give index"
                )
            positions = np.arange(start, start + rows.shape[0])
        else:
            if cursor is not None:
                raise InputError(f"split {split!r} was logged in order (no index) this epoch; log all of it that way")
            positions = self._positions(split, index, rows.shape[0])
        if validate:
            self._check_probabilities(rows, logits, epoch, positions)
        epoch = self._begin(epoch)  # only now: a refused call leaves the writer as it was
        if index is None:
            self._cursor[split] = int(positions[-1]) + 1 if len(positions) else (cursor or 0)
        else:
            self._logged_by_index.add(split)
        values = softmax(rows) if logits else rows
        self._buffer.setdefault(split, []).append((positions.astype(np.int64), values.astype(np.float16)))
        self._buffered += values.shape[0] * values.shape[1] * 2
        if self._buffered >= self.FLUSH_BYTES:
            self.flush()

    def log_embeddings(self, split: str, epoch: int, embeddings, index=None) -> None:
        """Record rows of one split's embeddings (the input of the classifier head) for one epoch.

        Log them for every sample of every split at the epochs the neighbourhood scores should
        read (at least the last), or for none; `end_epoch` projects them onto the train split's
        first principal axes (`confusion.store.embeddings`).

        Parameters
        ----------
        split : str
            A split of the run.
        epoch : int
            The 1-based training epoch, the one being logged.
        embeddings : array-like or torch.Tensor, shape (batch, width)
            Any float dtype, any device; flattened to (batch, width) if it has more axes.
        index : array-like of int, optional
            Positions of the rows in the split; omitted, rows continue in order.
        """
        self._check_writable()
        self.store._split_group(split)
        epoch = epoch_number(epoch)
        values = to_numpy(embeddings, "embeddings")
        values = values.reshape(len(values), -1) if values.ndim > 2 else values
        positions = None if index is None else self._positions(split, index, values.shape[0])
        check_embeddings(values)
        self._embeddings.log(split, self._begin(epoch), values, positions)

    def log_views(self, split: str, epoch: int, outputs, index=None, logits: bool = False) -> None:
        """Record rows of one split's predictions on test-time views (flips, shifts) for one epoch.

        Log them for every sample of every split at the epochs the view scores should read (at
        least the last), or for none. The plain view is what `log` records.

        Parameters
        ----------
        split : str
            A split of the run.
        epoch : int
            The 1-based training epoch, the one being logged.
        outputs : array-like or torch.Tensor, shape (batch, views, classes)
            Probabilities (or logits with ``logits=True``) of each view; the same views, in the
            same order, for every sample.
        index : array-like of int, optional
            Positions of the rows in the split; omitted, rows continue in order.
        logits : bool
            Apply a softmax over classes before storing.
        """
        self._check_writable()
        self.store._split_group(split)
        epoch = epoch_number(epoch)
        values = to_numpy(outputs, "outputs")
        if values.ndim != 3 or values.shape[2] != self.store.n_classes or values.shape[1] < 1:
            raise InputError(f"view outputs must be (batch, views, {self.store.n_classes}) for this run, got shape {values.shape}")
        if values.dtype.kind != "f":
            raise InputError(f"view outputs must be floating point, got dtype {values.dtype}")
        rows = values.reshape(-1, values.shape[2])
        positions = None if index is None else self._positions(split, index, values.shape[0])
        rows_of = np.arange(values.shape[0]) if positions is None else positions  # each row's sample (its batch row, without index)
        self._check_probabilities(rows, logits, epoch, np.repeat(rows_of, values.shape[1]))
        probs = (softmax(rows) if logits else rows).reshape(values.shape[0], -1)
        self._views.log(split, self._begin(epoch), probs, positions)

    def _check_probabilities(self, rows: np.ndarray, logits: bool, epoch: int, positions: np.ndarray | None) -> None:
        """(rows, classes) probabilities, or logits with `logits`: no NaN, none negative, rows summing
        to 1; a refusal names the sample by its position in the split (`positions`, one per row)."""
        problem = describe_invalid(rows[None, None], rows.dtype, 0, logits, [self.member], [epoch], positions)
        if problem:
            raise InputError(problem.replace("pass --logits", "pass logits=True").replace("drop --logits", "pass logits=False"))

    def _positions(self, split: str, index, batch: int) -> np.ndarray:
        """`index` as checked sample positions of `split`."""
        positions = to_numpy(index, "index")
        n_samples = self.store.n_samples(split)
        if positions.dtype.kind not in "iu" or positions.shape != (batch,):
            raise InputError(f"index must be ({batch},) integer sample positions, got {positions.dtype} {positions.shape}")
        if positions.size and (positions.min() < 0 or positions.max() >= n_samples):
            raise InputError(f"index holds positions outside 0..{n_samples - 1} of split {split!r}")
        return positions

    def end_epoch(self, epoch: int, info: dict[str, Any] | None = None) -> list[int]:
        """End `epoch` for this member, and commit every epoch all members have now ended.

        Parameters
        ----------
        epoch : int
            The 1-based training epoch being logged.
        info : dict, optional
            JSON-able facts kept with the epoch, e.g. the loss and accuracy a trainer measured.

        Returns
        -------
        list of int
            The epochs this call committed (often none).

        Raises
        ------
        InputError
            While any row of any split is missing for this epoch, or for another epoch than the
            one being logged.
        """
        self._check_writable()
        epoch = epoch_number(epoch)
        info = json_info(info)  # checked and converted before anything changes
        if self._epoch is None or epoch != self._epoch:
            if epoch in self._ended:
                raise InputError(f"member {self.member} already ended epoch {epoch}")
            if self._epoch is None:
                raise InputError(f"member {self.member} logged nothing for epoch {epoch}; log every split before end_epoch")
            raise InputError(f"member {self.member} is logging epoch {self._epoch}, not {epoch}")
        self.flush()
        for split in self.store.splits:
            logged = self._logged.get(split)
            missing = self.store.n_samples(split) if logged is None else int((~logged).sum())
            if missing:
                raise InputError(
                    f"member {self.member}, epoch {epoch}: {missing} of {self.store.n_samples(split)} rows of split "
                    f"{split!r} were never logged; log every sample before end_epoch"
                )
        if epoch in self.store.member_state(self.member)["ended"]:  # another writer of this member, or a file edited
            raise InputError(f"member {self.member} already ended epoch {epoch} (its member file says so)")
        for side in (self._embeddings, self._views):
            side.check_whole(epoch)  # both, before either is put in place
        for side in (self._embeddings, self._views):
            side.finish(epoch)  # in place before the member file: committed together
        ended = [*self._ended, epoch]
        infos = {**self._info, **({str(epoch): info} if info else {})}
        # The member file first; this writer's state only once it is written, so a failed write
        # (a full disk) leaves everything as it was and the same call can be tried again.
        write_json_atomic(self.store.member_file(self.member), {"member": self.member, "ended": ended, "info": infos})
        self._ended, self._info = ended, infos
        self._epoch = None
        self._logged = {}
        self._cursor, self._logged_by_index = {}, set()
        return self.store.commit_ready()

    def flush(self) -> None:
        """Write buffered rows to their chunk files (done by itself as the buffer fills)."""
        slot = len(self._ended)
        for split, parts in self._buffer.items():
            positions = np.concatenate([p for p, _ in parts])
            rows = np.concatenate([r for _, r in parts])
            order = np.argsort(positions, kind="stable")
            positions, rows = positions[order], rows[order]
            write_rows(self.store.probs(split), self.member, slot, positions, rows)
            logged = self._logged.setdefault(split, np.zeros(self.store.n_samples(split), dtype=bool))
            logged[positions] = True
        self._buffer = {}
        self._buffered = 0

    def close(self) -> None:
        """Release the member (an epoch not ended is dropped: log it again after a restart)."""
        if not self.closed:
            self.closed = True
            self._buffer = {}
            self._embeddings.drop()
            self._views.drop()
            self._stack.close()

    def __enter__(self) -> MemberWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------- internal
    def _check_writable(self) -> None:
        if self.closed:
            raise InputError(f"the writer of member {self.member} is closed")

    def _begin(self, epoch) -> int:
        epoch = epoch_number(epoch)
        if self._epoch is not None:
            if epoch != self._epoch:
                raise InputError(
                    f"member {self.member} is still logging epoch {self._epoch}; call end_epoch({self._epoch}) before logging epoch {epoch}"
                )
            return epoch
        if epoch <= self.last_epoch:
            raise InputError(f"member {self.member} already ended epoch {self.last_epoch}; log a later epoch")
        slot = len(self._ended)
        for other, ended in enumerate(self.store.ended_epochs()):
            if other != self.member and len(ended) > slot and ended[slot] != epoch:
                raise InputError(
                    f"member {other} recorded epoch {ended[slot]} in this place (recording {slot + 1}); "
                    f"every member must record the same epochs, not epoch {epoch}"
                )
        self.store.ensure_capacity(slot + 1)
        self._epoch = epoch
        return epoch


def json_info(info: Any) -> dict[str, Any] | None:
    """`info` as run.json can hold it: numpy and torch scalars become numbers, arrays lists.

    Parameters
    ----------
    info : dict or None
        What a writer keeps with an epoch (the loss, an accuracy, ...).

    Returns
    -------
    dict or None
        The same, in plain JSON types.

    Raises
    ------
    ParameterError
        When `info` is not a dict, or holds something JSON cannot (parameter ``info``).
    """
    if info is None:
        return None
    if not isinstance(info, dict):
        raise ParameterError(f"{{info}} must be a dict of JSON-able values, got {type(info).__name__}", "info")

    def _plain(value: Any) -> Any:
        if hasattr(value, "detach") and hasattr(value, "tolist"):  # a torch tensor
            value = value.detach().cpu().tolist()
        if isinstance(value, np.generic | np.ndarray):
            value = value.tolist()
        if isinstance(value, dict):
            return {str(k): _plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [_plain(v) for v in value]
        return value

    converted = _plain(info)
    try:
        json.dumps(converted, allow_nan=True)
    except (TypeError, ValueError) as error:
        raise ParameterError(f"{{info}} must hold JSON-able values: {error}", "info") from None
    return converted


def to_numpy(value, name: str) -> np.ndarray:
    """A numpy array from a numpy array, list or torch tensor (on any device, any dtype).

    Parameters
    ----------
    value : array-like or torch.Tensor
        The values.
    name : str
        What to call them in an error.

    Returns
    -------
    ndarray
        The values (bf16 tensors as float32).
    """
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach()
        if value.is_floating_point() and value.dtype.itemsize < 4:  # bf16 has no numpy dtype
            value = value.float()
        value = value.cpu().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name} is not an array: {error}") from None
