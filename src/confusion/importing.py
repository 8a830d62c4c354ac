"""Import: predictions made anywhere (PyTorch, JAX, Keras, XGBoost...) become a run store.

Accepted: an .npy or .npz array shaped (members, epochs, samples, classes) or (samples,
classes), of probabilities or logits; or one .npy file per member and epoch, named by a
pattern such as ``preds/m{member}_e{epoch}.npy``. Everything is validated block by block as
it is written, and a failed import leaves nothing behind.
"""

from __future__ import annotations

import glob
import re
import shutil
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ._files import write_json_atomic
from .errors import InputError, ParameterError, RunStoreError
from .reduced import check_keep
from .scores import as_four_d, describe_invalid, softmax
from .store import LOCK_FILE, RunStore, SplitData, check_class_names, check_usable_directory, hold_lock, is_run_store
from .torchfiles import load_weights_only

__all__ = [
    "TEXT_SUFFIXES",
    "TORCH_SUFFIXES",
    "StackedFiles",
    "archive_labels",
    "attach_metadata",
    "import_predictions",
    "import_topk",
    "load_labels",
    "load_predictions",
    "read_metadata",
    "split_from_name",
]

TORCH_SUFFIXES = (".pt", ".pth")
TEXT_SUFFIXES = (".txt", ".csv", ".tsv")


def _load_npy(path: Path, what: str, mmap: bool = True) -> np.ndarray:
    """An array from .npy/.npz, a torch file (.pt/.pth: a tensor, or a dict of tensors, loaded
    weights-only) or, for labels, a text file with one value per line."""
    if not path.is_file():
        raise InputError(f"{what} file {path} does not exist")
    if path.suffix.lower() in TORCH_SUFFIXES:
        return _load_torch(path, what)
    if path.suffix.lower() in TEXT_SUFFIXES:
        if what != "labels":
            raise InputError(f"{path}: {what} must be .npy, .npz, .pt or .pth; a text file holds labels only")
        return _load_text_labels(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                if len(keys) == 1:
                    return archive[keys[0]]
                for key in (what, "probs", "logits"):
                    if key in keys:
                        return archive[key]
                raise InputError(f"{path} holds arrays {keys}; name one of them {what!r}")
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except InputError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        raise InputError(f"{path} is not a readable .npy/.npz array: {_what_went_wrong(path, error)}") from None


def _load_torch(path: Path, what: str) -> np.ndarray:
    import torch

    try:
        value = load_weights_only(path)
    except Exception as error:  # unpickling refused or a damaged file: one line
        raise InputError(f"{path} does not load with torch.load(weights_only=True): {str(error).splitlines()[0]}") from None
    if isinstance(value, dict):
        tensors = {k: v for k, v in value.items() if isinstance(v, torch.Tensor)}
        key = next((k for k in (what, "probs", "logits", "labels") if k in tensors), None)
        if key is None and len(tensors) == 1:
            key = next(iter(tensors))
        if key is None:
            raise InputError(f"{path} holds a dict with tensors {sorted(tensors)}; name one of them {what!r}")
        value = tensors[key]
    if not isinstance(value, torch.Tensor):
        raise InputError(f"{path} holds a {type(value).__name__}, not a tensor or a dict of tensors")
    value = value.detach().cpu()
    return (value.float() if value.is_floating_point() and value.dtype.itemsize < 4 else value).numpy()


def _load_text_labels(path: Path) -> np.ndarray:
    """One label per line: class indices, or class names (mapped through the class list later)."""
    values = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    try:
        return np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        return np.array(values, dtype=str)


def split_from_name(source, given: str | None) -> tuple[str, str]:
    """The split these predictions are for, and why: given, named in the file name, or 'val'."""
    if given is not None:
        return given, "given"
    name = Path(str(source)).name.lower() if not isinstance(source, np.ndarray) else ""
    for split, words in (("train", ("train",)), ("test", ("test",)), ("val", ("val", "valid", "validation", "dev"))):
        if any(re.search(rf"(^|[^a-z]){word}([^a-z]|$)", name) for word in words):
            return split, f"from the file name {name!r}"
    return "val", "the default; name it with --split"


class StackedFiles:
    """Reads one (samples, classes) .npy file per member and epoch as one 4-D array."""

    def __init__(self, pattern: str):
        if "{member}" not in pattern or "{epoch}" not in pattern:
            raise InputError("a per-file pattern needs both {member} and {epoch}, e.g. preds/m{member}_e{epoch}.npy")
        regex = re.compile("^" + re.escape(pattern).replace(r"\{member\}", r"(?P<member>\d+)").replace(r"\{epoch\}", r"(?P<epoch>\d+)") + "$")
        found: dict[tuple[int, int], Path] = {}
        # Everything but the two fields is literal: a folder named "runs[1]" or "a*b" is a folder, not a wildcard.
        literal = glob.escape(pattern.replace("{member}", "\0").replace("{epoch}", "\1"))
        for name in glob.glob(literal.replace("\0", "*").replace("\1", "*")):
            match = regex.match(name)
            if match:
                key = int(match["member"]), int(match["epoch"])
                if key in found:  # m01_e0 and m1_e0: one slot, two files
                    raise InputError(f"{found[key]} and {name} both name member {key[0]}, epoch {key[1]}; keep one")
                found[key] = Path(name)
        if not found:
            raise InputError(f"no files match {pattern}")
        self.member_numbers = sorted({m for m, _ in found})
        self.epoch_numbers = sorted({t for _, t in found})
        missing = [(m, t) for m in self.member_numbers for t in self.epoch_numbers if (m, t) not in found]
        if missing:
            raise InputError(f"{pattern}: missing files for (member, epoch) {missing[:5]}")
        self.files = [[found[m, t] for t in self.epoch_numbers] for m in self.member_numbers]
        first = _load_npy(self.files[0][0], "probs")
        if first.ndim != 2:
            raise InputError(f"{self.files[0][0]} must be (samples, classes), got shape {first.shape}")
        self.dtype = first.dtype
        self.shape = (len(self.member_numbers), len(self.epoch_numbers), *first.shape)

    def __getitem__(self, index):
        """Supports what the scorer and importer ask: [members, epochs, samples], each an int or a slice."""
        members, epochs, samples = index[:3]
        squeeze = tuple(axis for axis, key in enumerate((members, epochs)) if isinstance(key, int))
        as_slice = lambda key: slice(key, key + 1) if isinstance(key, int) else key  # noqa: E731
        rows = []
        for files in self.files[as_slice(members)]:
            cells = []
            for path in files[as_slice(epochs)]:
                array = _load_npy(path, "probs")
                if array.shape != self.shape[2:]:
                    raise InputError(f"{path} has shape {array.shape}, expected {self.shape[2:]}")
                cells.append(np.asarray(array[samples]))
            rows.append(cells)
        return np.asarray(rows).squeeze(axis=squeeze) if squeeze else np.asarray(rows)


def load_predictions(source: str | Path | np.ndarray):
    """An array-like (members, epochs, samples, classes) or (samples, classes) from a path or array."""
    if isinstance(source, np.ndarray):
        return source
    text = str(source)
    if "{member}" in text or "{epoch}" in text:
        return StackedFiles(text)
    return _load_npy(Path(text), "probs")


def archive_labels(source) -> np.ndarray | None:
    """The 'labels' array of a predictions .npz that holds one beside its probabilities (the
    labels of those predictions, used when none are given separately); else None."""
    if isinstance(source, np.ndarray) or Path(str(source)).suffix != ".npz" or not Path(str(source)).is_file():
        return None
    try:
        with np.load(source, allow_pickle=False) as archive:
            return archive["labels"] if "labels" in archive.files and len(archive.files) > 1 else None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        raise InputError(f"{source} is not a readable .npz archive: {error}") from None


def _what_went_wrong(path: Path, error: Exception) -> str:
    """numpy's reason, unless it is its advice about allow_pickle: a file that is not numpy's
    at all (no .npy header, no zip) is said to be so, and pickled objects are never loaded."""
    if "allow_pickle" not in str(error):
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    try:
        with open(path, "rb") as handle:
            head = handle.read(6)
    except OSError:
        head = b""
    if head.startswith((b"\x93NUMPY", b"PK")):
        return "it holds Python objects (pickled data), which are never loaded; save plain numeric arrays"
    return "it is not a numpy file (no .npy header and not an .npz archive)"


def load_labels(source, n_samples: int, n_classes: int, classes: Sequence[str] | None = None) -> np.ndarray:
    """Labels (samples,) as int64 in -1..C-1, from a path or an array.

    Class names (strings) are mapped to indices through `classes`; an empty name, "-1" or
    "unknown" is an unknown label (-1).
    """
    labels = np.asarray(_load_npy(Path(source), "labels", mmap=False) if not isinstance(source, np.ndarray) else source)
    if labels.ndim != 1 or len(labels) != n_samples:
        raise InputError(f"labels must be (samples,) = ({n_samples},), got shape {labels.shape}")
    if labels.dtype.kind in "US":
        labels = _labels_from_names(labels.astype(str), classes)
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
            raise InputError("labels must be whole numbers (class indices, -1 for unknown)")
    elif labels.dtype.kind not in "iu":
        raise InputError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.size and labels.max() >= n_classes:  # checked before the cast: uint64 >= 2^63 would wrap to negatives
        raise InputError(f"labels must lie in 0..{n_classes - 1} (or -1 for unknown); found {labels.max()}")
    labels = labels.astype(np.int64)
    if ((labels < -1) | (labels >= n_classes)).any():
        raise InputError(f"labels must lie in 0..{n_classes - 1} (or -1 for unknown)")
    return labels


def _labels_from_names(names: np.ndarray, classes: Sequence[str] | None) -> np.ndarray:
    if classes is None:
        raise ParameterError("labels are class names; give the classes in order with {classes} a,b,c so they map to indices", "classes")
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({str(n) for n in names if n not in index and n not in ("", "-1", "unknown")})
    if unknown:
        raise ParameterError(f"labels name classes that are not in {{classes}}: {unknown[:5]}", "classes")
    return np.array([index.get(n, -1) for n in names], dtype=np.int64)


def import_predictions(
    source,
    out: str | Path,
    *,
    logits: bool = False,
    labels=None,
    split: str = "val",
    sample_ids: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
    overwrite: bool = False,
    meta: str | Path | None = None,
    keep: str | None = None,
) -> RunStore:
    """Write predictions into run store `out` as split `split`, creating the run if needed.

    Parameters
    ----------
    source : array-like or path
        (members, epochs, samples, classes) or (samples, classes); probabilities, or logits
        with ``logits=True`` (softmax over classes is applied before storing).
    out : run directory. If it is already a run store with the same members, epochs and
        classes, the split is added to it.
    labels : (samples,) ints or path, optional; -1 = unknown. Never used for scoring. Default:
        the 'labels' array of a `source` .npz that holds one, else unknown.
    progress : called with the number of (member, epoch) slices written.
    meta : a .csv/.parquet table of per-sample metadata joined by sample id (see `read_metadata`).
    keep : "raw" (the default for a new run) or "reduced" (`confusion.reduced`: each epoch's raw
        probabilities are replaced by the reduced record as it is committed). A split added to an
        existing run is kept as that run keeps its others.
    """
    if keep is not None:
        check_keep(keep)
    array = load_predictions(source)
    n_members, n_epochs, n_samples, n_classes = as_four_d(tuple(array.shape))
    dtype = np.dtype(array.dtype)
    if dtype.kind != "f":
        raise InputError(f"probs must be floating point, got dtype {dtype}")
    out = Path(out)
    existed = out.exists()
    adding = existed and is_run_store(out)
    interrupted = adding and _interrupted_import(out)
    adding = adding and not interrupted
    label_classes = classes if classes is not None or not adding else RunStore.open(out).classes
    if labels is None:
        labels = archive_labels(source)
    label_array = np.full(n_samples, -1, np.int64) if labels is None else load_labels(labels, n_samples, n_classes, label_classes)
    ids = np.arange(n_samples).astype(str) if sample_ids is None else np.asarray(sample_ids).astype(str)
    if len(ids) != n_samples:
        raise InputError(f"{len(ids)} sample ids for {n_samples} samples")
    split_data = SplitData(ids=ids, labels=label_array, meta=read_metadata(meta, ids) if meta is not None else None)
    if existed and not out.is_dir():
        raise ParameterError(f"{{out}} {out} exists and is not a directory", "out")
    check_usable_directory(out, exist_ok=adding or interrupted)  # before the lock file goes into a user's folder
    if classes is not None:
        check_class_names(classes, n_classes)
    if adding and keep is not None and RunStore.open(out).keep != keep:
        raise ParameterError(
            f"{out} keeps its predictions {RunStore.open(out).keep}; a split added to it is kept the same (drop {{keep}} {keep})", "keep"
        )
    if adding:
        with hold_lock(out):
            return _add_split(array, out, split, split_data, logits, dtype, progress, overwrite)
    return _new_run(
        out,
        existed,
        interrupted,
        lambda: RunStore.create(
            out,
            n_classes=n_classes,
            members=[{"index": m, "seed": None} for m in range(n_members)],
            epoch_capacity=n_epochs,
            splits={split: split_data},
            classes=classes,
            keep=keep or "raw",
            info={"source": "import", "imported_from": str(source) if not isinstance(source, np.ndarray) else "array", "import_complete": False},
        ),
        lambda store: _write_epochs(array, store, split, logits, dtype, progress),
    )


def _new_run(out: Path, existed: bool, interrupted: bool, create: Callable[[], RunStore], write: Callable[[RunStore], None]) -> RunStore:
    """Make run `out` (`create`), fill it (`write`), then mark the import complete, under the run's
    lock. `import_complete` stays False until every epoch is written, so an import killed midway
    is started over by the next one (`interrupted`); an import that fails leaves no half run."""
    with hold_lock(out):
        if interrupted:
            _empty_dir(out, keep={LOCK_FILE})
        try:
            store = create()
            write(store)
            store.refresh()
            store.meta["import_complete"] = True
            store.save_meta()
        except BaseException:
            if existed and not interrupted:
                _empty_dir(out)
            else:
                shutil.rmtree(out, ignore_errors=True)
            raise
    store.refresh()
    return store


def read_metadata(path: str | Path, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Columns of table `path` (.csv or .parquet) in the order of `ids`, joined by its `sample`
    (or `id`) column; samples it does not name get empty values. At least one must match."""
    from .data import read_id_table

    path = Path(path)
    table, key = read_id_table(path, "--meta")
    if table[key].duplicated().any():
        raise ParameterError(f"{{meta}} {path}: sample id {table[key][table[key].duplicated()].iloc[0]!r} appears twice", "meta")
    ids = np.asarray(ids).astype(str)
    matched = int(table[key].isin(ids).sum())
    if matched == 0:
        raise ParameterError(f"{{meta}} {path}: none of its {len(table)} sample ids is a sample of this split (e.g. {str(ids[0])!r})", "meta")
    aligned = table.set_index(key).reindex(ids)
    return {str(column): aligned[column].to_numpy() for column in aligned.columns if column != "sample"}


def attach_metadata(out: str | Path, split: str, path: str | Path) -> int:
    """Add the columns of table `path` to the metadata of split `split` of run `out` (a column of
    the same name is replaced); returns the number of samples the table names."""
    store = RunStore.open(out, mode="a")
    store.chosen_splits([split])
    ids = store.sample_ids(split)
    columns = read_metadata(path, ids)
    existing = store.metadata(split)  # kept, except columns the new table replaces
    kept = {c: existing[c].to_numpy() for c in existing.columns[1:] if c not in columns} if existing is not None else {}
    store.write_metadata(split, ids, {**kept, **columns})
    first = next(iter(columns.values()))
    return int(sum(1 for value in first if value is not None and value == value))  # NaN != NaN


def _add_split(array, out: Path, split: str, split_data: SplitData, logits: bool, dtype, progress, overwrite: bool) -> RunStore:
    """A new (or, with `overwrite`, a replaced) split of a run whose epochs are committed: listed
    only once all its data is written."""
    n_members, n_epochs, _, n_classes = as_four_d(tuple(array.shape))
    store = RunStore.open(out, mode="a")
    if (store.n_members, len(store.recorded_epochs), store.n_classes) != (n_members, n_epochs, n_classes):
        raise InputError(
            f"{out} holds {store.n_members} members x {len(store.recorded_epochs)} epochs x "
            f"{store.n_classes} classes; these predictions are {n_members} x {n_epochs} x {n_classes}"
        )

    def fill(group: str = split):
        _copy_validated(array, logits, dtype, progress, lambda m, t, start, rows: store.write(group, m, t, rows, start))

    if split not in store.splits:
        store.add_split(split, split_data, fill)
    elif overwrite:
        store.replace_split(split, split_data, fill)
    else:
        raise RunStoreError(f"{out} already has a split named {split!r}; pass --overwrite to replace it")
    return store


def _write_epochs(array, store: RunStore, split: str, logits: bool, dtype, progress) -> None:
    """The same path as every other writer: each member logs and ends its epochs, the store commits."""
    n_samples = as_four_d(tuple(array.shape))[2]
    writers = [store.member_writer(m) for m in range(store.n_members)]
    try:

        def write(member, epoch, start, rows):
            writers[member].log(split, epoch + 1, rows, index=np.arange(start, start + len(rows)), validate=False)
            if start + len(rows) == n_samples:
                writers[member].end_epoch(epoch + 1)

        _copy_validated(array, logits, dtype, progress, write)
    finally:
        for writer in writers:
            writer.close()


def _empty_dir(path: Path, keep: set[str] = frozenset()) -> None:
    for child in path.iterdir():
        if child.name not in keep:
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)


def _interrupted_import(path: Path) -> bool:
    """Whether `path` is a run that `import` created and was killed before it finished."""
    try:
        meta = RunStore.open(path).meta
    except RunStoreError:
        return False
    return meta.get("source") == "import" and meta.get("import_complete") is False


def _copy_validated(array, logits: bool, dtype: np.dtype, progress, write) -> None:
    """Validate `array` block by block and pass each block, as probabilities, to write(member, epoch, start, rows)."""
    n_members, n_epochs, n_samples, n_classes = as_four_d(tuple(array.shape))
    two_d = len(array.shape) == 2
    block = max(1, (16 * 2**20) // (8 * n_classes))
    for epoch in range(n_epochs):  # epoch by epoch: a reduced run commits (and drops raw) as it goes
        for member in range(n_members):
            for start in range(0, n_samples, block):
                stop = min(start + block, n_samples)
                part = np.asarray(array[start:stop] if two_d else array[member, epoch, start:stop], dtype=np.float64)
                problem = describe_invalid(part[None, None], dtype, start, logits, [member], [epoch])
                if problem:
                    raise InputError(problem)
                write(member, epoch, start, softmax(part) if logits else part)
            if progress is not None:
                progress(1)


def import_topk(
    source,
    out: str | Path,
    *,
    n_classes: int | None = None,
    logprobs: bool = False,
    labels=None,
    split: str = "val",
    sample_ids: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> RunStore:
    """Make run store `out` from top-k logs (`confusion.topk`): scores come with guaranteed bounds.

    source: an .npz holding `values` and `indices` shaped (members, epochs, samples, k) or
    (samples, k), and optionally `n_classes`; or a (values, indices) pair of arrays. Values are
    the probabilities of the listed classes (log-probabilities with ``logprobs``), not
    renormalised: 1 - their sum is the mass of the classes left out.
    """
    from .topk import load_topk, prepare_topk

    if classes is not None:
        if n_classes is not None and n_classes != len(classes):
            raise ParameterError(f"{{n_classes}} {n_classes} and {len(classes)} class names disagree", "n_classes")
        n_classes = len(classes)
        check_class_names(classes, n_classes)
    if isinstance(source, tuple):
        values, indices, n_classes = prepare_topk(*source, n_classes=n_classes, logprobs=logprobs)
    else:
        values, indices, n_classes = load_topk(source, n_classes=n_classes, logprobs=logprobs)
    n_members, n_epochs, n_samples, k = values.shape
    label_array = np.full(n_samples, -1, np.int64) if labels is None else load_labels(labels, n_samples, n_classes, classes)
    ids = np.arange(n_samples).astype(str) if sample_ids is None else np.asarray(sample_ids).astype(str)
    if len(ids) != n_samples:
        raise InputError(f"{len(ids)} sample ids for {n_samples} samples")
    out = Path(out)
    existed = out.exists()
    if existed and not out.is_dir():
        raise ParameterError(f"{{out}} {out} exists and is not a directory", "out")
    interrupted = is_run_store(out) and _interrupted_import(out)
    if is_run_store(out) and not interrupted:
        raise RunStoreError(f"{out} already exists; top-k logs make a new run, choose a new --out directory")
    check_usable_directory(out, exist_ok=interrupted)

    def write(store: RunStore) -> None:
        for epoch in range(n_epochs):
            for member in range(n_members):
                store.write_topk(split, member, epoch, values[member, epoch], indices[member, epoch])
                if progress is not None:
                    progress(1)
        epochs = list(range(1, n_epochs + 1))
        for member in range(n_members):  # every epoch is written: the members end them, the store commits
            write_json_atomic(store.member_file(member), {"member": member, "ended": epochs, "info": {}})
        store.commit_ready()

    return _new_run(
        out,
        existed,
        interrupted,
        lambda: RunStore.create(
            out,
            n_classes=n_classes,
            members=[{"index": m, "seed": None} for m in range(n_members)],
            epoch_capacity=n_epochs,
            splits={split: SplitData(ids=ids, labels=label_array)},
            classes=classes,
            keep="topk",
            topk=int(k),
            info={"source": "import", "imported_from": str(source) if not isinstance(source, tuple) else "arrays", "import_complete": False},
        ),
        write,
    )
