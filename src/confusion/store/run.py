"""A run directory made, opened (checked for damage first) and written: `RunStore.create`,
`RunStore.open`, run.json, splits added or replaced, the members' ended epochs.

What every reader asks of a run is `reads`' (`RunReads`, which `RunStore` extends); what a split
keeps of each prediction is its layout's (`layouts`), the commit rule is `commit`'s, and scoring
a run is `confusion.runscores`'s.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._files import write_json_atomic, write_table_atomic
from ..errors import InputError, OccupiedError, RunStoreError
from . import commit
from . import splits as split_changes
from .format import (
    ARRAYS,
    FORMAT,
    MAX_CLASSES,
    MAX_MEMBERS,
    MEMBERS_DIR,
    META_DIR,
    RUN_FILE,
    WRITTEN,
    Mode,
    SplitData,
    check_class_names,
    check_count,
    check_split,
    check_usable_directory,
    chunk_samples,
    damage_in_meta,
    is_run_store,
    open_group,
    shape_problem,
    software_versions,
)
from .layouts import layout_named, layout_of
from .locks import commit_lock, holder
from .reads import RunReads

__all__ = ["RunStore"]


class RunStore(RunReads):
    """A run directory. Create with `RunStore.create`, open with `RunStore.open`.

    The facts and reads of a run come from `RunReads`; this class makes, opens and writes it.

    Examples
    --------
    >>> from confusion.store import RunStore
    >>> from confusion.runscores import score_run
    >>> store = RunStore.open("runs/small")  # doctest: +SKIP
    >>> score_run(store, "val").confusion  # doctest: +SKIP
    """

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        n_classes: int,
        members: Sequence[dict[str, Any]],
        epoch_capacity: int,
        splits: dict[str, SplitData],
        classes: Sequence[str] | None = None,
        info: dict[str, Any] | None = None,
        exist_ok: bool = False,
        keep: str = "raw",
        topk: int | None = None,
    ) -> RunStore:
        """Make a new run directory (it must not exist or be empty) with empty predictions.

        Creation is serialised by a lock, and run.json is written last, so racing creators end
        with one store and a crash mid-creation leaves a directory the next attempt starts over in.

        Parameters
        ----------
        path : str or PathLike
            The run directory: absent, empty, or (with `exist_ok`) a run store already.
        n_classes : int
            C, at least 2.
        members : sequence of dict
            One entry per member (its index and seed, say), kept in run.json.
        epoch_capacity : int
            Epoch slots made now; the axis grows as epochs arrive.
        splits : dict of str to SplitData
            Each split's sample ids, labels, sources and metadata.
        classes : sequence of str, optional
            Class names in index order (default "0", "1", ...).
        info : dict, optional
            JSON-able facts kept in run.json (dataset, settings).
        exist_ok : bool
            Open a run store already at `path` (made by another job of the same run, say)
            instead of refusing; the caller checks that it is the run it means.
        keep : {"raw", "reduced", "topk"}
            "raw" keeps every member's class probabilities; "reduced" keeps only the reduced
            record (`confusion.reduced`), written as each epoch is committed, and deletes the
            raw probabilities of that epoch (over 100x smaller at C = 1,000); "topk" holds only
            the top `topk` probabilities of each prediction and their classes
            (`confusion.topk`: scores with bounds), written by `confusion import --topk`.
        topk : int, optional
            k, for ``keep="topk"``.

        Returns
        -------
        RunStore
            The new (or, with `exist_ok`, the existing) run, open for writing.

        Raises
        ------
        InputError
            When a setting or a split cannot make a run.
        OccupiedError
            When `path` holds anything else.
        """
        import zarr

        path = Path(path)
        if n_classes < 2 or not members or epoch_capacity < 0 or not splits:
            raise InputError("a run needs at least two classes, one member and one split")
        check_count(n_classes, "n_classes", MAX_CLASSES, least=2)
        check_count(len(members), "members", MAX_MEMBERS)
        if classes is not None:
            check_class_names(classes, n_classes)
        layout = layout_named(keep, topk, n_classes)
        for name, split in splits.items():  # before anything is written: a refused run leaves no folder
            check_split(name, split, n_classes)
        check_usable_directory(path, exist_ok)
        path.mkdir(parents=True, exist_ok=True)
        with commit_lock(path):
            if is_run_store(path):
                if exist_ok:
                    return cls.open(path, mode="a")
                raise OccupiedError(f"{path} already exists and is not empty; choose a new {{path}} directory", "path")
            shutil.rmtree(path / ARRAYS, ignore_errors=True)  # left by a creation that crashed
            group = zarr.open_group(path / ARRAYS, mode="w", zarr_format=3)
            meta = {
                "format": FORMAT,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "n_classes": int(n_classes),
                "classes": [str(c) for c in classes] if classes is not None else [str(c) for c in range(n_classes)],
                "members": [dict(m) for m in members],
                "epoch_capacity": int(epoch_capacity),
                "recorded_epochs": [],
                "splits": {},
                "versions": software_versions(),
                "member_files": True,  # members/member-M.json say which epochs each member ended
                **layout.run_entries(),
            }
            meta.update(info or {})
            store = cls(path, meta, group)
            for name, split in splits.items():
                store.meta["splits"][name] = store._create_split(name, split)
                if split.meta:
                    store.write_metadata(name, split.ids, split.meta)
            store.save_meta()
        note = layout.creation_note(n_classes, len(members))
        if note:
            print(f"confusion: note: {note}", file=sys.stderr, flush=True)
        return store

    @classmethod
    def open(cls, path: str | os.PathLike, mode: Mode = "r") -> RunStore:
        """Open an existing run directory, checking run.json and every array's shape first.

        Parameters
        ----------
        path : str or PathLike
            The run directory.
        mode : {"r", "a", "r+", "w", "w-"}
            ``"a"`` to write predictions into it.

        Returns
        -------
        RunStore
            The run.

        Raises
        ------
        RunStoreError
            When `path` is not a run store, or one line naming what is damaged.
        """
        path = Path(path)
        if not path.exists():
            raise RunStoreError(f"run directory {path} does not exist")
        if not is_run_store(path):
            raise RunStoreError(f"{path} is not a run store (no {RUN_FILE} and {ARRAYS}/ inside)")
        try:
            meta = json.loads((path / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:  # unreadable, not UTF-8, not JSON
            raise RunStoreError(f"{path / RUN_FILE} is unreadable: {str(error).splitlines()[0]}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise RunStoreError(f"{path} has format {found!r}; this version reads {FORMAT!r}")
        problem = damage_in_meta(meta)
        if problem:
            raise RunStoreError(f"{path / RUN_FILE} is damaged: {problem}")
        where = ARRAYS
        meta = split_changes.recover_swaps(path, meta)
        try:
            group = open_group(path, mode)
            layout = layout_of(meta)
            for split in meta["splits"]:  # the split's group metadata, then each array's, must parse
                arrays = ("probs", "labels", "ids") + layout.fields
                parts = [(split, f"{ARRAYS}/{split}/zarr.json")] + [(f"{split}/{a}", f"{ARRAYS}/{split}/{a}") for a in arrays]
                for key, where in parts:
                    node = group[key]
                    name = key.rpartition("/")[2]
                    problem = shape_problem(name, node, meta, split, probs_filled=layout.holds_probs) if key != split else None
                    if problem:
                        raise RunStoreError(f"{path}: {where} {problem} ({RUN_FILE} or the arrays are damaged)")
        except RunStoreError:
            raise
        except Exception as error:
            raise RunStoreError(f"{path}: {where} is missing or damaged ({type(error).__name__}); the run cannot be read") from None
        return cls(path, meta, group)

    def _create_split(self, name: str, split: SplitData) -> dict[str, Any]:
        """Make the arrays of a split; returns its entry for run.json (the caller lists it)."""
        if name in self.meta["splits"]:
            raise RunStoreError(f"{self.path} already has a split named {name!r}")
        check_split(name.removeprefix(".").removesuffix(".new"), split, self.n_classes)  # a staging group: the split's name
        n = len(split.ids)
        if name in self._group:  # left by an add_split that was killed before it listed the split
            del self._group[name]
        group = self._group.require_group(name)
        chunk = chunk_samples(n, self.n_classes)
        group.create_array(
            "probs",  # (a top-k run never writes it: metadata only)
            shape=(self.n_members, self.epoch_capacity, n, self.n_classes),
            chunks=(1, 1, chunk, self.n_classes),
            dtype="float16",
            fill_value=0.0,
            # Uncompressed: scoring reads at memory speed; float16 already halves the size.
            compressors=None,
            dimension_names=("member", "epoch", "sample", "class"),
        )
        group.create_array("labels", shape=(n,), chunks=(n,), dtype="int32", fill_value=-1)[:] = split.labels  # read as int64
        group.create_array("ids", shape=(n,), chunks=(n,), dtype=str)[:] = split.ids
        if split.sources is not None:
            group.create_array("sources", shape=(n,), chunks=(n,), dtype=str)[:] = split.sources
        self.layout.create_arrays(group, self.n_members, self.epoch_capacity, n, self.n_classes)
        # "written" tells cached scores of a replaced split from the new one. The group keeps it
        # too, so the data itself says which it is, whatever run.json says (`splits.recover_swaps`).
        written = time.time_ns()
        group.attrs.update({WRITTEN: written})
        return {"n": n, "labelled": bool((split.labels >= 0).any()), "written": written}

    def add_split(self, name: str, split: SplitData, fill: Callable[[], None]) -> None:
        """Add a split to a run whose epochs are committed (`splits.add_split`).

        Parameters
        ----------
        name : str
            The new split's name.
        split : SplitData
            Its sample ids, labels, sources and metadata.
        fill : callable
            Writes its predictions for every committed epoch (with `write`).
        """
        split_changes.add_split(self, name, split, fill)

    def replace_split(self, name: str, split: SplitData, fill: Callable[[str], None]) -> None:
        """Replace split `name` of a run whose epochs are committed (`splits.replace_split`).

        Parameters
        ----------
        name : str
            The split to replace.
        split : SplitData
            The new split's sample ids, labels, sources and metadata.
        fill : callable
            ``fill(group_name)`` writes its predictions into the staging group `group_name`.
        """
        split_changes.replace_split(self, name, split, fill)

    def save_meta(self) -> None:
        """Write `meta` to run.json, atomically."""
        write_json_atomic(self.path / RUN_FILE, self.meta)

    def write_metadata(self, split: str, ids: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        """Write (replace) the per-sample metadata of `split`: columns keyed by sample id.

        Parameters
        ----------
        split : str
            The split.
        ids : ndarray of str, shape (samples,)
            The sample id of each row.
        columns : dict of str to ndarray
            The columns, row-aligned with `ids`.
        """
        import pandas as pd

        table = pd.DataFrame({"sample": np.asarray(ids).astype(str), **{str(k): np.asarray(v) for k, v in columns.items()}})
        write_table_atomic(table, self.path / META_DIR / f"{split}.parquet")

    def write_topk(self, split: str, member: int, slot: int, values: np.ndarray, indices: np.ndarray, start: int = 0) -> None:
        """Store one member's top-k logs for one epoch slot of a top-k run.

        `confusion import --topk` writes every slot, then commits the epochs.

        Parameters
        ----------
        split : str
            The split.
        member : int
            The member.
        slot : int
            The epoch slot.
        values : ndarray, shape (samples, k)
            The top k probabilities.
        indices : ndarray, shape (samples, k)
            Their classes.
        start : int
            The first sample position they are for.
        """
        group = self._group[split]
        group["topk_values"][member, slot, start : start + len(values)] = np.asarray(values, dtype=np.float32)
        group["topk_indices"][member, slot, start : start + len(values)] = np.asarray(indices).astype(group["topk_indices"].dtype)

    def write(self, split: str, member: int, slot: int, probs: np.ndarray, start: int = 0) -> None:
        """Store one member's probabilities for one epoch slot, as float16.

        Only for filling a split that `add_split` is adding; epochs are recorded through
        `member_writer`, which owns the commit rule.

        Parameters
        ----------
        split : str
            The split (or the staging group being filled).
        member : int
            The member.
        slot : int
            The epoch slot.
        probs : ndarray, shape (samples, classes)
            The probabilities.
        start : int
            The first sample position they are for.
        """
        array = self._group[split]["probs"]
        if not 0 <= member < self.n_members or not 0 <= slot < self.epoch_capacity:
            raise InputError(f"member {member} / slot {slot} outside {self.n_members} members x {self.epoch_capacity} slots")
        probs = np.asarray(probs)
        if probs.ndim != 2 or probs.shape[1] != self.n_classes or start + probs.shape[0] > array.shape[2]:
            raise InputError(f"predictions of shape {probs.shape} do not fit split {split!r} {array.shape[2:]}")
        array[member, slot, start : start + probs.shape[0], :] = probs.astype(np.float16)

    def member_file(self, member: int) -> Path:
        """Where member `member` records the epochs it ended.

        Parameters
        ----------
        member : int
            The member.

        Returns
        -------
        Path
            RUN/members/member-M.json.
        """
        return self.path / MEMBERS_DIR / f"member-{int(member)}.json"

    def member_state(self, member: int) -> dict[str, Any]:
        """What member `member` has ended.

        Parameters
        ----------
        member : int
            The member.

        Returns
        -------
        dict
            {"ended": [epochs, in slot order], "info": {epoch: dict}}.
        """
        if not 0 <= member < self.n_members:
            raise InputError(f"member {member} outside 0..{self.n_members - 1}")
        try:
            state = json.loads(self.member_file(member).read_text(encoding="utf-8"))
        except FileNotFoundError:
            # A run recorded before member files existed committed only epochs every member ended.
            legacy = not self.meta.get("member_files")
            return {"ended": list(self.recorded_epochs) if legacy else [], "info": {}}
        except (OSError, ValueError) as error:
            raise RunStoreError(f"{self.member_file(member)} is unreadable: {error}") from None
        if not isinstance(state, dict) or not isinstance(state.get("ended"), list):
            raise RunStoreError(f"{self.member_file(member)} is damaged: no list of ended epochs")
        state.setdefault("info", {})
        return state

    def ended_epochs(self) -> list[list[int]]:
        """Per member, the training epochs it has ended, in slot order.

        Returns
        -------
        list of list of int
            One list per member.
        """
        return [list(self.member_state(m)["ended"]) for m in range(self.n_members)]

    def history(self, member: int) -> list[dict[str, Any]]:
        """The per-epoch information member `member` gave when it ended each epoch, in order.

        Parameters
        ----------
        member : int
            The member.

        Returns
        -------
        list of dict
            One dict per ended epoch, with its `epoch`.
        """
        state = self.member_state(member)
        return [dict(state["info"].get(str(epoch), {}), epoch=epoch) for epoch in state["ended"]]

    def member_writer(self, member: int) -> commit.MemberWriter:
        """The one writer of member `member` (refused while another process holds it).

        Parameters
        ----------
        member : int
            The member.

        Returns
        -------
        MemberWriter
            Its writer, holding the member's lock until closed.
        """
        return commit.MemberWriter(self, member)

    def member_holder(self, member: int) -> str | None:
        """Who is writing member `member` now.

        Parameters
        ----------
        member : int
            The member.

        Returns
        -------
        str or None
            "process 12 on node3", or None when nobody is.
        """
        return holder(self.path, f".member-{int(member)}.lock")

    def status(self) -> dict[str, Any]:
        """What `confusion status` shows.

        Returns
        -------
        dict
            Per member: the epochs it ended and whether a process writes it now; the committed
            epochs and the layout.
        """
        return {
            "run": str(self.path),
            "keep": self.layout.describe(),
            "committed_epochs": self.recorded_epochs,
            "members": [
                {"member": m, "ended_epochs": ended, "last_epoch": ended[-1] if ended else 0, "writer": self.member_holder(m)}
                for m, ended in enumerate(self.ended_epochs())
            ],
        }

    def refresh(self) -> None:
        """Re-read run.json (other processes commit epochs and grow the run)."""
        try:
            self.meta = json.loads((self.path / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise RunStoreError(f"{self.path / RUN_FILE} is unreadable: {error}") from None

    def commit_ready(self) -> list[int]:
        """Commit every slot that all members have ended with the same epoch (`commit.commit_ready`).

        Returns
        -------
        list of int
            The training epochs this call committed.
        """
        return commit.commit_ready(self)

    def ensure_capacity(self, slots: int) -> None:
        """Grow the epoch axis of every split to hold at least `slots` epochs.

        Parameters
        ----------
        slots : int
            The epoch slots needed.
        """
        commit.ensure_capacity(self, slots)
