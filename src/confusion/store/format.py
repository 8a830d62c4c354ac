"""The run store's format: every path it writes, its constants, and the checks that tell a
damaged or foreign directory from a run.

    RUN/run.json              what was run, and which epochs are committed (atomic writes)
    RUN/predictions.zarr/     Zarr v3 group, one subgroup per split:
        <split>/probs         (members, epoch slots, samples, classes) float16, chunked along samples
        <split>/labels        (samples,) int32, -1 where unknown (read as int64)
        <split>/ids           (samples,) str, stable sample ids
        <split>/sources       (samples,) str, source file of each sample (optional)
        <split>/member_*, ensemble_*   the reduced record (runs kept `reduced`: see reduced.py);
                              their raw probs chunks are deleted once an epoch is committed
        <split>/topk_values, topk_indices   (members, epoch slots, samples, k): top-k logs
                              (runs kept `topk`, written by `confusion import --topk`)
        .<split>.new, .<split>.old   a split being replaced (`import --overwrite`): staging names
                              no split can have; a swap a crash cut short is finished or rolled
                              back when the run is next opened
    RUN/meta/<split>.parquet  per-sample metadata (optional): a `sample` id column and any others
                              (a document's text, a user's columns); read joined by sample id
    RUN/members/member-M.json the epochs member M has ended, written by its writer alone
    RUN/cache/scores-*.npz    scores of a selection (split, base, members, epochs), reused by
                              every consumer; checked against the committed epochs on read
    RUN/cache/neighbours-*.npz  the neighbourhood scores of a split (`confusion.neighbours`)
    RUN/embeddings/           text datasets' cached sentence embeddings (runs made before the per-user
                              cache, `confusion.text.default_cache`, or given its folder)
    RUN/penultimate/member-M/epoch-E/<split>.npy   the members' embeddings (`store.embeddings`)
    RUN/views/member-M/epoch-E/<split>.npy         their predictions on test-time views
    RUN/signals/epoch-E/<split>.{neighbours,views}.npz   their scores, in a run kept reduced
                              instead of them (`store.signals`)
    RUN/combined.json         the fit of the `combined` score (`confusion.combined`), JSON
    RUN/.lock                 held (flock) by a command that owns the whole run (train, import)
    RUN/.member-M.lock        held (flock) by the one process writing member M
    RUN/.commit.lock          taken briefly (flock) to create the run, grow it, or commit

Which arrays a split holds besides probs, labels and ids is the layout's business
(`confusion.store.layouts`); the commit rule is `confusion.store.commit`'s.
"""

from __future__ import annotations

import os
import platform
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .. import __version__
from ..errors import InputError, OccupiedError, ParameterError, RunStoreError
from ..scores import InvalidProbabilities

Mode = Literal["r", "r+", "a", "w", "w-"]  # zarr's open modes: read, read-write, append, create

__all__ = [
    "ARRAYS",
    "CACHE_DIR",
    "CHUNK_BYTES",
    "COMMIT_LOCK",
    "EMBEDDINGS",
    "FORMAT",
    "LAYOUT_NAMES",
    "MAX_CLASSES",
    "MAX_MEMBERS",
    "MAX_SAMPLES",
    "LOCK_FILE",
    "MEMBERS_DIR",
    "Mode",
    "META_DIR",
    "RUN_FILE",
    "WRITTEN",
    "SplitData",
    "check_class_names",
    "check_count",
    "check_split",
    "check_usable_directory",
    "chunk_samples",
    "damage_in_meta",
    "damaged",
    "epoch_number",
    "is_run_store",
    "open_group",
    "shape_problem",
    "software_versions",
    "strings",
]

FORMAT = "confusion-run/1"
RUN_FILE = "run.json"
ARRAYS = "predictions.zarr"
LOCK_FILE = ".lock"
COMMIT_LOCK = ".commit.lock"
MEMBERS_DIR = "members"
META_DIR = "meta"
CACHE_DIR = "cache"
EMBEDDINGS = "embeddings"
LAYOUT_NAMES = ("raw", "reduced", "topk")
WRITTEN = "confusion_written"  # a split group's attribute: when its arrays were made (ns), as run.json says  # run.json's "keep": one class each in `layouts`
# Files a run directory may hold before run.json exists (locks, a half-made store, embeddings).
_OWN_NAMES = {LOCK_FILE, COMMIT_LOCK, ARRAYS, EMBEDDINGS}
# Samples per chunk are chosen so one chunk (one member, one epoch) is about this many bytes.
CHUNK_BYTES = 2**20
# Upper limits of a run's counts: beyond them a typo (an extra digit or three), not a plan, and
# making the run would fill memory before anything is recorded.
MAX_MEMBERS = 1_000
MAX_CLASSES = 1_000_000
MAX_SAMPLES = 2**31 - 1


@dataclass
class SplitData:
    """What a run stores about one split besides predictions.

    Attributes
    ----------
    ids : array-like of str, shape (samples,)
        Stable sample ids, unique and non-empty.
    labels : array-like of int, shape (samples,)
        Class indices, -1 where unknown.
    sources : array-like of str, shape (samples,), optional
        The source file of each sample.
    meta : dict of str to array-like, optional
        Per-sample columns, row-aligned with `ids` (none named ``sample``).
    """

    ids: np.ndarray
    labels: np.ndarray
    sources: np.ndarray | None = None
    meta: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
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
    """Versions of the software a run was recorded with.

    Returns
    -------
    dict of str to str
        run.json's ``versions``: confusion, python, numpy, zarr, and torch, torchvision and numba
        where loaded.
    """
    import zarr

    versions = {"confusion": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for name in ("torch", "torchvision", "zarr", "numba"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "?")
    versions["zarr"] = zarr.__version__
    return versions


def chunk_samples(n_samples: int, n_classes: int) -> int:
    """Samples per chunk of a probs array: one chunk (one member, one epoch) is about CHUNK_BYTES.

    Parameters
    ----------
    n_samples : int
        Samples in the split.
    n_classes : int
        C.

    Returns
    -------
    int
        Samples per chunk, at least 1.
    """
    return max(1, min(n_samples, CHUNK_BYTES // (2 * n_classes)))


def is_run_store(path: str | os.PathLike) -> bool:
    """Whether `path` holds a run store.

    Parameters
    ----------
    path : str or PathLike
        A folder.

    Returns
    -------
    bool
        True when it has a run.json file and a predictions.zarr folder.
    """
    path = Path(path)
    return (path / RUN_FILE).is_file() and (path / ARRAYS).is_dir()


def open_group(path: Path, mode: Mode) -> Any:
    """The Zarr v3 group of a run, or one line saying it is not readable.

    Parameters
    ----------
    path : Path
        The run directory.
    mode : Mode
        zarr's open mode.

    Returns
    -------
    zarr.Group
        RUN/predictions.zarr.
    """
    import zarr

    try:
        return zarr.open_group(path / ARRAYS, mode=mode, zarr_format=3)
    except Exception as error:
        raise RunStoreError(f"{path / ARRAYS} is not a readable Zarr v3 group: {error}") from None


def damage_in_meta(meta: dict[str, Any]) -> str | None:
    """What is wrong with a parsed run.json: every key the store reads must be there, of its type.

    Parameters
    ----------
    meta : dict
        The parsed run.json.

    Returns
    -------
    str or None
        The first problem, or None.
    """
    expected = {"n_classes": int, "classes": list, "members": list, "epoch_capacity": int, "recorded_epochs": list, "splits": dict}
    for key, kind in expected.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            return f"{key!r} is missing or not a {kind.__name__}"
    if meta["n_classes"] < 1 or len(meta["classes"]) != meta["n_classes"] or not meta["members"]:
        return "its classes and members do not add up"
    if not all(isinstance(e, int) and e >= 1 for e in meta["recorded_epochs"]) or len(meta["recorded_epochs"]) > meta["epoch_capacity"]:
        return "'recorded_epochs' must be training epoch numbers within the epoch capacity"
    if meta.get("keep", "raw") not in LAYOUT_NAMES:
        return f"'keep' must be raw, reduced or topk, not {meta.get('keep')!r}"
    if meta.get("keep") == "topk" and (not isinstance(meta.get("topk"), int) or not 1 <= meta["topk"] <= meta["n_classes"]):
        return "'topk' must be the number of probabilities kept per prediction"
    for name, entry in meta["splits"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("n"), int) or entry["n"] < 1:
            return f"split {name!r} has no sample count"
    return None


def shape_problem(name: str, array: Any, meta: dict[str, Any], split: str, *, probs_filled: bool) -> str | None:
    """How an array of a split disagrees with run.json, or a chunk shape no writer makes.

    Parameters
    ----------
    name : str
        The array's name in the split's group.
    array : zarr.Array
        The array.
    meta : dict
        The parsed run.json.
    split : str
        The split.
    probs_filled : bool
        The layout writes the probs array, so its shape must match too.

    Returns
    -------
    str or None
        The disagreement (sample count, members, classes), or None when it agrees.
    """
    if min(array.chunks, default=1) < 1:
        return f"has chunk shape {tuple(array.chunks)}"
    n, members, classes = meta["splits"][split]["n"], len(meta["members"]), meta["n_classes"]
    if name in ("ids", "labels"):
        wrong = tuple(array.shape) != (n,)
    else:
        wrong = name == "probs" and probs_filled and (array.shape[0] != members or tuple(array.shape[2:]) != (n, classes))
    if wrong:
        return f"is shaped {tuple(array.shape)}, but {RUN_FILE} gives split {split!r} {n} samples, {members} members and {classes} classes"
    return None


def check_count(value: Any, name: str, most: int, least: int = 1) -> int:
    """A whole number from `least` to `most`, or one line naming the parameter `name`.

    Parameters
    ----------
    value : int
        The count.
    name : str
        The Python parameter that gave it.
    most : int
        The largest count accepted.
    least : int
        The smallest count accepted.

    Returns
    -------
    int
        `value`, as a Python int.

    Raises
    ------
    ParameterError
        Naming `name` and the range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not least <= value <= most:
        raise ParameterError(f"{{{name}}} must be a whole number from {least:,} to {most:,}, got {value!r}", name)
    return int(value)


def check_class_names(classes: Sequence[str], n_classes: int) -> None:
    """One distinct, non-empty name per class (names label folders, tables and figures).

    Parameters
    ----------
    classes : sequence of str
        The class names, in class-index order.
    n_classes : int
        How many classes the run has.

    Raises
    ------
    InputError
        When the count differs, a name is empty, or a name is given twice.
    """
    if len(classes) != n_classes:
        raise InputError(f"{len(classes)} class names given for {n_classes} classes")
    names = [str(c).strip() for c in classes]
    if not all(names):
        raise InputError("a class name is empty")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"class name {repeated[0]!r} is given twice; each class needs its own name")


def check_split(name: str, split: SplitData, n_classes: int) -> None:
    """A split name that is a plain folder name, at least one sample, labels within the classes.

    Parameters
    ----------
    name : str
        The split's name.
    split : SplitData
        Its data.
    n_classes : int
        C.

    Raises
    ------
    InputError
        Naming what is wrong.
    """
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise InputError(f"split name {name!r} is not a plain name")
    if any(unicodedata.category(character) in ("Cc", "Cf", "Zl", "Zp") for character in name):  # newlines, bidi controls
        raise InputError(f"split name {name!r} holds a control character; it names files and columns")
    if len(split.ids) == 0:
        raise InputError(f"split {name!r} has no samples")
    if ((split.labels < -1) | (split.labels >= n_classes)).any():
        raise InputError(f"split {name!r}: labels must be -1 (unknown) or 0..{n_classes - 1}")


def epoch_number(epoch: Any) -> int:
    """A 1-based training epoch number, checked.

    Parameters
    ----------
    epoch : int
        The epoch.

    Returns
    -------
    int
        It, as a Python int.

    Raises
    ------
    InputError
        For anything but a whole number >= 1.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 1:
        raise InputError(f"epoch must be the 1-based training epoch number, got {epoch!r}")
    return int(epoch)


def strings(array: Any) -> np.ndarray:
    """A zarr string array as a plain numpy unicode array (zarr returns numpy's StringDType).

    Parameters
    ----------
    array : zarr.Array
        A 1-D string array.

    Returns
    -------
    ndarray of str
        Its values.
    """
    values = array[:]
    return np.array(values.tolist() if hasattr(values, "tolist") else list(values), dtype=str)


def damaged(where: str, error: InvalidProbabilities) -> RunStoreError:
    """The store only ever holds probabilities: stored values that are not are damage, not logits.

    Parameters
    ----------
    where : str
        The run and split.
    error : InvalidProbabilities
        What the scorer found.

    Returns
    -------
    RunStoreError
        One line naming the damage, to raise.
    """
    return RunStoreError(f"{where} is damaged: {str(error).split('; if these are logits')[0]}")


def _is_own(name: str) -> bool:
    """Files a run directory holds before its run.json exists: locks, a half-made store, and the
    temporary run.json another process is writing this moment (racing creators)."""
    return name in _OWN_NAMES or name.startswith(".member-") or (name.startswith(f".{RUN_FILE}.") and name.endswith(".tmp"))


def check_usable_directory(path: Path, exist_ok: bool) -> None:
    """Refuse a file, or a folder holding anything but a run (before anything is written there).

    Parameters
    ----------
    path : Path
        Where a run is about to be made.
    exist_ok : bool
        Whether a run store already there is acceptable (it will be opened).

    Raises
    ------
    InputError
        When `path` is a file.
    RunStoreError
        When `path` holds anything but a run (or a run, without `exist_ok`).
    """
    if not path.exists():
        return
    if not path.is_dir():
        raise InputError(f"{path} exists and is not a directory")
    if exist_ok and is_run_store(path):
        return
    foreign = [p.name for p in path.iterdir() if not _is_own(p.name)]
    if foreign or (is_run_store(path) and not exist_ok):
        raise OccupiedError(f"{path} already exists and is not empty; choose a new {{path}} directory", "path")
