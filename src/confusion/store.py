"""The run store: one directory per run, the contract between training and everything after.

    RUN/run.json              what was run, and which epochs are committed (atomic writes)
    RUN/predictions.zarr/     Zarr v3 group, one subgroup per split:
        <split>/probs         (members, epoch slots, samples, classes) float16, chunked along samples
        <split>/labels        (samples,) int64, -1 where unknown
        <split>/ids           (samples,) str, stable sample ids
        <split>/sources       (samples,) str, source file of each sample (optional)
    RUN/.lock                 held (flock) by the one process allowed to write

Epoch slot k holds the k-th recorded epoch; `run.json["recorded_epochs"][k]` is its training
epoch number (1-based). A slot counts only once every member has written it and it is
listed there, so a crash never leaves a half epoch that scoring would read. Chunks hold one
member and one slot each, so processes writing different members never touch the same file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from . import __version__
from ._files import write_json_atomic
from .errors import InputError, RunLockedError, RunStoreError
from .scores import Scores, check_base, confusion_scores

FORMAT = "confusion-run/1"
RUN_FILE = "run.json"
ARRAYS = "predictions.zarr"
LOCK_FILE = ".lock"
# Samples per chunk are chosen so one chunk (one member, one epoch) is about this many bytes.
CHUNK_BYTES = 2**20


@dataclass
class SplitData:
    """What a run stores about one split besides predictions."""

    ids: np.ndarray  # (samples,) str
    labels: np.ndarray  # (samples,) int64, -1 = unknown
    sources: np.ndarray | None = None  # (samples,) str, or None

    def __post_init__(self):
        self.ids = np.asarray(self.ids).astype(str)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.ids.ndim != 1 or self.labels.shape != self.ids.shape:
            raise InputError(f"sample ids {self.ids.shape} and labels {self.labels.shape} must be (samples,) alike")
        if len(np.unique(self.ids)) != len(self.ids):
            raise InputError("sample ids must be unique within a split")
        if self.sources is not None:
            self.sources = np.asarray(self.sources).astype(str)
            if self.sources.shape != self.ids.shape:
                raise InputError(f"sources {self.sources.shape} must match sample ids {self.ids.shape}")


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
    ) -> "RunStore":
        """Make a new run directory (it must not exist or be empty) with empty predictions."""
        import zarr

        path = Path(path)
        if path.exists() and (not path.is_dir() or any(p.name != LOCK_FILE for p in path.iterdir())):
            raise RunStoreError(f"{path} already exists and is not empty; choose a new --out directory")
        if n_classes < 1 or not members or epoch_capacity < 1 or not splits:
            raise InputError("a run needs at least one class, member, epoch and split")
        if classes is not None and len(classes) != n_classes:
            raise InputError(f"{len(classes)} class names given for {n_classes} classes")
        path.mkdir(parents=True, exist_ok=True)
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
        }
        meta.update(info or {})
        store = cls(path, meta, group)
        for name, split in splits.items():
            store._create_split(name, split)
        store.save_meta()
        return store

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> "RunStore":
        """Open an existing run directory; `mode="a"` to write predictions into it."""
        import zarr

        path = Path(path)
        if not path.exists():
            raise RunStoreError(f"run directory {path} does not exist")
        if not is_run_store(path):
            raise RunStoreError(f"{path} is not a run store (no {RUN_FILE} and {ARRAYS}/ inside)")
        try:
            meta = json.loads((path / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise RunStoreError(f"{path / RUN_FILE} is unreadable: {error}") from None
        if meta.get("format") != FORMAT:
            raise RunStoreError(f"{path} has format {meta.get('format')!r}; this version reads {FORMAT!r}")
        try:
            group = zarr.open_group(path / ARRAYS, mode=mode, zarr_format=3)
        except Exception as error:  # zarr raises several types for a damaged store
            raise RunStoreError(f"{path / ARRAYS} is not a readable Zarr v3 group: {error}") from None
        store = cls(path, meta, group)
        for split in meta["splits"]:
            if split not in group:
                raise RunStoreError(f"{path}: run.json lists split {split!r} but the store has no such group")
        return store

    def _create_split(self, name: str, split: SplitData) -> None:
        if name in self.meta["splits"]:
            raise RunStoreError(f"{self.path} already has a split named {name!r}")
        if not name or "/" in name or name.startswith("."):
            raise InputError(f"split name {name!r} is not a plain name")
        n = len(split.ids)
        if n == 0:
            raise InputError(f"split {name!r} has no samples")
        if ((split.labels < -1) | (split.labels >= self.n_classes)).any():
            raise InputError(f"split {name!r}: labels must be -1 (unknown) or 0..{self.n_classes - 1}")
        group = self._group.require_group(name)
        chunk = chunk_samples(n, self.n_classes)
        group.create_array(
            "probs",
            shape=(self.n_members, self.epoch_capacity, n, self.n_classes),
            chunks=(1, 1, chunk, self.n_classes),
            dtype="float16",
            fill_value=0.0,
            # Uncompressed: scoring reads at memory speed; float16 already halves the size.
            compressors=None,
            dimension_names=("member", "epoch", "sample", "class"),
        )
        group.create_array("labels", shape=(n,), chunks=(n,), dtype="int64", fill_value=-1)[:] = split.labels
        group.create_array("ids", shape=(n,), chunks=(n,), dtype=str)[:] = split.ids
        if split.sources is not None:
            group.create_array("sources", shape=(n,), chunks=(n,), dtype=str)[:] = split.sources
        self.meta["splits"][name] = {"n": n, "labelled": bool((split.labels >= 0).any())}

    def add_split(self, name: str, split: SplitData) -> None:
        """Add a split (e.g. an imported unlabeled one) to an existing run."""
        self._create_split(name, split)
        self.save_meta()

    def save_meta(self) -> None:
        write_json_atomic(self.path / RUN_FILE, self.meta)

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

    def _split_group(self, split: str):
        if split not in self.meta["splits"]:
            raise InputError(f"{self.path} has no split {split!r}; it has {', '.join(self.splits)}")
        return self._group[split]

    def probs(self, split: str):
        """The zarr array (members, epoch slots, samples, classes); only committed slots are valid."""
        return self._split_group(split)["probs"]

    def probs_reader(self, split: str):
        """What scoring reads: raw chunk files when the store is local and uncompressed, else zarr."""
        return ChunkFileReader.wrap(self.probs(split))

    def labels(self, split: str) -> np.ndarray:
        return np.asarray(self._split_group(split)["labels"][:], dtype=np.int64)

    def sample_ids(self, split: str) -> np.ndarray:
        return _strings(self._split_group(split)["ids"])

    def sources(self, split: str) -> np.ndarray | None:
        group = self._split_group(split)
        return _strings(group["sources"]) if "sources" in group else None

    def n_samples(self, split: str) -> int:
        return int(self.meta["splits"][split]["n"]) if split in self.meta["splits"] else len(self.sample_ids(split))

    # ----------------------------------------------------------------- write
    def ensure_capacity(self, slots: int) -> None:
        """Grow the epoch axis of every split to hold `slots` epochs (coordinator only)."""
        if slots <= self.epoch_capacity:
            return
        for split in self.splits:
            array = self.probs(split)
            array.resize((array.shape[0], slots, *array.shape[2:]))
        self.meta["epoch_capacity"] = int(slots)
        self.save_meta()

    def write(self, split: str, member: int, slot: int, probs: np.ndarray, start: int = 0) -> None:
        """Store one member's probabilities (samples, classes) for one epoch slot, as float16."""
        array = self.probs(split)
        if not 0 <= member < self.n_members or not 0 <= slot < self.epoch_capacity:
            raise InputError(f"member {member} / slot {slot} outside {self.n_members} members x {self.epoch_capacity} slots")
        probs = np.asarray(probs)
        if probs.ndim != 2 or probs.shape[1] != self.n_classes or start + probs.shape[0] > array.shape[2]:
            raise InputError(f"predictions of shape {probs.shape} do not fit split {split!r} {array.shape[2:]}")
        array[member, slot, start : start + probs.shape[0], :] = probs.astype(np.float16)

    def commit_epoch(self, epoch: int) -> int:
        """Mark the next slot complete, as training epoch `epoch`; returns its slot index."""
        slot = len(self.meta["recorded_epochs"])
        if slot >= self.epoch_capacity:
            raise RunStoreError(f"{self.path}: all {self.epoch_capacity} epoch slots are committed")
        self.meta["recorded_epochs"].append(int(epoch))
        self.save_meta()
        return slot

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
    ) -> Scores:
        """Confusion scores of one split from the committed epochs (`epochs` index those)."""
        committed = len(self.meta["recorded_epochs"])
        if committed == 0:
            raise RunStoreError(f"{self.path} has no committed epoch yet; nothing to score")
        slots = np.arange(committed) if epochs is None else np.arange(committed)[epochs] if isinstance(epochs, slice) else np.asarray(epochs)
        if len(slots) and (slots.min() < 0 or slots.max() >= committed):
            raise InputError(f"epoch slots {list(slots)} outside the {committed} committed epochs")
        return confusion_scores(
            self.probs_reader(split), base=check_base(base), members=members, epochs=slots, engine=engine, progress=progress
        )

    def score_table(self, splits: Sequence[str] | None = None, *, base: float | str = 2.0, progress=None):
        """One row per sample of every split (in split, then sample order), as `confusion score` writes."""
        import pandas as pd

        frames = []
        for split in splits or self.splits:
            scores = self.scores(split, base=base, progress=progress)
            labels = self.labels(split)
            frame = scores.to_frame(self.sample_ids(split), labels if (labels >= 0).any() else None, split)
            frames.append(frame)
        table = pd.concat(frames, ignore_index=True)
        if "label" in table:
            table["label"] = table["label"].fillna(-1).astype("int64")
        return table

    # ----------------------------------------------------------------- lock
    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[None]:
        with hold_lock(self.path):
            yield


class ChunkFileReader:
    """Reads blocks of an uncompressed, local Zarr v3 array straight from its chunk files.

    An uncompressed chunk (bytes codec, little endian) is the raw C-order array, padded to the
    full chunk shape at the edges, so reading it is one `readinto` into the destination; this
    runs ~10x faster than zarr's general decode path. Anything else (compression, fsspec
    stores, other key encodings) is read through zarr itself.
    """

    def __init__(self, array, root: Path):
        self.array = array
        self.root = root
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.chunks = tuple(array.chunks)
        self.encode = array.metadata.encode_chunk_key

    @classmethod
    def wrap(cls, array):
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
        return cls(array, Path(array.store.root) / array.path) if plain else array

    def __getitem__(self, index):
        members, epochs, samples = index
        m_range = range(*members.indices(self.shape[0]))
        e_range = range(*epochs.indices(self.shape[1]))
        start, stop, _ = samples.indices(self.shape[2])
        out = np.empty((len(m_range), len(e_range), stop - start, self.shape[3]), dtype=self.dtype)
        return self.read_into(out, m_range.start, e_range.start, start)

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
                    except FileNotFoundError:  # zarr skips chunks equal to the fill value
                        got = 0
                    if got != target.nbytes:
                        if got:
                            raise RunStoreError(f"chunk file {path} is truncated")
                        target[...] = 0
        return out


def _strings(array) -> np.ndarray:
    """A zarr string array as a plain numpy unicode array (zarr returns numpy's StringDType)."""
    values = array[:]
    return np.array(values.tolist() if hasattr(values, "tolist") else list(values), dtype=str)


@contextlib.contextmanager
def hold_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the run directory's writer lock, or raise RunLockedError naming the holder."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    lock_path = path / LOCK_FILE
    handle = open(lock_path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunLockedError(
                f"{path} is in use by {holder}; wait for it to finish or stop it, then run again"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield
    finally:
        handle.close()


def remove_partial(path: Path, existed_before: bool) -> None:
    """Remove what a failed command created, so no half-written run is left behind."""
    if not existed_before:
        shutil.rmtree(path, ignore_errors=True)
