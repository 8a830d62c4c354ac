"""Every dataset loader on the data that installs here, and its errors."""

import gzip
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from confusion.datasets import load_dataset, read_idx
from confusion.errors import InputError, UnknownNameError

from .conftest import FASHION_ROOT


def _check(dataset, n_classes):
    assert set(dataset.splits) >= {"train", "val"}
    for split in dataset.splits.values():
        assert split.images.dtype == np.uint8 and split.images.ndim == 4
        assert len(split.ids) == len(split.labels) == len(split.images)
        assert len(set(split.ids.tolist())) == len(split.ids)
    assert dataset.n_classes == n_classes
    train, val = dataset.splits["train"], dataset.splits["val"]
    assert not set(train.ids.tolist()) & set(val.ids.tolist())


@pytest.mark.skipif(not FASHION_ROOT.is_dir(), reason="needs the Debian package dataset-fashion-mnist")
def test_fashion_mnist_from_the_debian_package():
    dataset = load_dataset("fashion-mnist")
    _check(dataset, 10)
    assert dataset.splits["train"].images.shape == (60000, 1, 28, 28)
    assert dataset.splits["val"].images.shape == (10000, 1, 28, 28)
    assert dataset.classes[0] == "T-shirt/top" and dataset.splits["val"].ids[0] == "val-00000"
    assert np.bincount(dataset.splits["val"].labels).tolist() == [1000] * 10


def test_fashion_mnist_from_root_and_missing_root(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    labels = np.array([3, 7], dtype=np.uint8)

    def write(name, array):
        header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        with gzip.open(tmp_path / f"{name}.gz", "wb") as handle:
            handle.write(header + array.tobytes())

    for prefix in ("train", "t10k"):
        write(f"{prefix}-images-idx3-ubyte", images)
        write(f"{prefix}-labels-idx1-ubyte", labels)
    dataset = load_dataset("fashion-mnist", root=tmp_path)
    np.testing.assert_array_equal(dataset.splits["val"].images[:, 0], images)
    np.testing.assert_array_equal(dataset.splits["train"].labels, [3, 7])
    np.testing.assert_array_equal(read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz"), labels)
    with pytest.raises(InputError, match="does not exist"):
        load_dataset("fashion-mnist", root=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="IDX files"):
        load_dataset("fashion-mnist", root=tmp_path / "empty")


def test_digits_and_mnist_5k_have_seeded_splits():
    digits = load_dataset("digits")
    _check(digits, 10)
    assert len(digits.splits["train"]) + len(digits.splits["val"]) == 1797
    assert digits.splits["train"].images.shape[1:] == (1, 8, 8)
    again = load_dataset("digits")
    assert digits.splits["val"].ids.tolist() == again.splits["val"].ids.tolist()
    assert load_dataset("digits", seed=1).splits["val"].ids.tolist() != digits.splits["val"].ids.tolist()
    mnist = load_dataset("mnist-5k")
    _check(mnist, 10)
    assert len(mnist.splits["val"]) == 1000 and mnist.splits["val"].images.shape[1:] == (1, 28, 28)


def test_digits_are_scikit_learns_read_without_importing_it():
    from sklearn.datasets import load_digits

    from confusion.datasets import _digits_arrays

    values, labels = _digits_arrays()
    bunch = load_digits()
    assert np.array_equal(values, bunch.images) and np.array_equal(labels, bunch.target) and labels.dtype == bunch.target.dtype
    code = "import sys; from confusion.datasets import load_dataset; load_dataset('digits'); print('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def _write_images(folder, count, size=(12, 10), mode="L", value=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new(mode, size, color=value + i).save(folder / f"img<{i}>.png")


def test_imagefolder_with_and_without_train_val(tmp_path):
    for name in ("cat", "dog"):
        _write_images(tmp_path / "flat" / name, 10)
        _write_images(tmp_path / "split" / "train" / name, 4)
        _write_images(tmp_path / "split" / "val" / name, 2)
    flat = load_dataset(f"imagefolder:{tmp_path / 'flat'}")
    _check(flat, 2)
    assert len(flat.splits["val"]) == 4 and flat.splits["train"].images.shape[1:] == (1, 10, 12)
    assert flat.splits["train"].ids[0].startswith("cat/")
    assert flat.splits["train"].sources is not None
    split = load_dataset(f"imagefolder:{tmp_path / 'split'}", image_size=8)
    assert len(split.splits["train"]) == 8 and split.splits["val"].ids[0] == "val/cat/img<0>.png"
    assert split.splits["val"].images.shape[1:] == (1, 8, 8)


def test_imagefolder_errors(tmp_path):
    _write_images(tmp_path / "one" / "only", 3)
    with pytest.raises(InputError, match="at least two class folders"):
        load_dataset(f"imagefolder:{tmp_path / 'one'}")
    (tmp_path / "none" / "a").mkdir(parents=True)
    (tmp_path / "none" / "b").mkdir(parents=True)
    with pytest.raises(InputError, match="holds no images"):
        load_dataset(f"imagefolder:{tmp_path / 'none'}")
    with pytest.raises(InputError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}")


def test_npz_and_unlabeled(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "d.npz",
        x_train=rng.random((20, 6, 6)),
        y_train=rng.integers(0, 3, 20),
        x_val=rng.random((8, 6, 6)),
        y_val=rng.integers(0, 3, 8),
    )
    np.save(tmp_path / "pool.npy", rng.integers(0, 256, (5, 6, 6)).astype(np.uint8))
    dataset = load_dataset(f"npz:{tmp_path / 'd.npz'}", unlabeled=tmp_path / "pool.npy")
    _check(dataset, 3)
    assert (dataset.splits["unlabeled"].labels == -1).all() and len(dataset.splits["unlabeled"]) == 5
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 4, 4)))
    with pytest.raises(InputError, match="lacks arrays"):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")
    np.save(tmp_path / "wrong.npy", np.zeros((5, 7, 7), np.uint8))
    with pytest.raises(InputError, match="the dataset's are"):
        load_dataset(f"npz:{tmp_path / 'd.npz'}", unlabeled=tmp_path / "wrong.npy")


def test_unknown_dataset_name():
    with pytest.raises(UnknownNameError, match="unknown dataset 'cifar-11'.*fashion-mnist"):
        load_dataset("cifar-11")
