"""The confusion score: entropy of the ensemble-averaged prediction, averaged over epochs.

Paper (Albiero et al., after Simsek, Hall & Sagun 2022), for member i of M at epoch t with
class probabilities f_t^i(x) over C classes:

    p_t(x) = 1/M sum_i f_t^i(x)                  eq. 1, ensemble average
    s_t(x) = -sum_j p_t^j(x) log p_t^j(x)        eq. 2, entropy of the average
    s(x)   = 1/T sum_t s_t(x)                    eq. 3, average over epochs

Higher means harder. The score lies in [0, log C]: 0 when every member puts all its mass on
one and the same class at every epoch, log C when the average is uniform. Default unit bits.
It splits into the members' mean entropy ("expected entropy", aleatoric) plus their
disagreement (the mutual information between prediction and member, epistemic).

This module needs numpy and scipy only; labels are never used. Float16 and float32 input
take a fused numba kernel when numba is installed (same numbers to float32 rounding).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .errors import InputError


class InvalidProbabilities(InputError):
    """Values that are not probabilities (NaN, inf, negative, rows not summing to 1)."""


LN2 = math.log(2.0)

# How far a row may sum from 1 before we call it "not probabilities": float16 keeps ~3
# significant digits, so a softmax stored in it sums to 1 only within ~1e-3 * a few.
SUM_TOLERANCE = {np.dtype(np.float16): 1e-2, np.dtype(np.float32): 1e-3, np.dtype(np.float64): 1e-3}

# Bytes of float64 working memory per block in the numpy path; small enough to stay near
# the last-level cache, large enough that per-block overhead vanishes.
_BLOCK_BYTES = 32 * 2**20
_WHOLE_BLOCK = 2**16


@dataclass(frozen=True)
class Scores:
    """Per-sample confusion scores and their decomposition.

    Attributes
    ----------
    per_epoch : (epochs, samples) float64
        s_t(x), eq. 2, in `unit`, for the epochs used (in the order given).
    per_epoch_expected : (epochs, samples) float64
        mean_i H(f_t^i(x)): the members' mean entropy at each epoch, in `unit`.
    n_classes : int
        C, the number of classes.
    base : float
        Logarithm base: 2 (bits) or e (nats).
    members, epochs : tuple of int
        Indices (into the input's member and epoch axes) the scores were computed from.
    per_epoch_low, per_epoch_high : (epochs, samples) float64, or None
        Guaranteed bounds on s_t(x) when only top-k probabilities were kept (`confusion.topk`);
        `per_epoch` is then a point estimate inside them.
    """

    per_epoch: np.ndarray
    per_epoch_expected: np.ndarray
    n_classes: int
    base: float = 2.0
    members: tuple[int, ...] = field(default=())
    epochs: tuple[int, ...] = field(default=())
    per_epoch_low: np.ndarray | None = None
    per_epoch_high: np.ndarray | None = None

    @property
    def bounded(self) -> bool:
        """Whether these are top-k scores: a point estimate with guaranteed bounds."""
        return self.per_epoch_low is not None

    @property
    def confusion_low(self) -> np.ndarray:
        """A guaranteed lower bound on s(x) (top-k logs); s(x) itself when every probability was kept."""
        return self.per_epoch_low.mean(axis=0) if self.bounded else self.confusion

    @property
    def confusion_high(self) -> np.ndarray:
        """A guaranteed upper bound on s(x) (top-k logs); s(x) itself when every probability was kept."""
        return self.per_epoch_high.mean(axis=0) if self.bounded else self.confusion

    @property
    def unit(self) -> str:
        return "bits" if self.base == 2.0 else "nats"

    @property
    def max_score(self) -> float:
        """log C in `unit`: the score of a uniform average, the top of the range."""
        return math.log(self.n_classes) / math.log(self.base)

    @property
    def confusion(self) -> np.ndarray:
        """s(x), eq. 3: (samples,), in [0, log C] `unit`; higher = harder."""
        return self.per_epoch.mean(axis=0)

    @property
    def confusion_normalized(self) -> np.ndarray:
        """s(x) / log C: (samples,), in [0, 1], comparable across numbers of classes."""
        if self.n_classes == 1:
            return np.zeros(self.per_epoch.shape[1])
        return self.confusion / self.max_score

    @property
    def expected_entropy(self) -> np.ndarray:
        """Mean over epochs of the members' mean entropy: (samples,), in [0, log C] `unit`."""
        return self.per_epoch_expected.mean(axis=0)

    @property
    def disagreement(self) -> np.ndarray:
        """confusion - expected entropy: the members' mutual information, (samples,), >= 0."""
        # Concavity of entropy makes each epoch's difference >= 0; rounding can leave -1e-7.
        return np.maximum(self.confusion - self.expected_entropy, 0.0)

    def for_epochs(self, which: Sequence[int] | slice) -> "Scores":
        """The scores of a subset of the epochs used (positions into `self.epochs`), no re-read."""
        index = np.arange(len(self.epochs))[which] if isinstance(which, slice) else np.asarray(which)
        return Scores(
            per_epoch=self.per_epoch[index],
            per_epoch_expected=self.per_epoch_expected[index],
            n_classes=self.n_classes,
            base=self.base,
            members=self.members,
            epochs=tuple(self.epochs[i] for i in index),
            per_epoch_low=None if self.per_epoch_low is None else self.per_epoch_low[index],
            per_epoch_high=None if self.per_epoch_high is None else self.per_epoch_high[index],
        )

    def to_frame(self, sample_ids=None, labels=None, split: str | None = None):
        """One row per sample in sample order, with the columns of `confusion score`."""
        import pandas as pd

        n = self.per_epoch.shape[1]
        columns: dict[str, Any] = {"sample": np.arange(n) if sample_ids is None else np.asarray(sample_ids)}
        if split is not None:
            columns["split"] = np.full(n, split, dtype=object)
        columns["confusion"] = self.confusion
        columns["confusion_normalized"] = self.confusion_normalized
        columns["expected_entropy"] = self.expected_entropy
        columns["disagreement"] = self.disagreement
        if self.bounded:  # top-k logs: confusion is a point estimate inside guaranteed bounds
            columns["confusion_low"] = self.confusion_low
            columns["confusion_high"] = self.confusion_high
            columns["bound_width"] = self.confusion_high - self.confusion_low
        if labels is not None:
            columns["label"] = np.asarray(labels)
        columns["unit"] = self.unit  # of confusion, expected_entropy and disagreement: a reader checks it
        return pd.DataFrame(columns)


def entropy(probs: np.ndarray, *, base: float = 2.0, axis: int = -1) -> np.ndarray:
    """Shannon entropy of probability vectors along `axis`, with 0 log 0 = 0, in float64.

    Parameters
    ----------
    probs : array, any shape; the class axis is `axis`.
    base : 2 for bits, math.e for nats.

    Examples
    --------
    >>> float(entropy(np.array([0.5, 0.5])))
    1.0
    """
    from scipy.special import entr  # here, not at the top: every training process imports this module

    return entr(np.asarray(probs, dtype=np.float64)).sum(axis=axis) / math.log(base)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Probabilities from logits, in float64, stable for large logits."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


def check_base(base: float | str) -> float:
    """2 / "2" / "bits" -> 2.0; e / "e" / "nats" -> math.e; anything else is an InputError."""
    if isinstance(base, str):
        key = base.strip().lower()
        if key in ("2", "bits", "bit"):
            return 2.0
        if key in ("e", "nats", "nat"):
            return math.e
        raise InputError(f"base must be 2 (bits) or e (nats), got {base!r}")
    if base == 2:
        return 2.0
    if base == math.e:
        return math.e
    raise InputError(f"base must be 2 (bits) or e (nats), got {base!r}")


def as_four_d(shape: tuple[int, ...], name: str = "probs") -> tuple[int, int, int, int]:
    """The (members, epochs, samples, classes) shape an array is read as; 2-D is one model at one epoch."""
    if len(shape) == 2:
        shape = (1, 1, *shape)
    if len(shape) != 4:
        raise InputError(
            f"{name} must be 4-D (members, epochs, samples, classes) or 2-D (samples, classes); "
            f"got {len(shape)}-D with shape {tuple(shape)}"
        )
    if min(shape) == 0:
        raise InputError(f"{name} is empty: shape (members, epochs, samples, classes) = {tuple(shape)}")
    if shape[3] < 2:
        raise InputError(f"{name} has {shape[3]} class; confusion needs at least 2 (shape (members, epochs, samples, classes) = {tuple(shape)})")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def _indices(which, size: int, axis_name: str) -> np.ndarray:
    if which is None:
        return np.arange(size)
    if isinstance(which, slice):
        index = np.arange(size)[which]
    else:
        index = np.asarray(list(which) if not isinstance(which, np.ndarray) else which)
        if index.dtype.kind not in "iu":
            raise InputError(f"{axis_name} must be integer indices, got {index.dtype}")
        index = index.astype(np.intp).ravel()
        if ((index < -size) | (index >= size)).any():
            raise InputError(f"{axis_name} index out of range for {size} {axis_name}: {index.tolist()}")
        index = np.where(index < 0, index + size, index)
        if len(np.unique(index)) != len(index):
            raise InputError(f"{axis_name} indices repeat: {index.tolist()}")
    if len(index) == 0:
        raise InputError(f"no {axis_name} selected")
    return index


class _Reader:
    """Reads (members, epochs, sample-block, classes) blocks from an ndarray, memmap or zarr array.

    Only the bounding box of the chosen members and epochs is read; which of them enter the
    score is passed on as indices, so choosing a subset never copies the whole array. A
    C-contiguous 4-D numpy array is handed over whole with a sample range (no copy at all);
    a source with `map_slabs` (the run store's chunk files) is mapped, not copied, one chunk
    of samples at a time.
    """

    def __init__(self, array, members: np.ndarray, epochs: np.ndarray):
        self.array = array
        self.whole = isinstance(array, np.ndarray) and array.ndim == 4 and array.flags.c_contiguous
        self.mapped = hasattr(array, "map_slabs")
        if self.whole:
            self.m0 = self.e0 = 0
            self.m1, self.e1 = array.shape[0], array.shape[1]
        else:
            self.m0, self.m1 = int(members.min()), int(members.max()) + 1
            self.e0, self.e1 = int(epochs.min()), int(epochs.max()) + 1
        self.members = members - self.m0
        self.epochs = epochs - self.e0
        self.buffers: list[np.ndarray | None] = [None, None]
        self.turn = 1

    def __call__(self, start: int, stop: int, fresh: bool = False) -> tuple[np.ndarray, int, int]:
        """(C-contiguous block, first sample, last sample + 1) in the block's own sample axis.

        A source with `read_into` (the run store's chunk-file reader) fills one of two
        buffers in turn, so a block stays valid while the next one is read, and fresh
        memory is not page-faulted in for every block; `fresh` reads into new memory.
        """
        if self.whole:
            return self.array, start, stop
        if len(self.array.shape) == 2:
            block = np.asarray(self.array[start:stop])[None, None]
        elif hasattr(self.array, "read_into"):
            shape = (self.m1 - self.m0, self.e1 - self.e0, stop - start, self.array.shape[3])
            if fresh:
                return self.array.read_into(np.empty(shape, dtype=self.array.dtype), self.m0, self.e0, start), 0, stop - start
            self.turn = 1 - self.turn
            if self.buffers[self.turn] is None or self.buffers[self.turn].shape != shape:
                self.buffers[self.turn] = np.empty(shape, dtype=self.array.dtype)
            block = self.array.read_into(self.buffers[self.turn], self.m0, self.e0, start)
        else:
            block = np.asarray(self.array[self.m0 : self.m1, self.e0 : self.e1, start:stop])
        return np.ascontiguousarray(block), 0, stop - start

    def slabs(self, start: int, stop: int) -> tuple[np.ndarray, Any]:
        """(addresses of the chosen (member, epoch) slabs of samples [start, stop), the object
        that keeps their memory alive) for the numba kernel; `release` the latter after it."""
        from ._kernels import slab_addresses

        if self.mapped:
            return self.array.map_slabs(self.m0 + self.members, self.e0 + self.epochs, start, stop)
        block, first, _ = self(start, stop)
        return slab_addresses(block, self.members, self.epochs, first), block

    @staticmethod
    def release(keep: Any) -> None:
        if hasattr(keep, "close"):
            keep.close()


def _sample_chunk(array) -> int | None:
    chunks = getattr(array, "chunks", None)
    if chunks and len(chunks) == len(array.shape):
        return int(chunks[-2])
    return None


def _block_samples(reader: _Reader, n_classes: int, dtype: np.dtype, engine: str) -> int:
    """Samples per block. The kernel maps a store one chunk at a time and takes an array in
    memory as it is, in blocks of _WHOLE_BLOCK samples (only the per-epoch outputs take
    memory; larger blocks keep both cores busy); a copied block takes _BLOCK_BYTES (float64
    in the numpy path), whole chunks only, so a store is read once, chunk by chunk."""
    chunk = _sample_chunk(reader.array)
    if engine == "numba" and reader.mapped:
        return chunk
    if engine == "numba" and reader.whole:
        return _WHOLE_BLOCK
    itemsize = dtype.itemsize if engine == "numba" else max(dtype.itemsize, 8)
    per_sample = max(1, (reader.m1 - reader.m0) * (reader.e1 - reader.e0) * n_classes * itemsize)
    block = max(1, _BLOCK_BYTES // per_sample)
    if chunk:
        block = max(chunk, (block // chunk) * chunk)
    return block


def _engine(engine: str, dtype: np.dtype, logits: bool) -> str:
    if engine not in ("auto", "numpy", "numba"):
        raise InputError(f"engine must be auto, numpy or numba, got {engine!r}")
    fused_dtype = dtype in (np.dtype(np.float16), np.dtype(np.float32))
    if engine == "numpy" or logits or not fused_dtype:
        if engine == "numba" and (logits or not fused_dtype):
            raise InputError("the numba engine takes float16/float32 probabilities only")
        return "numpy"
    if engine == "auto" and os.environ.get("CONFUSION_ENGINE", "").lower() == "numpy":
        return "numpy"
    try:
        from . import _kernels  # noqa: F401
    except ImportError:
        if engine == "numba":
            raise InputError("the numba engine needs numba installed") from None
        return "numpy"
    return "numba"


def describe_invalid(
    block: np.ndarray,
    dtype: np.dtype,
    first_sample: int,
    logits: bool,
    members: Sequence[int] | None = None,
    epochs: Sequence[int] | None = None,
) -> str | None:
    """Name the first problem in a (members, epochs, samples, classes) block, or None.

    `members` / `epochs` give the numbers to report for the block's member and epoch rows.
    """

    def where(m, t, n) -> str:
        member = members[m] if members is not None else m
        epoch = epochs[t] if epochs is not None else t
        return f"member {member}, epoch {epoch}, sample {first_sample + n}"

    finite = np.isfinite(block)
    if not finite.all():
        m, t, n, c = np.argwhere(~finite)[0]
        return f"NaN or inf at {where(m, t, n)}, class {c}"
    if logits:
        return None
    if (block < 0).any():
        m, t, n, c = np.argwhere(block < 0)[0]
        return (
            f"negative probability {float(block[m, t, n, c]):.4g} at {where(m, t, n)}, class {c} "
            "(are these logits? pass --logits)"
        )
    sums = block.sum(axis=-1, dtype=np.float64)
    deviation = np.abs(sums - 1.0)
    tolerance = SUM_TOLERANCE.get(dtype, 1e-3)
    if (deviation > tolerance).any():
        m, t, n = np.argwhere(deviation > tolerance)[0]
        return (
            f"probabilities do not sum to 1 (sum {float(sums[m, t, n]):.6g} at {where(m, t, n)}; "
            f"tolerance {tolerance:g} for {dtype}); if these are logits, pass --logits"
        )
    return None


def confusion_scores(
    probs,
    *,
    base: float | str = 2.0,
    members: Sequence[int] | slice | None = None,
    epochs: Sequence[int] | slice | None = None,
    logits: bool = False,
    engine: str = "auto",
    progress: Callable[[int], None] | None = None,
    decomposition: bool = True,
) -> Scores:
    """Confusion scores (eqs. 1-3) of every sample, streamed over blocks of samples.

    Parameters
    ----------
    probs : array-like, shape (members, epochs, samples, classes), or (samples, classes)
        Class probabilities (or logits with ``logits=True``) of every member at every epoch.
        A numpy array, a memory map or a zarr array; float16, float32 or float64. Only a
        block of samples is held in memory at a time.
    base : 2 (bits, the default) or e (nats).
    members, epochs : indices or slice, optional
        Which members and epochs enter eqs. 1 and 3; all by default.
    logits : bool
        Apply a softmax over classes first.
    engine : "auto", "numpy" or "numba"
        The fused numba kernel (float16/float32 probabilities) or the plain float64 numpy path.
    progress : callable, optional
        Called with the number of samples finished after each block.
    decomposition : bool
        Also compute the members' own entropies (expected entropy, disagreement). False takes
        one log per class of the ensemble average only, when just ``confusion`` is wanted
        (hard sets, bands, transfer); expected entropy and disagreement are then NaN.

    Returns
    -------
    Scores
        ``.confusion`` (samples,) in [0, log C], higher = harder, plus the normalised score,
        expected entropy, disagreement and the per-epoch entropies.

    Raises
    ------
    InputError
        Wrong number of dimensions, an empty array, NaN/inf, negative values, or rows that
        do not sum to 1 within SUM_TOLERANCE for their dtype (when not ``logits``).

    Examples
    --------
    Two members that disagree completely on two classes are maximally confused:

    >>> p = np.array([[[[1.0, 0.0]]], [[[0.0, 1.0]]]])    # (2 members, 1 epoch, 1 sample, 2 classes)
    >>> float(confusion_scores(p).confusion[0])
    1.0
    """
    base = check_base(base)
    n_members, n_epochs, n_samples, n_classes = as_four_d(tuple(probs.shape))
    dtype = np.dtype(probs.dtype)
    if dtype.kind not in "fiu":
        raise InputError(f"probs must hold numbers, got dtype {dtype}")
    member_index = _indices(members, n_members, "members")
    epoch_index = _indices(epochs, n_epochs, "epochs")
    reader = _Reader(probs, member_index, epoch_index)
    engine = _engine(engine, dtype, logits)
    block = _block_samples(reader, n_classes, dtype, engine)

    per_epoch = np.empty((len(epoch_index), n_samples), dtype=np.float64)
    per_epoch_expected = np.empty_like(per_epoch)
    kernel = None
    if engine == "numba":
        from ._kernels import slab_entropies

        kernel = slab_entropies
    starts = range(0, n_samples, block)
    with ThreadPoolExecutor(max_workers=1) as prefetch:
        # Read (or map) block k+1 while block k is scored; the kernel drops the GIL.
        read = reader.slabs if kernel is not None else reader
        pending = prefetch.submit(read, 0, min(block, n_samples))
        for start in starts:
            stop = min(start + block, n_samples)
            got = pending.result()
            if stop < n_samples:
                pending = prefetch.submit(read, stop, min(stop + block, n_samples))
            if kernel is not None:
                addresses, keep = got
                try:
                    invalid, max_deviation = kernel(
                        addresses, dtype, n_classes, stop - start, per_epoch, per_epoch_expected, decomposition, out_start=start
                    )
                finally:
                    reader.release(keep)
                if invalid or max_deviation > SUM_TOLERANCE[dtype]:
                    # Rare path: find and name the offending value with the plain checks.
                    data, first, last = reader(start, stop, fresh=True)
                    selected = data[:, :, first:last][reader.members][:, reader.epochs].astype(np.float64)
                    problem = describe_invalid(selected, dtype, start, logits, member_index, epoch_index)
                    raise InvalidProbabilities(problem or "probs are not valid probabilities")
            else:
                data, first, last = got
                selected = data[:, :, first:last][reader.members][:, reader.epochs].astype(np.float64, copy=False)
                problem = describe_invalid(selected, dtype, start, logits, member_index, epoch_index)
                if problem:
                    raise InvalidProbabilities(problem)
                if logits:
                    selected = softmax(selected)
                # eq. 1 then eq. 2, in nats; and each member's own entropy for the decomposition.
                per_epoch[:, start:stop] = entropy(selected.mean(axis=0), base=math.e)
                per_epoch_expected[:, start:stop] = entropy(selected, base=math.e).mean(axis=0) if decomposition else np.nan
            if progress is not None:
                progress(stop - start)

    if base == 2.0:
        per_epoch /= LN2
        per_epoch_expected /= LN2
    return Scores(
        per_epoch=per_epoch,
        per_epoch_expected=per_epoch_expected,
        n_classes=n_classes,
        base=base,
        members=tuple(int(i) for i in member_index),
        epochs=tuple(int(i) for i in epoch_index),
    )


def confusion_score(probs, *, base: float | str = 2.0, **kwargs) -> np.ndarray:
    """s(x), eq. 3, for every sample: (samples,) float64 in [0, log C], higher = harder.

    Same arguments as `confusion_scores`; this returns only the score.

    >>> confusion_score(np.full((3, 2, 4, 8), 1 / 8))    # uniform over 8 classes: log2 8
    array([3., 3., 3., 3.])
    """
    return confusion_scores(probs, base=base, **kwargs).confusion
