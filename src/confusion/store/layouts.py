"""What a run keeps of each prediction, one class per layout, chosen once when a run is made or
opened (run.json's ``keep``):

- `Raw`: every member's class probabilities (float16), the paper's record.
- `Reduced`: the reduced record (`confusion.reduced`), written as each epoch commits; the raw
  probabilities of a committed epoch are then deleted (over 100x smaller at C = 1,000).
- `TopK`: the top k probabilities of each prediction and their classes (`confusion.topk`:
  scores with guaranteed bounds), written by `confusion import --topk`.

A layout knows which arrays a split holds, what happens when an epoch commits, how the last
epoch and the per-epoch record are read, and how one block of samples is scored; the store and
the scorer ask it and never test the layout's name.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .. import reduced
from ..errors import InputError, RunStoreError
from ..scores import LN2, InvalidProbabilities, confusion_scores
from ..signalmath import K
from . import signals
from .chunks import ChunkFileReader, Rows
from .format import LAYOUT_NAMES, chunk_samples, damaged

if TYPE_CHECKING:
    from .reads import RunReads

__all__ = ["LAYOUTS", "Layout", "Raw", "Reduced", "TopK", "layout_named", "layout_of"]

Block = dict[str, np.ndarray]


class Layout:
    """The interface, with the behaviour of a layout that derives nothing from the raw record."""

    name: ClassVar[str]
    fields: ClassVar[tuple[str, ...]] = ()  # arrays of a split beside probs, labels and ids
    committed_arrays: ClassVar[tuple[str, ...]]  # arrays every committed epoch has every chunk file of
    holds_probs: ClassVar[bool] = False  # every class probability stays readable
    member_writable: ClassVar[bool] = True  # written epoch by epoch through MemberWriter
    cached: ClassVar[bool] = True  # scores of a selection are worth keeping in RUN/cache/
    keeps_record: ClassVar[bool] = True  # the per-epoch record (`record_blocks`) can be read
    bounded: ClassVar[bool] = False  # scores are point estimates with guaranteed bounds
    scores_in_nats: ClassVar[bool] = True  # `score_rows` gives nats whatever the base asked
    keeps_signals: ClassVar[bool] = False  # embeddings and views are kept as their scores (`store.signals`)
    n_parts: ClassVar[int] = 2  # per-epoch arrays `score_rows` returns

    def run_entries(self) -> dict[str, Any]:
        """What run.json records of the layout.

        Returns
        -------
        dict
            ``keep`` (and ``topk``).
        """
        return {"keep": self.name}

    def creation_note(self, n_classes: int, n_members: int) -> str | None:
        """A line for the user when a run of this layout is made (None: nothing to say).

        Parameters
        ----------
        n_classes, n_members : int
            C and M of the run.

        Returns
        -------
        str or None
            The note.
        """
        return None

    def describe(self) -> str:
        """The layout in a status line.

        Returns
        -------
        str
            Its name, as `confusion status` shows it.
        """
        return self.name

    def create_arrays(self, group: Any, n_members: int, capacity: int, n_samples: int, n_classes: int) -> None:
        """Make the layout's own arrays of a new split (beside probs, labels and ids).

        Parameters
        ----------
        group : zarr.Group
            The split's group.
        n_members, capacity, n_samples, n_classes : int
            M, the epoch slots, the split's samples and C.
        """

    def resize(self, group: Any, slots: int) -> None:
        """Grow the layout's own arrays of a split to `slots` epoch slots.

        Parameters
        ----------
        group : zarr.Group
            The split's group.
        slots : int
            Epoch slots.
        """

    def require_probs(self, path: Any, what: str) -> None:
        """Refuse, in one line naming `what`, work that needs every class probability.

        Parameters
        ----------
        path : path-like
            The run, for the message.
        what : str
            The work refused.

        Raises
        ------
        InputError
            Where the layout does not keep every probability.
        """

    def before_commit(self, store: RunReads, slots: range, splits: Sequence[str], epochs: Sequence[int]) -> None:
        """Write what the layout derives from epoch slots `slots` before run.json lists them.

        Parameters
        ----------
        store : RunReads
            The run (its commit lock is held).
        slots : range
            The slots about to be committed.
        splits : sequence of str
            The split groups to derive it for.
        epochs : sequence of int
            The training epoch of every slot up to the last of `slots`.
        """

    def after_commit(self, store: RunReads, committed: int, splits: Sequence[str]) -> None:
        """Tidy up once run.json lists the first `committed` slots (a killed call is swept by the next).

        Parameters
        ----------
        store : RunReads
            The run (its commit lock is held).
        committed : int
            How many slots are committed.
        splits : sequence of str
            The split groups.
        """

    def after_fill(self, store: RunReads, group: str) -> None:
        """Derive the record of every committed epoch of a split group that was just filled.

        Parameters
        ----------
        store : RunReads
            The run.
        group : str
            The split group (a new split, or the staging group of a replaced one).
        """
        committed = len(store.recorded_epochs)
        self.before_commit(store, range(committed), [group], store.recorded_epochs)
        self.after_commit(store, committed, [group])

    def final_predictions(self, store: RunReads, split: str) -> reduced.FinalPredictions:
        """What the analyses use of the last committed epoch.

        Parameters
        ----------
        store : RunReads
            The run.
        split : str
            The split.

        Returns
        -------
        FinalPredictions
            Each member's arg-max, entropy (bits) and top probability, and the ensemble's arg-max.
        """
        raise NotImplementedError

    def record_blocks(self, store: RunReads, split: str, block_bytes: int, fields: Sequence[str] | None = None) -> Iterator[tuple[int, int, Block]]:
        """The reduced record of every committed epoch, block by block of samples.

        Parameters
        ----------
        store : RunReads
            The run.
        split : str
            The split.
        block_bytes : int
            About how much memory a block takes.
        fields : sequence of str, optional
            The fields wanted; default every field but the entropies.

        Yields
        ------
        tuple of (int, int, dict)
            (start, stop, {field: values}).
        """
        raise NotImplementedError

    def score_arrays(
        self, store: RunReads, split: str, members: list[int] | None, slots: np.ndarray
    ) -> tuple[dict[str, Any], list[int] | None, int, int]:
        """What `score_rows` reads of a split.

        Parameters
        ----------
        store : RunReads
            The run.
        split : str
            The split.
        members : list of int, optional
            The members chosen; None for all.
        slots : ndarray
            The epoch slots chosen.

        Returns
        -------
        tuple
            (opened arrays, members as the layout takes them, bytes per sample, samples per chunk).
        """
        raise NotImplementedError

    def score_rows(
        self,
        arrays: dict[str, Any],
        members: list[int] | None,
        slots: np.ndarray,
        start: int,
        stop: int,
        *,
        base: float,
        decomposition: bool,
        engine: str,
        where: str,
    ) -> list[np.ndarray]:
        """Per-epoch scores of rows start:stop of a split.

        A plain method of opened arrays, so a Dask worker runs it as this process does.

        Parameters
        ----------
        arrays : dict
            What `score_arrays` opened.
        members : list of int, optional
            The members chosen.
        slots : ndarray
            The epoch slots chosen.
        start, stop : int
            The rows.
        base : float
            2 or e (used where the layout scores in the base: `scores_in_nats` is False).
        decomposition : bool
            Whether the members' own entropies are wanted.
        engine : str
            The scoring engine for raw probabilities.
        where : str
            The run and split, for errors.

        Returns
        -------
        list of ndarray
            [entropy of the average, members' mean entropy (, lower bound, upper bound)], each
            (epochs, rows).
        """
        raise NotImplementedError


class Raw(Layout):
    """Every member's class probabilities, float16 (members, epoch slots, samples, classes)."""

    name = "raw"
    holds_probs = True
    committed_arrays = ("probs",)
    scores_in_nats = False

    def final_predictions(self, store: RunReads, split: str) -> reduced.FinalPredictions:
        return reduced.FinalPredictions.from_probs(store.final_probs(split))

    def record_blocks(self, store: RunReads, split: str, block_bytes: int, fields: Sequence[str] | None = None) -> Iterator[tuple[int, int, Block]]:
        """Computed from the raw probabilities (every field at once): analyses written against the
        record give the same numbers for a raw and a reduced run."""
        slots = len(store.recorded_epochs)
        n, m, c = store.n_samples(split), store.n_members, store.n_classes
        labels = store.labels(split)
        reader = store.probs_reader(split)
        block = max(1, block_bytes // (4 * m * max(1, slots) * c))
        for start in range(0, n, block):
            stop = min(n, start + block)
            probs = np.asarray(reader[slice(None), slice(0, slots), slice(start, stop)])
            try:
                record = reduced.summarize(probs, labels[start:stop])
            except InvalidProbabilities as error:
                raise damaged(f"{store.path}: split {split!r}", error) from None
            yield start, stop, record

    def score_arrays(
        self, store: RunReads, split: str, members: list[int] | None, slots: np.ndarray
    ) -> tuple[dict[str, Any], list[int] | None, int, int]:
        probs = store.probs(split)
        per_sample = 8 * (store.n_members if members is None else len(members)) * len(slots) * store.n_classes
        return {"probs": probs, "committed": len(store.recorded_epochs)}, members, per_sample, probs.chunks[2]

    def score_rows(
        self,
        arrays: dict[str, Any],
        members: list[int] | None,
        slots: np.ndarray,
        start: int,
        stop: int,
        *,
        base: float,
        decomposition: bool,
        engine: str,
        where: str,
    ) -> list[np.ndarray]:
        reader = Rows(ChunkFileReader.wrap(arrays["probs"], committed=arrays["committed"]), start, stop)
        try:
            scores = confusion_scores(reader, base=base, members=members, epochs=slots, engine=engine, decomposition=decomposition)
        except InvalidProbabilities as error:
            raise damaged(where, error) from None
        return [scores.per_epoch, scores.per_epoch_expected]


READ_TO_SCORE = ("member_entropy", "ensemble_entropy", "member_sumsq", "ensemble_top1")  # a reduced run's scoring reads


class Reduced(Layout):
    """The reduced record (`confusion.reduced`) in place of the raw probabilities."""

    name = "reduced"
    fields = reduced.FIELDS
    keeps_signals = True
    committed_arrays = ("member_entropy", "ensemble_entropy")

    def creation_note(self, n_classes: int, n_members: int) -> str | None:
        return reduced.small_saving(n_classes, n_members)

    def create_arrays(self, group: Any, n_members: int, capacity: int, n_samples: int, n_classes: int) -> None:
        reduced.create_arrays(group, n_members, capacity, n_samples, n_classes)

    def resize(self, group: Any, slots: int) -> None:
        reduced.resize(group, slots)

    def require_probs(self, path: Any, what: str) -> None:
        raise InputError(
            f"{what} needs the raw class probabilities, and {path} was recorded with --keep reduced "
            f"(it keeps the ensemble of all members and each member alone); record with --keep raw for this"
        )

    def before_commit(self, store: RunReads, slots: range, splits: Sequence[str], epochs: Sequence[int]) -> None:
        """Write each slot's reduced record from its raw chunks, then its embeddings' and views' scores."""
        for slot in slots:
            for group in splits:
                reader = ChunkFileReader.wrap(store._group[group]["probs"], committed=slot + 1)  # a missing raw chunk is damage
                labels = np.asarray(store._group[group]["labels"][:], dtype=np.int64)
                try:
                    reduced.reduce_slot(store._group[group], reader, slot, labels, store.n_classes)
                except InvalidProbabilities as error:
                    raise damaged(f"{store.path}: split {group!r}", error) from None
            signals.derive(store, slot, int(epochs[slot]), list(splits), K)

    def after_commit(self, store: RunReads, committed: int, splits: Sequence[str]) -> None:
        """Delete the committed slots' embeddings and views, and their raw chunks where the store is local."""
        signals.drop_inputs(store.path, store.recorded_epochs[:committed])
        for group in splits:
            reader = ChunkFileReader.wrap(store._group[group]["probs"])
            if not isinstance(reader, ChunkFileReader):
                continue
            for slot in range(committed):
                for member in range(store.n_members):
                    folder = (reader.root / reader.encode((member, slot, 0, 0))).parent.parent
                    if folder.is_dir():
                        shutil.rmtree(folder, ignore_errors=True)

    def final_predictions(self, store: RunReads, split: str) -> reduced.FinalPredictions:
        slot = np.array([len(store.recorded_epochs) - 1])
        n = store.n_samples(split)
        group, where = store._split_group(split), f"{store.path}: split {split!r}"

        names = ("member_argmax", "member_entropy", "member_sumsq", "member_label", "member_other", "ensemble_argmax", "ensemble_top1")
        record = {name: reduced.read(group, name, slot, 0, n, where=where) for name in names}
        reduced.check_record(record, store.n_classes, where=where, labels=store.labels(split))

        def field(name: str) -> np.ndarray:
            return record[name][:, 0] if name in reduced.MEMBER_FIELDS else record[name][0]

        return reduced.FinalPredictions(
            argmax=field("member_argmax").astype(np.int64),
            entropy=field("member_entropy").astype(np.float64) / LN2,
            # The top probability: the labelled class's or the largest other's (NaN label: the other).
            top1=np.fmax(field("member_label"), field("member_other")).astype(np.float64),
            ensemble_argmax=field("ensemble_argmax").astype(np.int64),
            ensemble_top1=field("ensemble_top1").astype(np.float64),
        )

    def record_blocks(self, store: RunReads, split: str, block_bytes: int, fields: Sequence[str] | None = None) -> Iterator[tuple[int, int, Block]]:
        """Read from the record, only the fields asked for."""
        slots = np.arange(len(store.recorded_epochs))
        n, m = store.n_samples(split), store.n_members
        labels = store.labels(split)
        group, where = store._split_group(split), f"{store.path}: split {split!r}"
        block = max(1, block_bytes // (4 * (m + 1) * max(1, len(slots)) * 4))
        if fields is None:
            fields = [f for f in reduced.FIELDS if f not in ("member_entropy", "ensemble_entropy")]  # (the entropies come from scoring)
        for start in range(0, n, block):
            stop = min(n, start + block)
            record = {f: reduced.read(group, f, slots, start, stop, where=where) for f in fields}
            if "member_label" in record and np.isnan(record["member_label"][..., labels[start:stop] >= 0]).any():  # NaN only where unknown
                raise RunStoreError(f"{where}: the reduced record member_label of a committed epoch is missing (its chunk files are damaged)")
            reduced.check_record(record, store.n_classes, where=where, labels=labels[start:stop])
            yield start, stop, record

    def score_arrays(
        self, store: RunReads, split: str, members: list[int] | None, slots: np.ndarray
    ) -> tuple[dict[str, Any], list[int] | None, int, int]:
        if members is not None and sorted(set(members)) == list(range(store.n_members)):
            members = None
        if members is not None and len(set(members)) != 1:
            self.require_probs(store.path, f"scoring members {members} (a subset of the {store.n_members})")
        group = store._split_group(split)
        arrays: dict[str, Any] = {name: group[name] for name in READ_TO_SCORE}
        arrays["n_classes"] = store.n_classes
        return arrays, members, 8 * (store.n_members + 1) * len(slots), 1

    def score_rows(
        self,
        arrays: dict[str, Any],
        members: list[int] | None,
        slots: np.ndarray,
        start: int,
        stop: int,
        *,
        base: float,
        decomposition: bool,
        engine: str,
        where: str,
    ) -> list[np.ndarray]:
        chosen = None if members is None else [members[0]]
        # The entropies, and the fields that vouch for them (`reduced.check_record`).
        record = {name: reduced.read_array(arrays[name], name, slots, start, stop, chosen, where=where) for name in READ_TO_SCORE}
        reduced.check_record(record, arrays["n_classes"], where=where, all_members=members is None)
        own = record["member_entropy"].astype(np.float64)
        if members is None:
            return [record["ensemble_entropy"].astype(np.float64), own.mean(axis=0)]
        return [own[0], own[0]]


class TopK(Layout):
    """The top k probabilities of each prediction and their classes (`confusion.topk`).

    Parameters
    ----------
    k : int
        Probabilities kept per prediction.
    """

    name = "topk"
    fields = ("topk_values", "topk_indices")
    committed_arrays = ("topk_values",)
    member_writable = False
    cached = False  # bounds are cheap to recompute
    keeps_record = False
    bounded = True
    n_parts = 4

    def __init__(self, k: int):
        self.k = int(k)

    def run_entries(self) -> dict[str, Any]:
        return {"keep": self.name, "topk": self.k}

    def describe(self) -> str:
        return f"top-{self.k} logs"

    def create_arrays(self, group: Any, n_members: int, capacity: int, n_samples: int, n_classes: int) -> None:
        index_type = reduced.argmax_dtype(n_classes)  # its fill value (the largest) is never a class
        for array, dtype in (("topk_values", np.dtype(np.float32)), ("topk_indices", index_type)):
            group.create_array(
                array,
                shape=(n_members, capacity, n_samples, self.k),
                chunks=(1, 1, chunk_samples(n_samples, 2 * self.k), self.k),
                dtype=dtype,
                fill_value=np.nan if dtype.kind == "f" else np.iinfo(dtype).max,
                compressors=None,
                dimension_names=("member", "epoch", "sample", "rank"),
            )

    def require_probs(self, path: Any, what: str) -> None:
        raise InputError(
            f"{what} needs every class probability, and {path} holds top-{self.k} logs "
            f"(confusion scores with bounds and hard sets); import full probabilities for this"
        )

    def final_predictions(self, store: RunReads, split: str) -> reduced.FinalPredictions:
        """Each member's top class is known; its entropy is the point estimate."""
        from ..topk import ensemble_argmax, epoch_bounds, read_topk_rows

        group = store._split_group(split)
        slot = np.array([len(store.recorded_epochs) - 1])
        values, indices = (
            a[:, 0]
            for a in read_topk_rows(
                group["topk_values"], group["topk_indices"], range(store.n_members), slot, 0, store.n_samples(split), f"{store.path}: split {split!r}"
            )
        )
        best = values.argmax(axis=-1)[..., None]
        return reduced.FinalPredictions(
            argmax=np.take_along_axis(indices, best, axis=-1)[..., 0],
            entropy=epoch_bounds(values, indices, store.n_classes)[3] / LN2,
            top1=np.take_along_axis(values, best, axis=-1)[..., 0].astype(np.float64),
            ensemble_argmax=ensemble_argmax(values, indices, store.n_classes),
        )

    def record_blocks(self, store: RunReads, split: str, block_bytes: int, fields: Sequence[str] | None = None) -> Iterator[tuple[int, int, Block]]:
        store.labels(split)  # damaged labels are named first, as on every layout
        self.require_probs(store.path, "this statistic (labelled-class probabilities, arg-max flips)")
        yield from ()

    def score_arrays(
        self, store: RunReads, split: str, members: list[int] | None, slots: np.ndarray
    ) -> tuple[dict[str, Any], list[int] | None, int, int]:
        members = list(range(store.n_members)) if members is None else members
        group = store._split_group(split)
        arrays = {"values": group["topk_values"], "indices": group["topk_indices"], "n_classes": store.n_classes}
        return arrays, members, 12 * len(members) * len(slots) * self.k, 1

    def score_rows(
        self,
        arrays: dict[str, Any],
        members: list[int] | None,
        slots: np.ndarray,
        start: int,
        stop: int,
        *,
        base: float,
        decomposition: bool,
        engine: str,
        where: str,
    ) -> list[np.ndarray]:
        from ..topk import epoch_bounds, read_topk_rows

        values, indices = read_topk_rows(arrays["values"], arrays["indices"], members, slots, start, stop, where)
        parts = [np.empty((len(slots), stop - start)) for _ in range(4)]
        for t in range(len(slots)):
            point, low, high, member_point = epoch_bounds(values[:, t], indices[:, t], arrays["n_classes"])
            parts[0][t], parts[2][t], parts[3][t], parts[1][t] = point, low, high, member_point.mean(axis=0)
        return parts


LAYOUTS: dict[str, type[Layout]] = {layout.name: layout for layout in (Raw, Reduced, TopK)}
assert tuple(LAYOUTS) == LAYOUT_NAMES


def layout_named(keep: str, topk: int | None, n_classes: int) -> Layout:
    """The layout a new run asks for, checked.

    Parameters
    ----------
    keep : {"raw", "reduced", "topk"}
        What the run keeps.
    topk : int, optional
        k, for "topk": 1 <= k <= C.
    n_classes : int
        C.

    Returns
    -------
    Layout
        An instance of its class.
    """
    if keep == TopK.name:
        if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= n_classes:
            raise InputError(f"a top-k run needs k in 1..{n_classes}, got {topk!r}")
        return TopK(topk)
    return LAYOUTS[reduced.check_keep(keep)]()


def layout_of(meta: dict[str, Any]) -> Layout:
    """The layout of an opened run.

    Parameters
    ----------
    meta : dict
        Its run.json, checked by `format.damage_in_meta`.

    Returns
    -------
    Layout
        An instance of its class.
    """
    keep = str(meta.get("keep", Raw.name))
    return TopK(int(meta["topk"])) if keep == TopK.name else LAYOUTS[keep]()
