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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._blocks import Reader, block_samples, indices
from .errors import InputError

__all__ = [
    "LN2",
    "SUM_TOLERANCE",
    "InvalidProbabilities",
    "Scores",
    "as_four_d",
    "check_base",
    "confusion_score",
    "confusion_scores",
    "describe_invalid",
    "entropy",
    "softmax",
]


class InvalidProbabilities(InputError):
    """Values that are not probabilities (NaN, inf, negative, rows not summing to 1)."""


LN2 = math.log(2.0)

# How far a row may sum from 1 before we call it "not probabilities": float16 keeps ~3
# significant digits, so a softmax stored in it sums to 1 only within ~1e-3 * a few.
SUM_TOLERANCE = {np.dtype(np.float16): 1e-2, np.dtype(np.float32): 1e-3, np.dtype(np.float64): 1e-3}


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
    training_epochs : tuple of int
        The 1-based training epoch of each of `epochs`, when the scores come from a run store
        (`confusion.runscores.score_run`); empty for bare arrays.
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
    training_epochs: tuple[int, ...] = field(default=())

    @property
    def bounded(self) -> bool:
        """Whether these are top-k scores: a point estimate with guaranteed bounds."""
        return self.per_epoch_low is not None

    @property
    def confusion_low(self) -> np.ndarray:
        """A guaranteed lower bound on s(x) (top-k logs); s(x) itself when every probability was kept."""
        return self.per_epoch_low.mean(axis=0) if self.per_epoch_low is not None else self.confusion

    @property
    def confusion_high(self) -> np.ndarray:
        """A guaranteed upper bound on s(x) (top-k logs); s(x) itself when every probability was kept."""
        return self.per_epoch_high.mean(axis=0) if self.per_epoch_high is not None else self.confusion

    @property
    def unit(self) -> str:
        """ "bits" for base 2, "nats" for base e: the unit of every score here."""
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

    def for_epochs(self, which: Sequence[int] | slice) -> Scores:
        """The scores of a subset of the epochs used, without reading anything again.

        Parameters
        ----------
        which : sequence of int or slice
            Positions into `self.epochs`.

        Returns
        -------
        Scores
            The same samples, members and unit, from those epochs only.
        """
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
            training_epochs=tuple(self.training_epochs[i] for i in index) if self.training_epochs else (),
        )

    def to_frame(self, sample_ids=None, labels=None, split: str | None = None):
        """One row per sample in sample order, with the columns of `confusion score`.

        Parameters
        ----------
        sample_ids : array-like of str, optional
            The sample column; default the sample positions.
        labels : array-like of int, optional
            A label column (-1 = unknown), when given.
        split : str, optional
            A split column, when given.

        Returns
        -------
        pandas.DataFrame
            sample, (split,) confusion, confusion_normalized, expected_entropy, disagreement, (the
            bounds of top-k logs,) (label,) unit.
        """
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
    probs : array-like
        Probabilities, any shape; the class axis is `axis`.
    base : float
        2 for bits, math.e for nats.
    axis : int
        The class axis.

    Returns
    -------
    ndarray of float64
        `probs`' shape without `axis`, in [0, log C] of the base.

    Examples
    --------
    >>> float(entropy(np.array([0.5, 0.5])))
    1.0
    """
    from scipy.special import entr  # here, not at the top: every training process imports this module

    return entr(np.asarray(probs, dtype=np.float64)).sum(axis=axis) / math.log(base)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Probabilities from logits, in float64, stable for large logits.

    Parameters
    ----------
    logits : array-like
        Logits, any shape; the class axis is `axis`.
    axis : int
        The class axis.

    Returns
    -------
    ndarray of float64
        Probabilities that sum to 1 along `axis`.
    """
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


def check_base(base: float | str) -> float:
    """The logarithm base of a score, checked.

    Parameters
    ----------
    base : float or str
        2, "2", "bits" or e, "e", "nats".

    Returns
    -------
    float
        2.0 or math.e.

    Raises
    ------
    InputError
        For anything else.
    """
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
    """The (members, epochs, samples, classes) shape an array is read as; 2-D is one model at one epoch.

    Parameters
    ----------
    shape : tuple of int
        The array's shape.
    name : str
        What to call the array in an error.

    Returns
    -------
    tuple of int
        (members, epochs, samples, classes).

    Raises
    ------
    InputError
        For another number of dimensions, an empty array, or fewer than 2 classes.
    """
    if len(shape) == 2:
        shape = (1, 1, *shape)
    if len(shape) != 4:
        raise InputError(
            f"{name} must be 4-D (members, epochs, samples, classes) or 2-D (samples, classes); got {len(shape)}-D with shape {tuple(shape)}"
        )
    if min(shape) == 0:
        raise InputError(f"{name} is empty: shape (members, epochs, samples, classes) = {tuple(shape)}")
    if shape[3] < 2:
        raise InputError(f"{name} has {shape[3]} class; confusion needs at least 2 (shape (members, epochs, samples, classes) = {tuple(shape)})")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


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
    members: Sequence[int] | np.ndarray | None = None,
    epochs: Sequence[int] | np.ndarray | None = None,
    samples: Sequence[int] | np.ndarray | None = None,
) -> str | None:
    """Name the first problem in a block of probabilities, or None.

    Parameters
    ----------
    block : ndarray, shape (members, epochs, samples, classes)
        The block.
    dtype : numpy.dtype
        The stored dtype (its tolerance on row sums, `SUM_TOLERANCE`).
    first_sample : int
        The position of the block's first sample, for the message.
    logits : bool
        Whether the values are logits (only NaN and inf are problems then).
    members, epochs : sequence of int, optional
        The numbers to report for the block's member and epoch rows.
    samples : sequence of int, optional
        The number to report for each of the block's samples (rows logged by index); default
        `first_sample` onwards.

    Returns
    -------
    str or None
        One line naming the member, epoch, sample and class, or None when the block is valid.
    """

    def _where(m: int, t: int, n: int) -> str:
        member = members[m] if members is not None else m
        epoch = epochs[t] if epochs is not None else t
        return f"member {member}, epoch {epoch}, sample {samples[n] if samples is not None else first_sample + n}"

    if logits:  # -inf is a masked class (probability 0); NaN and +inf are not logits
        bad = np.isnan(block) | (block == np.inf)
        if bad.any():
            m, t, n, c = np.argwhere(bad)[0]
            return f"NaN or +inf logit at {_where(m, t, n)}, class {c}"
        masked = (block == -np.inf).all(axis=-1)
        if masked.any():
            m, t, n = np.argwhere(masked)[0]
            return f"every class's logit is -inf at {_where(m, t, n)}"
        tolerance = SUM_TOLERANCE.get(dtype, 1e-3)
        if block.size and ((block >= 0) & (block <= 1)).all() and (np.abs(block.sum(axis=-1, dtype=np.float64) - 1.0) <= tolerance).all():
            return "these are probabilities already (every row lies in [0, 1] and sums to 1), not logits; drop --logits"
        return None
    finite = np.isfinite(block)
    if not finite.all():
        m, t, n, c = np.argwhere(~finite)[0]
        return f"NaN or inf at {_where(m, t, n)}, class {c}"
    if (block < 0).any():
        m, t, n, c = np.argwhere(block < 0)[0]
        return f"negative probability {float(block[m, t, n, c]):.4g} at {_where(m, t, n)}, class {c} (are these logits? pass --logits)"
    sums = block.sum(axis=-1, dtype=np.float64)
    deviation = np.abs(sums - 1.0)
    tolerance = SUM_TOLERANCE.get(dtype, 1e-3)
    if (deviation > tolerance).any():
        m, t, n = np.argwhere(deviation > tolerance)[0]
        return (
            f"probabilities do not sum to 1 (sum {float(sums[m, t, n]):.6g} at {_where(m, t, n)}; "
            f"tolerance {tolerance:g} for {dtype}); if these are logits, pass --logits"
        )
    return None


def confusion_scores(
    probs,
    *,
    base: float | str = 2.0,
    members: Sequence[int] | np.ndarray | slice | None = None,
    epochs: Sequence[int] | np.ndarray | slice | None = None,
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
    member_index = indices(members, n_members, "members")
    epoch_index = indices(epochs, n_epochs, "epochs")
    reader = Reader(probs, member_index, epoch_index)
    engine = _engine(engine, dtype, logits)
    block = block_samples(reader, n_classes, dtype, engine)

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
            got: Any = pending.result()  # (addresses, mappings) for the kernel, (block, first, last) otherwise
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

    Parameters
    ----------
    probs : array-like, shape (members, epochs, samples, classes), or (samples, classes)
        Class probabilities, as for `confusion_scores`.
    base : float or str
        2 (bits, the default) or e (nats).
    **kwargs
        Any other argument of `confusion_scores`.

    Returns
    -------
    ndarray of float64, shape (samples,)
        The score.

    Examples
    --------
    >>> confusion_score(np.full((3, 2, 4, 8), 1 / 8))    # uniform over 8 classes: log2 8
    array([3., 3., 3., 3.])
    """
    return confusion_scores(probs, base=base, **kwargs).confusion
