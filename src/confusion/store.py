"""The run store: one directory per run, the contract between training and everything after.

    RUN/run.json              what was run, and which epochs are committed (atomic writes)
    RUN/predictions.zarr/     Zarr v3 group, one subgroup per split:
        <split>/probs         (members, epoch slots, samples, classes) float16, chunked along samples
        <split>/labels        (samples,) int64, -1 where unknown
        <split>/ids           (samples,) str, stable sample ids
        <split>/sources       (samples,) str, source file of each sample (optional)
        <split>/member_*, ensemble_*   the reduced record (runs kept `reduced`: see reduced.py);
                              their raw probs chunks are deleted once an epoch is committed
    RUN/meta/<split>.parquet  per-sample metadata (optional): a `sample` id column and any others
                              (a document's text, a user's columns); read joined by sample id
    RUN/members/member-M.json the epochs member M has ended, written by its writer alone
    RUN/.lock                 held (flock) by a command that owns the whole run (train, import)
    RUN/.member-M.lock        held (flock) by the one process writing member M
    RUN/.commit.lock          taken briefly (flock) to create the run, grow it, or commit

The commit rule lives here, and every writer (the trainer's workers, `confusion import`, a
user's loop through `confusion.Recorder`, a job per seed on another machine sharing the
directory) goes through it: a member writes only its own chunks and, once a whole epoch of
every split is written, marks that (member, epoch) ended in its member file. The k-th epoch a
member ends goes into epoch slot k, so a writer knows its slot without asking anyone. Slot k
is committed, and `run.json["recorded_epochs"][k]` names its training epoch (1-based), as soon
as every member has ended its k-th epoch and they agree on its number; commits happen in slot
order, exactly once, under `.commit.lock`, by whichever writer ends the last member of an
epoch. A member only writes the slot after its last ended one, so a committed slot never
changes, and a crash never leaves a half epoch that scoring would read. The epoch axis grows
as epochs arrive; its length need not be known in advance.

Locks are POSIX advisory locks (flock): they hold between processes on one machine and on
network filesystems whose clients implement flock across machines (NFSv4, Lustre and GPFS
with locking enabled); on a filesystem without working locks, run at most one writer per
member and let them end epochs at different moments.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import mmap
import os
import platform
import shutil
import socket
import sys
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from . import __version__
from ._files import atomic_path, write_json_atomic
from . import reduced
from .errors import InputError, RunLockedError, RunStoreError
from .scores import LN2, InvalidProbabilities, Scores, check_base, confusion_scores, describe_invalid, softmax

FORMAT = "confusion-run/1"
RUN_FILE = "run.json"
ARRAYS = "predictions.zarr"
LOCK_FILE = ".lock"
COMMIT_LOCK = ".commit.lock"
MEMBERS_DIR = "members"
# Files a run directory may hold before run.json exists (locks, a half-made store).
META_DIR = "meta"
EMBEDDINGS = "embeddings"  # text datasets' cached sentence embeddings (written before the store)
_OWN_NAMES = {LOCK_FILE, COMMIT_LOCK, ARRAYS, EMBEDDINGS}
# Samples per chunk are chosen so one chunk (one member, one epoch) is about this many bytes.
CHUNK_BYTES = 2**20
SCORE_CACHE_BYTES = 256 * 2**20  # scores of a selection are cached when they take at most this


@dataclass
class SplitData:
    """What a run stores about one split besides predictions."""

    ids: np.ndarray  # (samples,) str
    labels: np.ndarray  # (samples,) int64, -1 = unknown
    sources: np.ndarray | None = None  # (samples,) str, or None
    meta: dict[str, np.ndarray] | None = None  # per-sample columns, row-aligned with ids

    def __post_init__(self):
        self.ids = np.asarray(self.ids).astype(str)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.ids.ndim != 1 or self.labels.shape != self.ids.shape:
            raise InputError(f"sample ids {self.ids.shape} and labels {self.labels.shape} must be (samples,) alike")
        if len(np.unique(self.ids)) != len(self.ids):
            raise InputError("sample ids must be unique within a split")
        if (self.ids == "").any():
            raise InputError("sample ids must not be empty")
        if self.sources is not None:
            self.sources = np.asarray(self.sources).astype(str)
            if self.sources.shape != self.ids.shape:
                raise InputError(f"sources {self.sources.shape} must match sample ids {self.ids.shape}")
        for name, column in (self.meta or {}).items():
            if len(column) != len(self.ids) or name == "sample":
                raise InputError(f"metadata column {name!r} must have one value per sample and not be named 'sample'")


def software_versions() -> dict[str, str]:
    versions = {"confusion": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for name in ("torch", "torchvision", "zarr", "numba"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "?")
    import zarr

    versions["zarr"] = zarr.__version__
    return versions


def chunk_samples(n_samples: int, n_classes: int) -> int:
    return max(1, min(n_samples, CHUNK_BYTES // (2 * n_classes)))


def is_run_store(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / RUN_FILE).is_file() and (path / ARRAYS).is_dir()


class RunStore:
    """A run directory. Create with `RunStore.create`, open with `RunStore.open`."""

    def __init__(self, path: Path, meta: dict[str, Any], group):
        self.path = path
        self.meta = meta
        self._group = group

    # ----------------------------------------------------------------- create / open
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
    ) -> "RunStore":
        """Make a new run directory (it must not exist or be empty) with empty predictions.

        keep: "raw" keeps every member's class probabilities; "reduced" keeps only the reduced
        record (`confusion.reduced`), written as each epoch is committed, and deletes the raw
        probabilities of that epoch (over 100x smaller at C = 1,000); "topk" holds only the
        top `topk` probabilities of each prediction and their classes (`confusion.topk`: scores
        with bounds), written by `confusion import --topk`.

        With ``exist_ok=True`` a run store already at `path` (made by another job of the same
        run, say) is opened instead; the caller checks that it is the run it means. Creation
        is serialised by a lock, and run.json is written last, so racing creators end with one
        store and a crash mid-creation leaves a directory the next attempt starts over in.
        """
        import zarr

        path = Path(path)
        if n_classes < 2 or not members or epoch_capacity < 0 or not splits:
            raise InputError("a run needs at least two classes, one member and one split")
        if classes is not None:
            check_class_names(classes, n_classes)
        if keep != "topk":
            reduced.check_keep(keep)
        elif not isinstance(topk, int) or not 1 <= topk <= n_classes:
            raise InputError(f"a top-k run needs k in 1..{n_classes}, got {topk!r}")
        for name, split in splits.items():  # before anything is written: a refused run leaves no folder
            _check_split(name, split, n_classes)
        check_usable_directory(path, exist_ok)
        path.mkdir(parents=True, exist_ok=True)
        with _flock(path / COMMIT_LOCK):
            if is_run_store(path):
                if exist_ok:
                    return cls.open(path, mode="a")
                raise RunStoreError(f"{path} already exists and is not empty; choose a new --out directory")
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
                "keep": keep,
                **({"topk": int(topk)} if keep == "topk" else {}),
            }
            meta.update(info or {})
            store = cls(path, meta, group)
            for name, split in splits.items():
                store.meta["splits"][name] = store._create_split(name, split)
                if split.meta:
                    store.write_metadata(name, split.ids, split.meta)
            store.save_meta()
        return store

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> "RunStore":
        """Open an existing run directory; `mode="a"` to write predictions into it."""
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
        problem = _damage_in_meta(meta)
        if problem:
            raise RunStoreError(f"{path / RUN_FILE} is damaged: {problem}")
        where = ARRAYS
        try:
            group = _open_group(path, mode)
            for split in meta["splits"]:  # the split's group metadata, then each array's, must parse
                arrays = ("probs", "labels", "ids") + {"reduced": reduced.FIELDS, "topk": ("topk_values", "topk_indices")}.get(meta.get("keep"), ())
                parts = [(split, f"{ARRAYS}/{split}/zarr.json")] + [(f"{split}/{a}", f"{ARRAYS}/{split}/{a}") for a in arrays]
                for key, where in parts:
                    node = group[key]
                    problem = _shape_problem(key.rpartition("/")[2], node, meta, split) if key != split else None
                    if problem:
                        raise RunStoreError(f"{path}: {where} {problem} ({RUN_FILE} or the arrays are damaged)")
        except RunStoreError:
            raise
        except Exception as error:  # noqa: BLE001 - zarr raises many kinds for damaged metadata
            raise RunStoreError(f"{path}: {where} is missing or damaged ({type(error).__name__}); the run cannot be read") from None
        return cls(path, meta, group)

    def _create_split(self, name: str, split: SplitData) -> dict[str, Any]:
        """Make the arrays of a split; returns its entry for run.json (the caller lists it)."""
        if name in self.meta["splits"]:
            raise RunStoreError(f"{self.path} already has a split named {name!r}")
        _check_split(name, split, self.n_classes)
        n = len(split.ids)
        if name in self._group:  # left by an add_split that was killed before it listed the split
            del self._group[name]
        group = self._group.require_group(name)
        chunk = chunk_samples(n, self.n_classes)
        if self.keep == "topk":
            k = int(self.meta["topk"])
            index_type = reduced.argmax_dtype(self.n_classes)  # its fill value (the largest) is never a class
            for array, dtype in (("topk_values", np.dtype(np.float32)), ("topk_indices", index_type)):
                group.create_array(
                    array, shape=(self.n_members, self.epoch_capacity, n, k), chunks=(1, 1, chunk_samples(n, 2 * k), k), dtype=dtype,
                    fill_value=np.nan if dtype.kind == "f" else np.iinfo(dtype).max, compressors=None, dimension_names=("member", "epoch", "sample", "rank"),
                )
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
        if self.keep == "reduced":
            reduced.create_arrays(group, self.n_members, self.epoch_capacity, n, self.n_classes)
        # "written" tells cached scores of a replaced split from the new one.
        return {"n": n, "labelled": bool((split.labels >= 0).any()), "written": time.time_ns()}

    def add_split(self, name: str, split: SplitData, fill: Callable[[], None]) -> None:
        """Add a split (e.g. an imported unlabeled one) to a run whose epochs are committed.

        `fill()` writes the split's predictions for every committed epoch (with `write`); the
        split is listed in run.json only after it returns, so a crash or error never leaves a
        listed split without its data. On error the arrays are removed again.
        """
        entry = self._filled_split(name, split, fill)
        if split.meta:
            self.write_metadata(name, split.ids, split.meta)
        with _flock(self.path / COMMIT_LOCK):
            self.refresh()
            self.meta["splits"][name] = entry
            self.save_meta()

    def _filled_split(self, group: str, split: SplitData, fill: Callable[[], None]) -> dict[str, Any]:
        """Make the arrays of `group`, let `fill()` write them; on error remove them again."""
        entry = self._create_split(group, split)
        try:
            fill()
            if self.keep == "reduced":  # the committed epochs of the new split, reduced like every other
                for slot in range(len(self.recorded_epochs)):
                    self._reduce(group, slot)
                self._drop_raw(range(len(self.recorded_epochs)), [group])
        except BaseException:
            with contextlib.suppress(Exception):
                del self._group[group]
            raise
        return entry

    def replace_split(self, name: str, split: SplitData, fill: Callable[[str], None]) -> None:
        """Replace split `name` of a run whose epochs are committed (`import --overwrite`).

        The new arrays are made beside the old ones as `name.new`, `fill(group_name)` writes
        them, and only then two renames swap them in and run.json is updated, so a failure
        leaves the old split as it was.
        """
        if name not in self.splits:
            raise InputError(f"{self.path} has no split {name!r} to replace")
        staging = f"{name}.new"
        entry = self._filled_split(staging, split, lambda: fill(staging))
        if split.meta:  # read joined by sample id, so the old arrays with the new metadata stay consistent
            self.write_metadata(name, split.ids, split.meta)
        root = self.path / ARRAYS
        with _flock(self.path / COMMIT_LOCK):
            self.refresh()
            shutil.rmtree(root / f"{name}.old", ignore_errors=True)
            os.rename(root / name, root / f"{name}.old")
            os.rename(root / staging, root / name)
            self.meta["splits"][name] = entry
            self.save_meta()
        shutil.rmtree(root / f"{name}.old", ignore_errors=True)
        self._group = _open_group(self.path, "a")

    def save_meta(self) -> None:
        write_json_atomic(self.path / RUN_FILE, self.meta)

    def write_metadata(self, split: str, ids: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        """Write (replace) the per-sample metadata of `split`: columns keyed by sample id."""
        import pandas as pd

        from ._files import write_table_atomic

        table = pd.DataFrame({"sample": np.asarray(ids).astype(str), **{str(k): np.asarray(v) for k, v in columns.items()}})
        write_table_atomic(table, self.path / META_DIR / f"{split}.parquet")

    def metadata(self, split: str):
        """The split's metadata as a DataFrame in sample order (first column `sample`), or None.

        Joined by sample id: samples the metadata does not name get empty values."""
        import pandas as pd

        path = self.path / META_DIR / f"{split}.parquet"
        if split not in self.meta["splits"] or not path.is_file():
            return None
        try:
            table = pd.read_parquet(path)
        except (OSError, ValueError) as error:
            raise RunStoreError(f"{path} is unreadable ({str(error).splitlines()[0]}); delete it or import --meta again") from None
        if "sample" not in table.columns:
            raise RunStoreError(f"{path} lacks its 'sample' column; delete it or import --meta again")
        ids = self.sample_ids(split)
        table = table.drop_duplicates("sample").set_index(table["sample"].astype(str).rename(None)).drop(columns="sample")
        return table.reindex(ids).reset_index(names="sample")

    def metadata_columns(self, split: str, taken) -> dict[str, np.ndarray]:
        """The split's metadata columns in sample order, to put beside a table whose columns are
        `taken`: one that clashes is named `meta_<name>`. Empty when the split has none."""
        meta = self.metadata(split)
        if meta is None:
            return {}
        return {(column if column not in taken else f"meta_{column}"): meta[column].to_numpy() for column in meta.columns[1:]}

    # ----------------------------------------------------------------- facts
    @property
    def n_members(self) -> int:
        return len(self.meta["members"])

    @property
    def n_classes(self) -> int:
        return int(self.meta["n_classes"])

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def epoch_capacity(self) -> int:
        return int(self.meta["epoch_capacity"])

    @property
    def recorded_epochs(self) -> list[int]:
        """Training epoch numbers (1-based) of the committed slots, in slot order."""
        return list(self.meta["recorded_epochs"])

    @property
    def splits(self) -> list[str]:
        return list(self.meta["splits"])

    @property
    def keep(self) -> str:
        """"raw" (every class probability is kept) or "reduced" (only `confusion.reduced`'s record)."""
        return str(self.meta.get("keep", "raw"))

    def _needs_raw(self, what: str) -> None:
        if self.keep == "reduced":
            raise InputError(
                f"{what} needs the raw class probabilities, and {self.path} was recorded with --keep reduced "
                f"(it keeps the ensemble of all members and each member alone); record with --keep raw for this"
            )
        if self.keep == "topk":
            raise InputError(
                f"{what} needs every class probability, and {self.path} holds top-{self.meta.get('topk')} logs "
                f"(confusion scores with bounds and hard sets); import full probabilities for this"
            )

    def chosen_splits(self, names: Sequence[str] | None = None) -> list[str]:
        """`names` in order without repeats (a split named twice is read once), or every split;
        one line naming a split the run does not have."""
        chosen = list(dict.fromkeys(names)) if names else self.splits
        unknown = [name for name in chosen if name not in self.meta["splits"]]
        if unknown:
            raise InputError(f"{self.path} has no split {unknown[0]!r}; it has {', '.join(self.splits)}")
        return chosen

    def _split_group(self, split: str):
        self.chosen_splits([split])
        try:
            return self._group[split]
        except Exception as error:  # noqa: BLE001 - a missing or unparsable group zarr.json
            raise RunStoreError(f"{self.path}: {ARRAYS}/{split} is missing or damaged ({type(error).__name__})") from None

    def probs(self, split: str):
        """The zarr array (members, epoch slots, samples, classes); only committed slots are valid."""
        return self._split_group(split)["probs"]

    def probs_reader(self, split: str):
        """What scoring reads: raw chunk files when the store is local and uncompressed, else zarr.

        A chunk file of a committed epoch that is missing is reported as damage (zarr itself
        would read it as zeros). Refused on a run kept reduced (its raw epochs are gone)."""
        self._needs_raw("reading class probabilities")
        return ChunkFileReader.wrap(self.probs(split), committed=len(self.recorded_epochs))

    def _read(self, split: str, name: str, read: Callable = lambda array: array[:]):
        """A small array of a split (labels, ids, sources), or one line naming the damaged part."""
        group = self._split_group(split)
        try:
            return read(group[name])
        except Exception as error:  # noqa: BLE001 - zarr/numcodecs raise many kinds for damaged chunks
            raise RunStoreError(f"{self.path}: {ARRAYS}/{split}/{name} is damaged ({type(error).__name__}: {str(error)[:80]})") from None

    def labels(self, split: str) -> np.ndarray:
        labels = np.asarray(self._read(split, "labels"), dtype=np.int64)
        if self.meta["splits"][split].get("labelled") and (labels < 0).all():  # zarr's fill value: the chunk is gone
            raise RunStoreError(f"{self.path}: the labels of split {split!r} are missing ({ARRAYS}/{split}/labels is damaged)")
        return labels

    def sample_ids(self, split: str) -> np.ndarray:
        ids = self._read(split, "ids", _strings)
        if len(ids) != self.meta["splits"][split]["n"] or (ids == "").any():  # a lost chunk reads as blanks
            raise RunStoreError(f"{self.path}: the sample ids of split {split!r} are missing ({ARRAYS}/{split}/ids is damaged)")
        return ids

    def final_probs(self, split: str) -> np.ndarray:
        """Every member's probabilities at the last committed epoch: (members, samples, classes) float32.

        The one place "the last epoch's predictions" are read (hard sets, evaluation, reports).
        """
        if not self.recorded_epochs:
            raise RunStoreError(f"{self.path} has no committed epoch yet; nothing to read")
        self._needs_raw("the final class probabilities")
        slot = len(self.recorded_epochs) - 1
        final = np.asarray(self.probs_reader(split)[:, slot : slot + 1, :][:, 0], dtype=np.float32)
        empty = np.flatnonzero((final.sum(axis=2) == 0).any(axis=0))
        if len(empty):  # no probability row sums to 0: the data of these samples is lost
            raise RunStoreError(f"{self.path}: split {split!r} has no predictions for {len(empty)} samples at its last epoch (its chunk files are damaged)")
        return final

    def final_predictions(self, split: str) -> reduced.FinalPredictions:
        """What the analyses use of the last committed epoch (each member's arg-max, entropy and top
        probability; the ensemble's arg-max), from the raw probabilities or the reduced record."""
        if not self.recorded_epochs:
            raise RunStoreError(f"{self.path} has no committed epoch yet; nothing to read")
        if self.keep == "raw":
            return reduced.FinalPredictions.from_probs(self.final_probs(split))
        slot = np.array([len(self.recorded_epochs) - 1])
        if self.keep == "topk":  # each member's top class is known; its entropy is the point estimate
            from .topk import ensemble_argmax, epoch_bounds

            group = self._split_group(split)
            values, indices = (
                a[:, 0] for a in _topk_rows(group["topk_values"], group["topk_indices"], range(self.n_members), slot, 0, self.n_samples(split), f"{self.path}: split {split!r}")
            )
            best = values.argmax(axis=-1)[..., None]
            return reduced.FinalPredictions(
                argmax=np.take_along_axis(indices, best, axis=-1)[..., 0], entropy=epoch_bounds(values, indices, self.n_classes)[3] / LN2,
                top1=np.take_along_axis(values, best, axis=-1)[..., 0].astype(np.float64), ensemble_argmax=ensemble_argmax(values, indices, self.n_classes),
            )
        n = self.n_samples(split)
        group, where = self._split_group(split), f"{self.path}: split {split!r}"
        entropy = reduced.read(group, "member_entropy", slot, 0, n, where=where)[:, 0].astype(np.float64) / LN2
        return reduced.FinalPredictions(
            argmax=reduced.read(group, "member_argmax", slot, 0, n, where=where)[:, 0].astype(np.int64),
            entropy=entropy,
            # The top probability: the labelled class's or the largest other's (NaN label: the other).
            top1=np.fmax(
                reduced.read(group, "member_label", slot, 0, n, where=where)[:, 0], reduced.read(group, "member_other", slot, 0, n, where=where)[:, 0]
            ).astype(np.float64),
            ensemble_argmax=reduced.read(group, "ensemble_argmax", slot, 0, n, where=where)[0].astype(np.int64),
        )

    def record_blocks(self, split: str, block_bytes: int):
        """The reduced record of every committed epoch, block by block of samples: yields
        (start, stop, {field: values}) with member fields (members, epochs, samples) and ensemble
        fields (epochs, samples). Computed from the raw probabilities on a raw run, read on a
        reduced one: analyses written against the record give the same numbers for both."""
        slots = np.arange(len(self.recorded_epochs))
        n, m, c = self.n_samples(split), self.n_members, self.n_classes
        labels = self.labels(split)
        if self.keep == "topk":
            self._needs_raw("this statistic (labelled-class probabilities, arg-max flips)")
        if self.keep == "raw":
            reader = self.probs_reader(split)
            block = max(1, block_bytes // (4 * m * max(1, len(slots)) * c))
            for start in range(0, n, block):
                stop = min(n, start + block)
                probs = np.asarray(reader[slice(None), slice(0, len(slots)), slice(start, stop)])
                try:
                    record = reduced.summarize(probs, labels[start:stop])
                except InvalidProbabilities as error:
                    raise _damaged(f"{self.path}: split {split!r}", error) from None
                yield start, stop, record
            return
        group, where = self._split_group(split), f"{self.path}: split {split!r}"
        block = max(1, block_bytes // (4 * (m + 1) * max(1, len(slots)) * 4))
        fields = [f for f in reduced.FIELDS if f not in ("member_entropy", "ensemble_entropy")]  # (the entropies come from `scores`)
        for start in range(0, n, block):
            stop = min(n, start + block)
            record = {f: reduced.read(group, f, slots, start, stop, where=where) for f in fields}
            if np.isnan(record["member_label"][..., labels[start:stop] >= 0]).any():  # NaN only where the label is unknown
                raise RunStoreError(f"{where}: the reduced record member_label of a committed epoch is missing (its chunk files are damaged)")
            yield start, stop, record

    def sources(self, split: str) -> np.ndarray | None:
        return self._read(split, "sources", _strings) if "sources" in self._split_group(split) else None

    def n_samples(self, split: str) -> int:
        return int(self.meta["splits"][split]["n"]) if split in self.meta["splits"] else len(self.sample_ids(split))

    # ----------------------------------------------------------------- write
    def write_topk(self, split: str, member: int, slot: int, values: np.ndarray, indices: np.ndarray, start: int = 0) -> None:
        """Store one member's top-k (values, indices), each (samples, k), for one epoch slot of a
        top-k run (`confusion import --topk`, which commits the epochs once all are written)."""
        group = self._group[split]
        group["topk_values"][member, slot, start : start + len(values)] = np.asarray(values, dtype=np.float32)
        group["topk_indices"][member, slot, start : start + len(values)] = np.asarray(indices).astype(group["topk_indices"].dtype)

    def write(self, split: str, member: int, slot: int, probs: np.ndarray, start: int = 0) -> None:
        """Store one member's probabilities (samples, classes) for one epoch slot, as float16.

        Only for filling a split that `add_split` is adding; epochs are recorded through
        `member_writer`, which owns the commit rule.
        """
        array = self._group[split]["probs"]
        if not 0 <= member < self.n_members or not 0 <= slot < self.epoch_capacity:
            raise InputError(f"member {member} / slot {slot} outside {self.n_members} members x {self.epoch_capacity} slots")
        probs = np.asarray(probs)
        if probs.ndim != 2 or probs.shape[1] != self.n_classes or start + probs.shape[0] > array.shape[2]:
            raise InputError(f"predictions of shape {probs.shape} do not fit split {split!r} {array.shape[2:]}")
        array[member, slot, start : start + probs.shape[0], :] = probs.astype(np.float16)

    # ----------------------------------------------------------------- the commit rule
    def member_file(self, member: int) -> Path:
        return self.path / MEMBERS_DIR / f"member-{int(member)}.json"

    def member_state(self, member: int) -> dict[str, Any]:
        """What member `member` has ended: {"ended": [epochs, in slot order], "info": {epoch: dict}}."""
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
        """Per member, the training epochs it has ended, in slot order."""
        return [list(self.member_state(m)["ended"]) for m in range(self.n_members)]

    def history(self, member: int) -> list[dict[str, Any]]:
        """The per-epoch information member `member` gave when it ended each epoch, in order."""
        state = self.member_state(member)
        return [dict(state["info"].get(str(epoch), {}), epoch=epoch) for epoch in state["ended"]]

    def member_writer(self, member: int) -> "MemberWriter":
        """The one writer of member `member` (refused while another process holds it)."""
        return MemberWriter(self, member)

    def member_holder(self, member: int) -> str | None:
        """Who is writing member `member` now ("process 12 on node3"), or None when nobody is."""
        lock = self.path / f".member-{int(member)}.lock"
        try:
            handle = open(lock, "r", encoding="utf-8")
        except OSError:
            return None
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return handle.read().strip() or "another process"
            return None

    def status(self) -> dict[str, Any]:
        """Per member: the epochs it ended and whether a process writes it now; the committed epochs."""
        return {
            "run": str(self.path),
            "keep": self.keep if self.keep != "topk" else f"top-{self.meta.get('topk')} logs",
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
        """Commit every slot that all members have ended with the same epoch; returns those epochs.

        Safe to call from any number of processes at once: the lock makes each slot commit once.
        """
        with _flock(self.path / COMMIT_LOCK):
            self.refresh()
            ended = self.ended_epochs()
            committed = self.meta["recorded_epochs"]
            new = []
            slot = len(committed)
            while all(len(e) > slot for e in ended) and len({e[slot] for e in ended}) == 1:
                new.append(int(ended[0][slot]))
                slot += 1
            if new and self.keep == "reduced":  # the record exists before run.json lists the epoch
                for s in range(len(committed), slot):
                    for split in self.splits:
                        self._reduce(split, s)
            if new:
                committed.extend(new)
                self.save_meta()
            if new and self.keep == "reduced":  # (a commit killed before this is swept by the next one)
                self._drop_raw(range(len(committed)), self.splits)
        return new

    def _reduce(self, group: str, slot: int) -> None:
        """Write the reduced record of epoch slot `slot` of split group `group` from its raw chunks."""
        array = self._group[group]["probs"]
        reader = ChunkFileReader.wrap(array, committed=slot + 1)  # a raw chunk that is missing is damage
        labels = np.asarray(self._group[group]["labels"][:], dtype=np.int64)
        try:
            reduced.reduce_slot(self._group[group], reader, slot, labels, self.n_classes)
        except InvalidProbabilities as error:
            raise _damaged(f"{self.path}: split {group!r}", error) from None

    def _drop_raw(self, slots, groups) -> None:
        """Delete the raw chunk files of epoch slots `slots` (local stores; elsewhere they stay)."""
        for group in groups:
            reader = ChunkFileReader.wrap(self._group[group]["probs"])
            if not isinstance(reader, ChunkFileReader):
                continue
            for slot in slots:
                for member in range(self.n_members):
                    folder = (reader.root / reader.encode((member, slot, 0, 0))).parent.parent
                    if folder.is_dir():
                        shutil.rmtree(folder, ignore_errors=True)

    def ensure_capacity(self, slots: int) -> None:
        """Grow the epoch axis of every split to hold at least `slots` epochs."""
        if slots <= self.epoch_capacity:
            return
        import zarr

        with _flock(self.path / COMMIT_LOCK):
            self.refresh()
            if slots > self.epoch_capacity:
                for split in self.splits:
                    array = zarr.open_array(self.path / ARRAYS / split / "probs", mode="a", zarr_format=3)
                    if array.shape[1] < slots:
                        array.resize((array.shape[0], slots, *array.shape[2:]))
                    if self.keep == "reduced":
                        reduced.resize(zarr.open_group(self.path / ARRAYS / split, mode="a", zarr_format=3), slots)
                self.meta["epoch_capacity"] = int(slots)
                self.save_meta()
        self._group = _open_group(self.path, "a")

    # ----------------------------------------------------------------- read
    def scores(
        self,
        split: str,
        *,
        base: float | str = 2.0,
        members: Sequence[int] | slice | None = None,
        epochs: Sequence[int] | slice | None = None,
        engine: str = "auto",
        progress=None,
        cache: bool = True,
        decomposition: bool = True,
        client=None,
    ) -> Scores:
        """Confusion scores of one split from the committed epochs.

        epochs: the 1-based training epochs to use (each must be committed), or a slice of the
        committed ones (e.g. ``slice(-1, None)`` for the last); default all. members: member
        indices or a slice; default all. The returned `Scores.epochs` are positions in the
        store's epoch axis. cache: reuse (and keep) the scores in RUN/cache/ (see `_score_cache`).
        decomposition: False when only `confusion` is wanted (faster; see `confusion_scores`);
        a cached full decomposition is used for it when there is one. client: a
        dask.distributed Client to score on a cluster (`confusion.cluster`), block by block.
        """
        recorded = self.recorded_epochs
        if not recorded:
            raise RunStoreError(f"{self.path} has no committed epoch yet; nothing to score")
        if epochs is None:
            slots = np.arange(len(recorded))
        elif isinstance(epochs, slice):
            slots = np.arange(len(recorded))[epochs]
        else:
            missing = [int(e) for e in epochs if int(e) not in recorded]
            if missing:
                raise InputError(f"epochs {missing} are not committed in {self.path} (committed: {recorded})")
            slots = np.array([recorded.index(int(e)) for e in epochs], dtype=np.intp)
        base = check_base(base)
        member_list = list(range(self.n_members))[members] if isinstance(members, slice) else None if members is None else [int(m) for m in members]
        if self.keep == "topk":  # bounds are cheap to recompute: not cached
            return self._scores_by_block(split, base, member_list, slots, decomposition, engine, progress, client)
        keys = [self._score_cache(split, base, member_list, slots, True)] if cache else []
        if cache and not decomposition:
            keys.append(self._score_cache(split, base, member_list, slots, False))
        for key in [k for k in keys if k is not None]:
            cached = _read_cached_scores(key, self.recorded_epochs)
            if cached is not None:
                if progress is not None:
                    progress(self.n_samples(split))
                return cached
        if self.keep == "reduced" or client is not None:
            scores = self._scores_by_block(split, base, member_list, slots, decomposition, engine, progress, client)
        else:
            try:
                scores = confusion_scores(
                    self.probs_reader(split), base=base, members=members, epochs=slots, engine=engine, progress=progress, decomposition=decomposition
                )
            except InvalidProbabilities as error:
                raise _damaged(f"{self.path}: split {split!r}", error) from None
        if keys and keys[-1] is not None:
            _write_cached_scores(keys[-1], scores, self.recorded_epochs)
        return scores

    def _scores_by_block(self, split, base, members, slots, decomposition, engine, progress, client) -> Scores:
        """Scores computed block by block of samples by `_score_rows`, in this process or, with a
        dask.distributed `client`, one task per block on the cluster (each task gets the opened
        arrays, not paths, and reads its own rows); the same numbers either way."""
        n = self.n_samples(split)
        group = self._split_group(split)
        where = f"{self.path}: split {split!r}"
        if self.keep == "reduced":
            if members is not None and sorted(set(members)) == list(range(self.n_members)):
                members = None
            if members is not None and len(set(members)) != 1:
                self._needs_raw(f"scoring members {members} (a subset of the {self.n_members})")
            arrays = {"member_entropy": group["member_entropy"], "ensemble_entropy": group["ensemble_entropy"]}
            per_sample = 4 * (self.n_members + 1) * len(slots)
        elif self.keep == "topk":
            members = list(range(self.n_members)) if members is None else members
            arrays = {"values": group["topk_values"], "indices": group["topk_indices"], "n_classes": self.n_classes}
            per_sample = 12 * len(members) * len(slots) * int(self.meta["topk"])
        else:
            arrays = {"probs": group["probs"], "committed": len(self.recorded_epochs)}
            per_sample = 8 * (self.n_members if members is None else len(members)) * len(slots) * self.n_classes
        chunk = group["probs"].chunks[2] if self.keep == "raw" else 1
        block = max(1, (32 * 2**20) // per_sample)
        block = max(chunk, block // chunk * chunk)  # whole chunks: each is read once, by one task
        if client is not None:
            block = max(chunk, min(block, -(-n // (4 * _cluster_threads(client))) // chunk * chunk or chunk))  # work for every worker
        job = (self.keep, arrays, members, np.asarray(slots), base, decomposition, engine, where)
        ranges = [(start, min(n, start + block)) for start in range(0, n, block)]
        outputs = [np.empty((len(slots), n)) for _ in range(4 if self.keep == "topk" else 2)]

        def place(start, stop, parts):
            for out, part in zip(outputs, parts):
                out[:, start:stop] = part
            if progress is not None:
                progress(stop - start)

        if client is None:
            for start, stop in ranges:
                place(start, stop, _score_rows(job, start, stop))
        else:
            from distributed import as_completed

            from .cluster import task_result

            # The opened arrays go to every worker once. hash=False: a key of its own per call; the
            # same job scattered again under its content key could be released by the last call
            # while this one still needs it ("lost dependencies").
            shared = client.scatter(job, broadcast=True, hash=False)
            futures = {client.submit(_score_rows, shared, start, stop, pure=False): (start, stop) for start, stop in ranges}
            for future in as_completed(futures):
                place(*futures[future], task_result(future, f"{where}: a scoring task failed on the Dask cluster"))
        if self.keep != "raw" and base == 2.0:
            for out in outputs:
                out /= LN2
        chosen = tuple(range(self.n_members)) if members is None else tuple(int(m) for m in members)
        return Scores(
            per_epoch=outputs[0], per_epoch_expected=outputs[1], n_classes=self.n_classes, base=base, members=chosen,
            epochs=tuple(int(s) for s in slots),
            per_epoch_low=outputs[2] if self.keep == "topk" else None, per_epoch_high=outputs[3] if self.keep == "topk" else None,
        )

    def _score_cache(self, split: str, base: float, members: list[int] | None, slots: np.ndarray, decomposition: bool) -> Path | None:
        """Where scores of this selection are cached (RUN/cache/), or None when too large to keep.

        Committed epochs never change, so scores keyed by (split, base, members, epochs) and
        checked against the committed epochs they were computed from are reused by every
        consumer (hard sets, mitigation, the report) instead of being recomputed.
        """
        n = self.n_samples(split)
        if 2 * len(slots) * n * 8 > SCORE_CACHE_BYTES:
            return None
        written = self.meta["splits"].get(split, {}).get("written")
        key = json.dumps([self.meta.get("created"), split, n, written, base, members, [int(s) for s in slots], decomposition])
        return self.path / "cache" / f"scores-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"

    def score_table(self, splits: Sequence[str] | None = None, *, base: float | str = 2.0, progress=None, client=None):
        """One row per sample of every split (in split, then sample order), as `confusion score` writes."""
        import pandas as pd

        frames = []
        for split in splits or self.splits:
            scores = self.scores(split, base=base, progress=progress, client=client)
            labels = self.labels(split)
            frame = scores.to_frame(self.sample_ids(split), labels if (labels >= 0).any() else None, split)
            frames.append(frame)
        table = pd.concat(frames, ignore_index=True)
        if "label" in table:
            table["label"] = table["label"].fillna(-1).astype("int64")
        return table


_OPEN_WRITERS: dict[tuple[str, int], "weakref.ref[MemberWriter]"] = {}


class MemberWriter:
    """The writer of one member: logs its predictions, epoch by epoch, and ends its epochs.

    Rows arrive in any order and any batch size; they are buffered and written straight into
    the member's own chunk files (each row at its place), so no other process's rows are
    touched and a step of a training loop costs a copy. `end_epoch` checks that every row of
    every split was logged, records the epoch as ended in the member file, and commits every
    epoch that all members have now ended. One process per member: opening a writer takes the
    member's lock (a writer of the same member opened earlier in the same process is closed).
    Use it as a context manager or call `close()`.
    """

    FLUSH_BYTES = 16 * 2**20  # buffered rows are written once they reach this size

    def __init__(self, store: RunStore, member: int):
        if isinstance(member, bool) or not isinstance(member, (int, np.integer)) or not 0 <= member < store.n_members:
            raise InputError(f"member must be an integer in 0..{store.n_members - 1}, got {member!r}")
        if store.keep == "topk":
            raise InputError(f"{store.path} holds top-k logs; it is written by `confusion import --topk`, not by a member writer")
        self.store = store
        self.member = int(member)
        # Within one process, opening a member again (a loop restarted in a notebook, say)
        # closes the writer opened before; across processes the lock refuses a second writer.
        key = (os.path.realpath(store.path), self.member)
        previous = _OPEN_WRITERS.get(key)
        if previous is not None and previous() is not None:
            previous().close()
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
        self._buffer: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._buffered = 0
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
        index : (batch,) positions of the rows in the split (0..samples-1). May be omitted
            only when `outputs` holds the whole split in order.
        logits : apply a softmax over classes before storing.
        validate : check for NaN, negative values and rows that do not sum to 1 (skip only
            when the caller has checked them already).
        """
        self._check_writable()
        self.store._split_group(split)  # an unknown split is refused here
        n_samples = self.store.n_samples(split)
        epoch = _epoch_number(epoch)
        rows = _to_numpy(outputs, "outputs")
        if rows.ndim != 2 or rows.shape[1] != self.store.n_classes:
            raise InputError(f"outputs must be (batch, {self.store.n_classes}) for this run, got shape {rows.shape}")
        if rows.dtype.kind != "f":
            raise InputError(f"outputs must be floating point, got dtype {rows.dtype}")
        if index is None:
            if rows.shape[0] != n_samples:
                raise InputError(f"index is needed unless outputs hold the whole split ({n_samples} rows, got {rows.shape[0]})")
            positions = np.arange(n_samples)
        else:
            positions = _to_numpy(index, "index")
            if positions.dtype.kind not in "iu" or positions.shape != (rows.shape[0],):
                raise InputError(f"index must be ({rows.shape[0]},) integer sample positions, got {positions.dtype} {positions.shape}")
            if positions.size and (positions.min() < 0 or positions.max() >= n_samples):
                raise InputError(f"index holds positions outside 0..{n_samples - 1} of split {split!r}")
        problem = validate and describe_invalid(rows[None, None], rows.dtype, 0, logits, [self.member], [epoch])
        if problem:
            raise InputError(problem.replace("pass --logits", "pass logits=True"))
        epoch = self._begin(epoch)  # only now: a refused call leaves the writer as it was
        values = softmax(rows) if logits else rows
        self._buffer.setdefault(split, []).append((positions.astype(np.int64), values.astype(np.float16)))
        self._buffered += values.shape[0] * values.shape[1] * 2
        if self._buffered >= self.FLUSH_BYTES:
            self.flush()

    def end_epoch(self, epoch: int, info: dict[str, Any] | None = None) -> list[int]:
        """End `epoch` for this member; returns the epochs this call committed (often none).

        Refused while any row of any split is missing for this epoch. `info` (JSON-able) is
        kept with the epoch, e.g. the loss and accuracy a trainer measured.
        """
        self._check_writable()
        epoch = _epoch_number(epoch)
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
        self._ended.append(epoch)
        if info:
            self._info[str(epoch)] = info
        write_json_atomic(self.store.member_file(self.member), {"member": self.member, "ended": self._ended, "info": self._info})
        self._epoch = None
        self._logged = {}
        return self.store.commit_ready()

    def flush(self) -> None:
        """Write buffered rows to their chunk files (done by itself as the buffer fills)."""
        slot = len(self._ended)
        for split, parts in self._buffer.items():
            positions = np.concatenate([p for p, _ in parts])
            rows = np.concatenate([r for _, r in parts])
            order = np.argsort(positions, kind="stable")
            positions, rows = positions[order], rows[order]
            _write_rows(self.store.probs(split), self.member, slot, positions, rows)
            logged = self._logged.setdefault(split, np.zeros(self.store.n_samples(split), dtype=bool))
            logged[positions] = True
        self._buffer = {}
        self._buffered = 0

    def close(self) -> None:
        """Release the member (an epoch not ended is dropped: log it again after a restart)."""
        if not self.closed:
            self.closed = True
            self._buffer = {}
            self._stack.close()

    def __enter__(self) -> "MemberWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------- internal
    def _check_writable(self) -> None:
        if self.closed:
            raise InputError(f"the writer of member {self.member} is closed")

    def _begin(self, epoch) -> int:
        epoch = _epoch_number(epoch)
        if self._epoch is not None:
            if epoch != self._epoch:
                raise InputError(
                    f"member {self.member} is still logging epoch {self._epoch}; call end_epoch({self._epoch}) "
                    f"before logging epoch {epoch}"
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


def _damage_in_meta(meta: dict) -> str | None:
    """What is wrong with a parsed run.json, or None: every key the store reads, of its type."""
    expected = {"n_classes": int, "classes": list, "members": list, "epoch_capacity": int, "recorded_epochs": list, "splits": dict}
    for key, kind in expected.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            return f"{key!r} is missing or not a {kind.__name__}"
    if meta["n_classes"] < 1 or len(meta["classes"]) != meta["n_classes"] or not meta["members"]:
        return "its classes and members do not add up"
    if not all(isinstance(e, int) and e >= 1 for e in meta["recorded_epochs"]) or len(meta["recorded_epochs"]) > meta["epoch_capacity"]:
        return "'recorded_epochs' must be training epoch numbers within the epoch capacity"
    if meta.get("keep", "raw") not in (*reduced.KEEP, "topk"):
        return f"'keep' must be raw, reduced or topk, not {meta.get('keep')!r}"
    if meta.get("keep") == "topk" and (not isinstance(meta.get("topk"), int) or not 1 <= meta["topk"] <= meta["n_classes"]):
        return "'topk' must be the number of probabilities kept per prediction"
    for name, entry in meta["splits"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("n"), int) or entry["n"] < 1:
            return f"split {name!r} has no sample count"
    return None


def _shape_problem(name: str, array, meta: dict, split: str) -> str | None:
    """How array `name` of a split disagrees with run.json (its sample count, members, classes),
    or a chunk shape no writer makes; None when it agrees."""
    if min(array.chunks, default=1) < 1:
        return f"has chunk shape {tuple(array.chunks)}"
    n, members, classes = meta["splits"][split]["n"], len(meta["members"]), meta["n_classes"]
    wrong = (
        tuple(array.shape) != (n,) if name in ("ids", "labels")
        else name == "probs" and meta.get("keep", "raw") == "raw" and (array.shape[0] != members or tuple(array.shape[2:]) != (n, classes))
    )
    if wrong:
        return f"is shaped {tuple(array.shape)}, but {RUN_FILE} gives split {split!r} {n} samples, {members} members and {classes} classes"
    return None


def check_class_names(classes: Sequence[str], n_classes: int) -> None:
    """One distinct, non-empty name per class (names label folders, tables and figures)."""
    if len(classes) != n_classes:
        raise InputError(f"{len(classes)} class names given for {n_classes} classes")
    names = [str(c).strip() for c in classes]
    if not all(names):
        raise InputError("a class name is empty")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"class name {repeated[0]!r} is given twice; each class needs its own name")


def _check_split(name: str, split: SplitData, n_classes: int) -> None:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise InputError(f"split name {name!r} is not a plain name")
    if len(split.ids) == 0:
        raise InputError(f"split {name!r} has no samples")
    if ((split.labels < -1) | (split.labels >= n_classes)).any():
        raise InputError(f"split {name!r}: labels must be -1 (unknown) or 0..{n_classes - 1}")


def _epoch_number(epoch) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 1:
        raise InputError(f"epoch must be the 1-based training epoch number, got {epoch!r}")
    return int(epoch)


def _to_numpy(value, name: str) -> np.ndarray:
    """A numpy array from a numpy array, list or torch tensor (on any device, any dtype)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach()
        if value.is_floating_point() and value.dtype.itemsize < 4:  # bf16 has no numpy dtype
            value = value.float()
        value = value.cpu().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name} is not an array: {error}") from None


def _write_rows(array, member: int, slot: int, positions: np.ndarray, rows: np.ndarray) -> None:
    """Write float16 rows at sorted sample positions of (member, slot), one run of rows at a time."""
    if not len(positions):
        return
    target = ChunkFileReader.wrap(array)
    per_chunk = array.chunks[2]
    chunk_ids = positions // per_chunk
    breaks = np.flatnonzero((np.diff(positions) != 1) | (np.diff(chunk_ids) != 0)) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(positions)]])
    if not isinstance(target, ChunkFileReader):  # compressed or remote: through zarr
        for a, b in zip(starts, stops):
            array[member, slot, positions[a] : positions[b - 1] + 1, :] = rows[a:b]
        return
    row_bytes = array.shape[3] * 2
    chunk_bytes = per_chunk * row_bytes
    handle, open_chunk = None, -1
    try:
        for a, b in zip(starts, stops):
            chunk = int(chunk_ids[a])
            if chunk != open_chunk:
                if handle is not None:
                    os.close(handle)
                path = target.root / target.encode((member, slot, chunk, 0))
                path.parent.mkdir(parents=True, exist_ok=True)
                handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                if os.fstat(handle).st_size < chunk_bytes:  # zarr reads a chunk only at full size
                    os.ftruncate(handle, chunk_bytes)
                open_chunk = chunk
            os.pwrite(handle, rows[a:b].tobytes(), int(positions[a] - chunk * per_chunk) * row_bytes)
    finally:
        if handle is not None:
            os.close(handle)


def _score_rows(job: tuple, start: int, stop: int) -> list[np.ndarray]:
    """Per-epoch scores of rows start:stop of a split: [entropy of the average, members' mean
    entropy (, lower bound, upper bound for top-k logs)], each (epochs, rows); in the job's base
    for raw predictions, in nats otherwise. A plain function of opened arrays, so a Dask worker
    runs it as this process does."""
    keep, arrays, members, slots, base, decomposition, engine, where = job
    if keep == "reduced":
        member_entropy, ensemble_entropy = arrays["member_entropy"], arrays["ensemble_entropy"]
        if members is None:
            own = reduced.read_array(member_entropy, "member_entropy", slots, start, stop, where=where).astype(np.float64)
            return [reduced.read_array(ensemble_entropy, "ensemble_entropy", slots, start, stop, where=where).astype(np.float64), own.mean(axis=0)]
        own = reduced.read_array(member_entropy, "member_entropy", slots, start, stop, [members[0]], where=where)[0].astype(np.float64)
        return [own, own]
    if keep == "topk":
        from .topk import epoch_bounds

        values, indices = _topk_rows(arrays["values"], arrays["indices"], members, slots, start, stop, where)
        parts = [np.empty((len(slots), stop - start)) for _ in range(4)]
        for t in range(len(slots)):
            point, low, high, member_point = epoch_bounds(values[:, t], indices[:, t], arrays["n_classes"])
            parts[0][t], parts[2][t], parts[3][t], parts[1][t] = point, low, high, member_point.mean(axis=0)
        return parts
    reader = _Rows(ChunkFileReader.wrap(arrays["probs"], committed=arrays["committed"]), start, stop)
    try:
        scores = confusion_scores(reader, base=base, members=members, epochs=slots, engine=engine, decomposition=decomposition)
    except InvalidProbabilities as error:
        raise _damaged(where, error) from None
    return [scores.per_epoch, scores.per_epoch_expected]


def _damaged(where: str, error: InvalidProbabilities) -> RunStoreError:
    """The store only ever holds probabilities: stored values that are not are damage, not logits."""
    return RunStoreError(f"{where} is damaged: {str(error).split('; if these are logits')[0]}")


def _topk_rows(values_array, indices_array, members, slots, start, stop, where) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (values, indices), each (members, slots, rows, k), checked for damage."""
    members = np.asarray(members, dtype=np.intp)
    try:
        low, high = int(slots.min()), int(slots.max()) + 1
        values = values_array[:, low:high, start:stop][members][:, slots - low]
        indices = indices_array[:, low:high, start:stop][members][:, slots - low]
    except Exception as error:  # noqa: BLE001 - zarr raises many kinds for damaged chunks
        raise RunStoreError(f"{where}: its top-k logs are damaged ({type(error).__name__})") from None
    if np.isnan(values).any() or (indices == np.iinfo(indices.dtype).max).any():  # the fill values: a chunk file is gone
        raise RunStoreError(f"{where}: its top-k logs are missing for committed epochs (chunk files damaged)")
    return values, indices


class _Rows:
    """Rows start:stop of a (members, epochs, samples, classes) reader, as an array of their own."""

    def __init__(self, reader, start: int, stop: int):
        self.reader, self.start = reader, start
        self.shape = (*reader.shape[:2], stop - start, reader.shape[3])
        self.dtype = reader.dtype
        self.chunks = None
        if hasattr(reader, "map_slabs") and start % reader.chunks[2] == 0:  # chunk files: mapped, as in the local scorer
            self.chunks = reader.chunks
            self.map_slabs = self._map_slabs

    def _map_slabs(self, members, epochs, first: int, last: int):
        return self.reader.map_slabs(members, epochs, self.start + first, self.start + last)

    def __getitem__(self, index):
        members, epochs, samples = index
        first, last, _ = samples.indices(self.shape[2])
        return self.reader[members, epochs, slice(self.start + first, self.start + last)]


def _cluster_threads(client) -> int:
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:  # noqa: BLE001 - a scheduler that does not say
        return 1


def _read_cached_scores(path: Path, recorded_epochs: list[int]) -> Scores | None:
    try:
        with np.load(path, allow_pickle=False) as cached:
            if cached["recorded_epochs"].tolist() != list(recorded_epochs):
                return None
            return Scores(
                per_epoch=cached["per_epoch"], per_epoch_expected=cached["per_epoch_expected"], n_classes=int(cached["n_classes"]),
                base=float(cached["base"]), members=tuple(cached["members"].tolist()), epochs=tuple(cached["epochs"].tolist()),
            )
    except (OSError, KeyError, ValueError):  # absent, or damaged: recompute
        return None


def _write_cached_scores(path: Path, scores: Scores, recorded_epochs: list[int]) -> None:
    """Best effort: a run directory we may not write into is scored again next time."""
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(
                    handle, per_epoch=scores.per_epoch, per_epoch_expected=scores.per_epoch_expected, n_classes=scores.n_classes,
                    base=scores.base, members=np.asarray(scores.members, dtype=np.int64), epochs=np.asarray(scores.epochs, dtype=np.int64),
                    recorded_epochs=np.asarray(recorded_epochs, dtype=np.int64),
                )
    except OSError:
        pass


class ChunkFileReader:
    """Reads blocks of an uncompressed, local Zarr v3 array straight from its chunk files.

    An uncompressed chunk (bytes codec, little endian) is the raw C-order array, padded to the
    full chunk shape at the edges, so reading it is one `readinto` into the destination; this
    runs ~10x faster than zarr's general decode path. Anything else (compression, fsspec
    stores, other key encodings) is read through zarr itself.
    """

    def __init__(self, array, root: Path, committed: int | None = None):
        self.array = array
        self.root = root
        self.committed = committed  # epoch slots below this must have every chunk file
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.chunks = tuple(array.chunks)
        self.encode = array.metadata.encode_chunk_key

    @classmethod
    def wrap(cls, array, committed: int | None = None):
        from zarr.codecs import BytesCodec
        from zarr.storage import LocalStore

        metadata = array.metadata
        codecs = getattr(metadata, "codecs", ())
        plain = (
            isinstance(array.store, LocalStore)
            and len(codecs) == 1
            and isinstance(codecs[0], BytesCodec)
            and (codecs[0].endian is None or codecs[0].endian.value == sys.byteorder)
            and array.chunks[:2] == (1, 1)
            and array.chunks[3] == array.shape[3]
            and float(metadata.fill_value) == 0.0
        )
        return cls(array, Path(array.store.root) / array.path, committed) if plain else array

    def __getitem__(self, index):
        members, epochs, samples = index
        m_range = range(*members.indices(self.shape[0]))
        e_range = range(*epochs.indices(self.shape[1]))
        start, stop, _ = samples.indices(self.shape[2])
        out = np.empty((len(m_range), len(e_range), stop - start, self.shape[3]), dtype=self.dtype)
        return self.read_into(out, m_range.start, e_range.start, start)

    def map_slabs(self, members, epochs, start: int, stop: int) -> tuple[np.ndarray, _Mappings]:
        """(members, epochs) addresses of samples [start, stop) (within one chunk) of each chosen
        member and epoch, straight in the mapped chunk files, and the mappings to close after use.

        Scoring from the page cache this way skips a copy of every value (bench/score.py).
        """
        per_chunk = self.chunks[2]
        chunk = start // per_chunk
        if (stop - 1) // per_chunk != chunk:
            raise ValueError("map_slabs reads one chunk of samples at a time")
        row_bytes = self.shape[3] * self.dtype.itemsize
        offset = (start - chunk * per_chunk) * row_bytes
        mappings = _Mappings()
        addresses = np.empty((len(members), len(epochs)), dtype=np.uint64)
        try:
            for i, member in enumerate(members):
                for j, epoch in enumerate(epochs):
                    path = self.root / self.encode((int(member), int(epoch), chunk, 0))
                    try:
                        addresses[i, j] = mappings.address(path, offset, offset + (stop - start) * row_bytes)
                    except FileNotFoundError:
                        self._missing(path, int(epoch))
                        addresses[i, j] = mappings.zeros((stop - start) * row_bytes)
        except BaseException:
            mappings.close()
            raise
        return addresses, mappings

    def _missing(self, path: Path, epoch: int) -> None:
        """A chunk file that is not there: zarr skips chunks equal to the fill value, which only
        an epoch not yet committed can have (it reads as zeros); in a committed epoch it is damage."""
        if self.committed is not None and epoch < self.committed:
            raise RunStoreError(f"run store damaged: chunk file {path} of a committed epoch is missing") from None

    def read_into(self, out: np.ndarray, member0: int, epoch0: int, start: int) -> np.ndarray:
        """Fill `out` (members, epochs, samples, classes) from member0, epoch0, sample `start` on."""
        per_chunk = self.chunks[2]
        stop = start + out.shape[2]
        row_bytes = self.shape[3] * self.dtype.itemsize
        for i in range(out.shape[0]):
            for j in range(out.shape[1]):
                for chunk in range(start // per_chunk, (stop - 1) // per_chunk + 1):
                    first = max(start, chunk * per_chunk)
                    last = min(stop, (chunk + 1) * per_chunk)
                    target = out[i, j, first - start : last - start]
                    path = self.root / self.encode((member0 + i, epoch0 + j, chunk, 0))
                    try:
                        with open(path, "rb", buffering=0) as handle:
                            handle.seek((first - chunk * per_chunk) * row_bytes)
                            got = handle.readinto(memoryview(target).cast("B"))
                    except FileNotFoundError:
                        self._missing(path, epoch0 + j)
                        got = 0
                    if got != target.nbytes:
                        if got:
                            raise RunStoreError(f"chunk file {path} is truncated")
                        target[...] = 0
        return out


class _Mappings:
    """Chunk files mapped read-only for one block of scoring; `close` unmaps them."""

    def __init__(self):
        self.maps: list[mmap.mmap] = []
        self.views: list[np.ndarray] = []

    def address(self, path: Path, offset: int, need: int) -> int:
        """Address of byte `offset` of the file at `path`, which must hold `need` bytes; an empty
        file reads as zeros, a missing one raises FileNotFoundError (see ChunkFileReader._missing)."""
        with open(path, "rb", buffering=0) as handle:
            size = os.fstat(handle.fileno()).st_size
            if not size:
                return self.zeros(need - offset)
            if size < need:
                raise RunStoreError(f"chunk file {path} is truncated")
            # Pages fault in inside the kernel's threads: measured faster on 2 cores than
            # MAP_POPULATE in the prefetching thread (4.7 vs 3.3 GB/s).
            self.maps.append(mmap.mmap(handle.fileno(), size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ))
        self.views.append(np.frombuffer(self.maps[-1], dtype=np.uint8))
        return self.views[-1].ctypes.data + offset

    def zeros(self, size: int) -> int:
        """Address of `size` zero bytes, kept until `close`."""
        self.views.append(np.zeros(size, dtype=np.uint8))
        return self.views[-1].ctypes.data

    def close(self) -> None:
        self.views.clear()  # the views hold exports of the maps, which must go first
        for mapped in self.maps:
            mapped.close()
        self.maps.clear()


def _strings(array) -> np.ndarray:
    """A zarr string array as a plain numpy unicode array (zarr returns numpy's StringDType)."""
    values = array[:]
    return np.array(values.tolist() if hasattr(values, "tolist") else list(values), dtype=str)


@contextlib.contextmanager
def hold_lock(path: str | os.PathLike, name: str = LOCK_FILE) -> Iterator[None]:
    """Hold lock file `name` of a run directory, or raise RunLockedError naming the holder."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    handle = open(path / name, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            what = path if name == LOCK_FILE else f"{path} ({name.strip('.').removesuffix('.lock')})"
            raise RunLockedError(f"{what} is in use by {holder}; wait for it to finish or stop it, then run again") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield
    finally:
        handle.close()


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Wait for, then hold, an exclusive lock on file `path` (short critical sections)."""
    with open(path, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def _open_group(path: Path, mode: str):
    import zarr

    try:
        return zarr.open_group(path / ARRAYS, mode=mode, zarr_format=3)
    except Exception as error:  # zarr raises several types for a damaged store
        raise RunStoreError(f"{path / ARRAYS} is not a readable Zarr v3 group: {error}") from None


def _is_own(name: str) -> bool:
    """Files a run directory holds before its run.json exists: locks, a half-made store, and the
    temporary run.json another process is writing this moment (racing creators)."""
    return name in _OWN_NAMES or name.startswith(".member-") or (name.startswith(f".{RUN_FILE}.") and name.endswith(".tmp"))


def check_usable_directory(path: Path, exist_ok: bool) -> None:
    """Refuse a file, or a folder holding anything but a run (before anything is written there)."""
    if not path.exists():
        return
    if not path.is_dir():
        raise InputError(f"{path} exists and is not a directory")
    if exist_ok and is_run_store(path):
        return
    foreign = [p.name for p in path.iterdir() if not _is_own(p.name)]
    if foreign or (is_run_store(path) and not exist_ok):
        raise RunStoreError(f"{path} already exists and is not empty; choose a new --out directory")
