"""The members' penultimate-layer embeddings (what the neighbourhood scores read) and their
class probabilities on test-time views (what the view scores read).

    RUN/penultimate/member-M/epoch-E/<split>.npy   (samples, dims) float16, every split of the
                              run, in one basis per member and epoch (see below)
    RUN/penultimate/member-M/.open-epoch-E/        the epoch being logged: full-width rows, any
                              order; removed when the member's next writer opens

A member logs the input of its classifier head for every sample of every split (the trainer and
the Recorder's integrations do it at the epochs chosen, by default the last). When it ends the
epoch, the rows are projected onto the first `dims` principal axes of the train split (of up to
`BASIS_ROWS` of its rows, seeded), so a 1,568-wide convolutional feature map costs 128 bytes a
sample, and `epoch-E/` appears in one rename *before* the member file says the epoch ended: the
commit rule then makes an epoch's embeddings readable exactly when its predictions are, and a
committed epoch's embeddings never change. Widths of at most `dims` are kept as they are.
Views (RUN/views/, `MemberWriter.log_views`) go through the same log, unprojected: each row is
a sample's V views' class probabilities, one after the other.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from .._files import atomic_path
from ..errors import InputError, RunStoreError

__all__ = [
    "BASIS_ROWS",
    "DIMS",
    "EMBEDDINGS_DIR",
    "EmbeddingLog",
    "check_embeddings",
    "embedding_epochs",
    "principal_axes",
    "project",
    "read_embeddings",
]

EMBEDDINGS_DIR = "penultimate"
VIEWS_DIR = "views"  # RUN/views/member-M/epoch-E/<split>.npy: (samples, views x classes) float16 probabilities
DIMS = 64  # principal axes kept per member
BASIS_ROWS = 20_000  # train rows the axes are fitted on
FLOAT16_MAX = 65504.0


def _member_dir(run: Path, member: int, folder: str = EMBEDDINGS_DIR) -> Path:
    return run / folder / f"member-{member}"


class EmbeddingLog:
    """The rows of one member's embeddings for the epoch it is logging, kept on disk.

    Parameters
    ----------
    run : Path
        The run directory.
    member : int
        The member (its writer holds the member's lock).
    sizes : dict of str to int
        Samples of every split of the run.
    dims : int or None
        Principal axes kept; None keeps the rows as they are.
    folder : str
        The run's folder for them: `EMBEDDINGS_DIR`, or `VIEWS_DIR` for the class
        probabilities of test-time views (kept as they are).
    """

    def __init__(self, run: Path, member: int, sizes: dict[str, int], dims: int | None = DIMS, folder: str = EMBEDDINGS_DIR):
        self.run, self.member, self.sizes, self.dims, self.folder = Path(run), member, dict(sizes), dims, folder
        self.epoch: int | None = None
        self._rows: dict[str, np.ndarray] = {}
        self._logged: dict[str, np.ndarray] = {}
        self._cursor: dict[str, int] = {}
        self.drop()  # an epoch a killed writer left open

    @property
    def open_dir(self) -> Path:
        """Where the rows of the epoch being logged are kept until it ends."""
        return _member_dir(self.run, self.member, self.folder) / f".open-epoch-{self.epoch}"

    def log(self, split: str, epoch: int, values: np.ndarray, positions: np.ndarray | None) -> None:
        """Keep rows `values` (batch, width) of `split` at `positions` (None: after the last ones).

        Parameters
        ----------
        split : str
            A split of the run.
        epoch : int
            The epoch being logged (the writer checked it).
        values : ndarray, shape (batch, width)
            The embeddings, finite.
        positions : ndarray of int, optional
            Sample positions; None continues this split's rows in order.
        """
        check_embeddings(values)
        if self.epoch != epoch:
            self.drop()
            self.epoch = epoch
        n = self.sizes[split]
        in_order = positions is None
        if positions is None:
            start = self._cursor.get(split, 0)
            if start + len(values) > n:
                raise InputError(f"{start + len(values)} {self.what} rows of split {split!r} ({n} samples) logged in order; give index")
            positions = np.arange(start, start + len(values))
        rows = self._rows.get(split)
        if rows is None:
            if any(other.shape[1] != values.shape[1] for other in self._rows.values()):
                raise InputError(f"{self.what} must have the same width for every split of an epoch")
            self.open_dir.mkdir(parents=True, exist_ok=True)
            rows = np.lib.format.open_memmap(self.open_dir / f"{split}.npy", mode="w+", dtype=np.float16, shape=(n, values.shape[1]))
            self._rows[split], self._logged[split] = rows, np.zeros(n, dtype=bool)
        elif rows.shape[1] != values.shape[1]:
            raise InputError(f"{self.what} of split {split!r} were {rows.shape[1]} wide this epoch, not {values.shape[1]}")
        rows[positions] = values.astype(np.float16)
        self._logged[split][positions] = True
        if in_order:
            self._cursor[split] = int(positions[-1]) + 1 if len(positions) else self._cursor.get(split, 0)

    @property
    def what(self) -> str:
        """What the rows are, in messages."""
        return "embedding" if self.folder == EMBEDDINGS_DIR else "view"

    @property
    def logging(self) -> bool:
        """Whether any row was logged this epoch."""
        return bool(self._rows)

    def check_whole(self, epoch: int) -> None:
        """Every row of every split logged this epoch, or none of them.

        Parameters
        ----------
        epoch : int
            The epoch being ended.

        Raises
        ------
        InputError
            Where a split, or a row of one, was not logged.
        """
        if not self._rows:
            return
        for split, n in self.sizes.items():
            logged = self._logged.get(split)
            missing = n if logged is None else int((~logged).sum())
            if missing:
                raise InputError(
                    f"member {self.member}, epoch {epoch}: {missing} of {n} {self.what} rows of split {split!r} were never logged; "
                    f"log {self.what}s of every sample of every split, or of none"
                )

    def finish(self, epoch: int) -> None:
        """Project every split's rows and put `epoch-E/` in place (one rename).

        Parameters
        ----------
        epoch : int
            The epoch being ended.

        Raises
        ------
        InputError
            Where a split, or a row of one, was not logged.
        """
        if not self._rows:
            return
        self.check_whole(epoch)
        basis_split = "train" if "train" in self._rows else next(iter(self._rows))
        mean, axes = (None, None) if self.dims is None else principal_axes(self._rows[basis_split], self.dims, seed=self.member)
        final = _member_dir(self.run, self.member, self.folder) / f"epoch-{epoch}"
        staging = final.with_name(f".epoch-{epoch}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for split, rows in self._rows.items():
            projected = project(rows, mean, axes)
            with atomic_path(staging / f"{split}.npy") as tmp, open(tmp, "wb") as handle:
                np.save(handle, projected)
        if final.exists():  # left by a writer killed between this rename and its member file
            shutil.rmtree(final)
        os.replace(staging, final)
        self.drop()

    def drop(self) -> None:
        """Forget the rows of the open epoch, and any a killed writer left."""
        self._rows, self._logged, self._cursor = {}, {}, {}
        self.epoch = None
        folder = _member_dir(self.run, self.member, self.folder)
        if folder.is_dir():
            for leftover in folder.glob(".*"):
                shutil.rmtree(leftover, ignore_errors=True)


def check_embeddings(values: np.ndarray) -> None:
    """Rows of embeddings a run can keep, or one line saying why not.

    Parameters
    ----------
    values : ndarray
        (batch, width) embeddings.

    Raises
    ------
    InputError
        For another shape, a dtype that is not floating point, or a value that is not finite.
    """
    if values.ndim != 2 or values.shape[1] < 1:
        raise InputError(f"embeddings must be (batch, width), got shape {values.shape}")
    if values.dtype.kind != "f" or not np.isfinite(values).all():
        raise InputError("embeddings must be finite floating-point numbers")
    if values.size and np.abs(values).max() > FLOAT16_MAX:
        raise InputError(f"embeddings must lie within +-{FLOAT16_MAX:g} (they are kept as float16); scale them down")


def principal_axes(rows: np.ndarray, dims: int, seed: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The mean and the first `dims` principal axes of (up to `BASIS_ROWS` of) `rows`.

    Parameters
    ----------
    rows : ndarray, shape (samples, width)
        Embeddings.
    dims : int
        Axes wanted.
    seed : int
        Seeds the choice of rows.

    Returns
    -------
    tuple
        (mean (width,), axes (width, dims)) float32, or (None, None) where the rows are at
        most `dims` wide and are kept as they are.
    """
    if rows.shape[1] <= dims:
        return None, None
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(rows))[:BASIS_ROWS]
    sample = np.asarray(rows[np.sort(pick)], dtype=np.float32)
    mean = sample.mean(axis=0)
    centred = sample - mean
    # A randomized range finder (Halko et al. 2011) with three power iterations: the leading axes
    # of a 20,000 x 1,568 sample in a fraction of a second, where a full SVD takes seconds.
    basis = centred @ rng.standard_normal((centred.shape[1], min(2 * dims, centred.shape[1])), dtype=np.float32)
    for _ in range(3):
        basis, _ = np.linalg.qr(basis)
        basis = centred @ (centred.T @ basis)
    basis, _ = np.linalg.qr(basis)
    _, _, right = np.linalg.svd(basis.T @ centred, full_matrices=False)
    return mean, np.ascontiguousarray(right[:dims].T)


def project(rows: np.ndarray, mean: np.ndarray | None, axes: np.ndarray | None, block: int = 65_536) -> np.ndarray:
    """`rows` on the axes, float16, block by block.

    Parameters
    ----------
    rows : ndarray, shape (samples, width)
        Embeddings.
    mean, axes : ndarray or None
        From `principal_axes`; None keeps the rows.
    block : int
        Rows projected at a time.

    Returns
    -------
    ndarray of float16, shape (samples, dims)
        The projected rows.
    """
    if axes is None or mean is None:
        return np.asarray(rows, dtype=np.float16)
    out = np.empty((len(rows), axes.shape[1]), dtype=np.float16)
    for start in range(0, len(rows), block):
        out[start : start + block] = (np.asarray(rows[start : start + block], dtype=np.float32) - mean) @ axes
    return out


def embedding_epochs(run: Path, n_members: int, committed: list[int], splits: list[str], folder: str = EMBEDDINGS_DIR) -> list[int]:
    """The committed epochs whose embeddings every member kept for every split in `splits`.

    Parameters
    ----------
    run : Path
        The run directory.
    n_members : int
        M.
    committed : list of int
        The run's committed epochs.
    splits : list of str
        The splits that must be there.
    folder : str
        `EMBEDDINGS_DIR` or `VIEWS_DIR`.

    Returns
    -------
    list of int
        In order.
    """
    return [
        epoch
        for epoch in committed
        if all((_member_dir(run, m, folder) / f"epoch-{epoch}" / f"{split}.npy").is_file() for m in range(n_members) for split in splits)
    ]


def read_embeddings(run: Path, member: int, epoch: int, split: str, n_samples: int, folder: str = EMBEDDINGS_DIR) -> np.ndarray:
    """One member's embeddings of one split at one epoch, memory-mapped, checked.

    Parameters
    ----------
    run : Path
        The run directory.
    member, epoch : int
        Which.
    split : str
        Which split.
    n_samples : int
        The split's samples.
    folder : str
        `EMBEDDINGS_DIR` or `VIEWS_DIR`.

    Returns
    -------
    ndarray of float16, shape (samples, width)
        Read-only.

    Raises
    ------
    RunStoreError
        Where the file is damaged or has the wrong shape.
    """
    path = _member_dir(run, member, folder) / f"epoch-{epoch}" / f"{split}.npy"
    try:
        rows = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise RunStoreError(f"{path} is damaged ({error}); record the embeddings again") from None
    if rows.ndim != 2 or rows.shape[0] != n_samples or rows.dtype != np.float16:
        raise RunStoreError(f"{path} holds {rows.dtype} {rows.shape}, not ({n_samples}, dims) float16; record the embeddings again")
    return rows
