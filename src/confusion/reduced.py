"""The reduced record: what every analysis reads of a run, a few numbers per prediction instead of C.

At ImageNet size the raw probabilities (members x epochs x samples x C float16) dwarf
everything, yet every number the toolkit reports needs only these, per split:

Per (member i, epoch slot t, sample x), arrays shaped (members, slots, samples):

    member_entropy   float32  H(f_t^i(x)) in nats: one member's eq. 2 (expected entropy,
                              the one-seed ablation, single-model baselines)
    member_argmax    uint16   arg-max class of f_t^i(x) (int32 when C > 65,535): member
                              errors, forgetting events
    member_label     float16  the probability of the labelled class, as stored raw (NaN where
                              the label is unknown): Dataset Cartography, margin, EL2N
    member_other     float16  the largest probability of any other class (of any class where the
                              label is unknown): the margin's "largest other"; the top
                              probability (MSP baselines) is the larger of the two
    member_sumsq     float32  sum_j f_t^i(x)_j^2, so EL2N = sqrt(sumsq - 2 f_y + 1)

Per (epoch slot t, sample x), arrays shaped (slots, samples):

    ensemble_entropy float32  s_t(x) = H(p_t(x)) in nats, eqs. 1-2 (confusion, eq. 3)
    ensemble_argmax  uint16   arg-max of p_t(x) (hard sets per class, flips, accuracy)
    ensemble_top1    float32  max_j p_t(x)_j (ensemble MSP)

That is 14 + 10/M bytes per (member, epoch, sample) against 2C raw: 115x smaller at C = 1,000
and M = 3. The ensemble average p_t is summed in float64 from the stored float16 values (an
exact sum), so its arg-max is the same whoever computes it; the entropies take the float32
operations of raw scoring's kernel, so a reduced run's scores equal the raw run's to float32
rounding: within 3e-7 x log2 C bits, 1e-6 at 10 classes and 3e-6 at 1,000 (tests/test_reduced.py).

What it cannot give (refused on a reduced run with one line): scores of a subset of members
other than all or one (e.g. 2 of 3 seeds), and any class probability beyond the ones above
(`final_probs`, evaluating a run's stored predictions, exporting probabilities).

The record of an epoch is written when the epoch is committed, by whichever process commits it
(under the store's commit lock, before run.json lists the epoch), from the raw predictions
every member wrote; then the raw chunk files of that epoch are deleted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError, ParameterError, RunStoreError

__all__ = [
    "BLOCK_BYTES",
    "CHUNK_SAMPLES",
    "ENSEMBLE_FIELDS",
    "FIELDS",
    "KEEP",
    "MEMBER_FIELDS",
    "FinalPredictions",
    "argmax_dtype",
    "small_saving",
    "as_final",
    "bytes_per_prediction",
    "check_keep",
    "check_record",
    "chunk_size",
    "create_arrays",
    "read",
    "read_array",
    "reduce_slot",
    "resize",
    "summarize",
]

KEEP = ("raw", "reduced")
MEMBER_FIELDS = ("member_entropy", "member_argmax", "member_label", "member_other", "member_sumsq")
ENSEMBLE_FIELDS = ("ensemble_entropy", "ensemble_argmax", "ensemble_top1")
FIELDS = MEMBER_FIELDS + ENSEMBLE_FIELDS
CHUNK_SAMPLES = 2**16  # samples per chunk file of the reduced arrays
BLOCK_BYTES = 64 * 2**20  # float32 working set while reducing


def check_keep(keep: str) -> str:
    if keep not in KEEP:
        raise ParameterError(f"{{keep}} must be raw or reduced, got {keep!r}", "keep")
    return keep


def small_saving(n_classes: int, members: int) -> str | None:
    """A note where a reduced record saves little over raw probabilities (few classes), else None.

    Per member, epoch and sample the record keeps 14 + 10/M bytes against 2 C raw (float16), and
    its eight arrays carry more fixed overhead than raw's one: at C = 10 and M = 3 it is 17.3
    against 20 bytes, and a run of 2,000 samples x 5 epochs takes 1.07 MB reduced against 0.77 MB
    raw (measured).
    """
    kept = 14 + 10 / max(1, members)
    raw = 2 * n_classes
    if kept <= 0.5 * raw:
        return None
    return (
        f"--keep reduced saves little at {n_classes} classes: {kept:.1f} bytes per member, epoch and sample against "
        f"{raw} raw, and a small run's fixed overhead can make it larger; it halves the store from about {int(np.ceil(kept))} classes up"
    )


def argmax_dtype(n_classes: int) -> np.dtype:
    return np.dtype(np.uint16 if n_classes <= np.iinfo(np.uint16).max else np.int32)


def _dtypes(n_classes: int) -> dict[str, np.dtype]:
    index = argmax_dtype(n_classes)
    return {
        "member_entropy": np.dtype(np.float32),
        "member_argmax": index,
        "member_label": np.dtype(np.float16),
        "member_other": np.dtype(np.float16),
        "member_sumsq": np.dtype(np.float32),
        "ensemble_entropy": np.dtype(np.float32),
        "ensemble_argmax": index,
        "ensemble_top1": np.dtype(np.float32),
    }


def bytes_per_prediction(n_members: int, n_classes: int) -> float:
    """Bytes the reduced record keeps per (member, epoch, sample); raw keeps 2 C."""
    sizes = _dtypes(n_classes)
    return sum(sizes[f].itemsize for f in MEMBER_FIELDS) + sum(sizes[f].itemsize for f in ENSEMBLE_FIELDS) / n_members


def chunk_size(n_samples: int) -> int:
    """Samples per chunk: at most CHUNK_SAMPLES, in chunks of equal size (zarr stores an edge chunk
    whole, so 100,000 samples in chunks of 65,536 would take 31% more room than in two of 50,000)."""
    return -(-n_samples // -(-n_samples // CHUNK_SAMPLES))


def create_arrays(group, n_members: int, n_slots: int, n_samples: int, n_classes: int) -> None:
    """The reduced arrays of one split (zarr group); a missing chunk reads as NaN / an impossible class."""
    chunk = chunk_size(n_samples)
    for name, dtype in _dtypes(n_classes).items():
        member = name in MEMBER_FIELDS
        group.create_array(
            name,
            shape=(n_members, n_slots, n_samples) if member else (n_slots, n_samples),
            chunks=(1, 1, chunk) if member else (1, chunk),
            dtype=dtype,
            fill_value=np.iinfo(dtype).max if dtype.kind in "iu" else np.nan,
            compressors=None,
            dimension_names=("member", "epoch", "sample") if member else ("epoch", "sample"),
        )


def resize(group, n_slots: int) -> None:
    for name in FIELDS:
        array = group[name]
        if name in MEMBER_FIELDS:
            array.resize((array.shape[0], n_slots, array.shape[2]))
        else:
            array.resize((n_slots, array.shape[1]))


# --------------------------------------------------------------------------- computing the record
def summarize(probs: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The record of a block (members, epochs, samples, classes) of probabilities: member fields
    (members, epochs, samples), ensemble fields (epochs, samples); entropies in nats.

    One pass of a numba kernel (`_kernels.reduce_epoch`) per epoch. The entropies take the same
    float32 operations as raw scoring's kernel; the ensemble's arg-max and top probability sum
    the members in float64 (exact for float16 inputs), so they do not depend on who computes them.
    Raises InvalidProbabilities on NaN, negative values or rows that do not sum to 1.
    """
    from ._kernels import reduce_epoch
    from .scores import SUM_TOLERANCE, InvalidProbabilities

    probs = np.asarray(probs)
    if probs.dtype not in (np.float16, np.float32):
        probs = probs.astype(np.float32)
    n_members, n_epochs, n_samples, n_classes = probs.shape
    dtypes = _dtypes(n_classes)
    kinds = {name: np.float32 if dtypes[name].kind == "f" else np.int64 for name in FIELDS}
    out = {name: np.empty(((n_members,) if name in MEMBER_FIELDS else ()) + (n_epochs, n_samples), dtype=kinds[name]) for name in FIELDS}
    for t in range(n_epochs):  # the kernel fills contiguous (members, samples) / (samples,) arrays
        epoch = {name: np.empty(((n_members,) if name in MEMBER_FIELDS else ()) + (n_samples,), dtype=kinds[name]) for name in FIELDS}
        invalid, deviation = reduce_epoch(probs[:, t], labels, epoch)
        if invalid or deviation > SUM_TOLERANCE[probs.dtype]:
            raise InvalidProbabilities(f"predictions of epoch slot {t} are not probabilities (NaN, negative, or rows off 1 by {deviation:.3g})")
        for name, value in epoch.items():
            out[name][..., t, :] = value
    return out


def reduce_slot(group, reader, slot: int, labels: np.ndarray, n_classes: int) -> None:
    """Write the reduced record of epoch slot `slot` of one split from its raw predictions.

    reader: the raw (members, slots, samples, classes) array (read block by block, bounded
    memory); group: the split's zarr group holding the reduced arrays.
    """
    n_members, _, n_samples, _ = reader.shape
    chunk = group["ensemble_entropy"].chunks[-1]  # whole chunks: each is written once
    block = max(1, min(chunk, BLOCK_BYTES // (2 * n_members * n_classes)))
    dtypes = _dtypes(n_classes)
    for first in range(0, n_samples, chunk):
        last = min(n_samples, first + chunk)
        out = {name: np.empty(((n_members,) if name in MEMBER_FIELDS else ()) + (last - first,), dtype=dtypes[name]) for name in FIELDS}
        for start in range(first, last, block):
            stop = min(last, start + block)
            probs = np.asarray(reader[slice(None), slice(slot, slot + 1), slice(start, stop)])
            for name, value in summarize(probs, labels[start:stop]).items():
                out[name][..., start - first : stop - first] = value[:, 0] if name in MEMBER_FIELDS else value[0]
        for name, value in out.items():
            if name in MEMBER_FIELDS:
                group[name][:, slot, first:last] = value
            else:
                group[name][slot, first:last] = value


# --------------------------------------------------------------------------- reading it
def read(group, name: str, slots: np.ndarray, start: int, stop: int, members=None, *, where: str) -> np.ndarray:
    """Rows `start:stop` of field `name` of a split's group at epoch slots `slots` (and `members`)."""
    try:
        array = group[name]
    except Exception as error:
        raise RunStoreError(f"{where}: the reduced record {name} is damaged ({type(error).__name__})") from None
    return read_array(array, name, slots, start, stop, members, where=where)


def read_array(array, name: str, slots: np.ndarray, start: int, stop: int, members=None, *, where: str) -> np.ndarray:
    """Rows `start:stop` of reduced array `name` at epoch slots `slots` (and `members`), checked for damage."""
    slots = np.asarray(slots, dtype=np.intp)
    try:
        if not len(slots):
            shape = ((array.shape[0] if members is None else len(members)),) if name in MEMBER_FIELDS else ()
            return np.empty(shape + (0, stop - start), dtype=array.dtype)
        low, high = int(slots.min()), int(slots.max()) + 1
        if name in MEMBER_FIELDS:
            values = array[:, low:high, start:stop][:, slots - low]
            if members is not None:
                values = values[np.asarray(members, dtype=np.intp)]
        else:
            values = array[low:high, start:stop][slots - low]
    except Exception as error:
        raise RunStoreError(f"{where}: the reduced record {name} is damaged ({type(error).__name__})") from None
    damaged = (
        np.isnan(values).any()
        if name in ("member_entropy", "ensemble_entropy", "member_other", "member_sumsq", "ensemble_top1")
        else ((values == np.iinfo(values.dtype).max).any() if values.dtype.kind in "iu" else False)
    )
    if damaged:
        raise RunStoreError(f"{where}: the reduced record {name} of a committed epoch is missing (its chunk files are damaged)")
    return values


def check_record(record: dict[str, np.ndarray], n_classes: int, *, where: str, all_members: bool = True, labels: np.ndarray | None = None) -> None:
    """Refuse a block of the reduced record no probabilities could give: a chunk zero-filled or
    overwritten after it was committed (the raw store's row sums catch the same damage there).

    Every value must lie in its range (entropies in [0, ln C], probabilities in [0, 1], top
    probabilities and sums of squares in [1/C, 1], classes below C), and the fields must agree
    where the maths ties them: a distribution's Shannon entropy is at least its collision
    entropy, -ln sum p^2, and at least its min-entropy, -ln max p; the entropy of the members'
    average is at least their mean entropy (eq. 2's concavity). A zero-filled entropy chunk
    breaks the first two unless every prediction it holds is one-hot (where 0 is the truth).

    Parameters
    ----------
    record : dict of str to ndarray
        Fields of one block: member fields (members, epochs, samples), ensemble fields (epochs,
        samples); any subset of `FIELDS`.
    n_classes : int
        C.
    where : str
        The run and split, for the message.
    all_members : bool
        Whether the member fields hold every member (the concavity tie needs all of them).
    labels : ndarray of int, shape (samples,), optional
        The block's labels (-1 unknown): a member's arg-max is its labelled class exactly where
        that class's probability is the largest.

    Raises
    ------
    RunStoreError
        Naming the first field that breaks a rule.
    """
    # Rows are probabilities within the float16 tolerance (they may sum to 1 +- 1e-2), and the
    # record holds float32 values of float16 inputs: every bound allows for both.
    top, floor, sums, slack = math.log(n_classes), 1.0 / n_classes, 1e-2, 1e-3
    ranges = {
        "member_entropy": (-2 * sums - slack, (1 + sums) * top + slack),  # -p ln p < 0 where p rounds above 1
        "ensemble_entropy": (-2 * sums - slack, (1 + sums) * top + slack),
        "member_sumsq": ((1 - 2 * sums) * floor - slack, (1 + sums) ** 2 + slack),
        "ensemble_top1": ((1 - 2 * sums) * floor - slack, 1 + sums + slack),
        "member_label": (-slack, 1 + sums),
        "member_other": (-slack, 1 + sums),
        "member_argmax": (0, n_classes - 1),
        "ensemble_argmax": (0, n_classes - 1),
    }
    values = {name: record[name].astype(np.float64) for name in ranges if name in record}
    for name, (low, high) in ranges.items():
        if name in values:
            known = values[name][~np.isnan(values[name])] if name == "member_label" else values[name]
            if not (np.isfinite(known).all() and (known >= low).all() and (known <= high).all()):
                _refuse(name, where)

    def at_least(entropy: np.ndarray, bound: np.ndarray) -> bool:
        return bool((entropy >= bound - 3 * sums * (1 + entropy) - slack).all())

    for entropy, other in (("member_entropy", "member_sumsq"), ("ensemble_entropy", "ensemble_top1")):
        if entropy in values and other in values:
            # Shannon entropy >= collision entropy -ln sum p^2 >= min-entropy -ln max p
            if not at_least(values[entropy], -np.log(np.maximum(values[other], floor / 2))):
                _refuse(entropy if values[entropy].min() == 0 else other, where)
    if "member_label" in values and "member_other" in values:
        best = np.fmax(values["member_label"], values["member_other"])
        if (best < (1 - 2 * sums) * floor - slack).any():  # the top probability of a distribution is at least 1/C
            _refuse("member_other", where)
    if labels is not None and {"member_argmax", "member_label", "member_other"} <= values.keys():
        known = labels >= 0
        label, other = values["member_label"][..., known], values["member_other"][..., known]
        right = values["member_argmax"][..., known] == labels[known]
        if (right & (label < other - slack)).any() or (~right & (other < label - slack)).any():
            _refuse("member_argmax", where)
    if all_members and "ensemble_entropy" in values and "member_entropy" in values:
        if not at_least(values["ensemble_entropy"], values["member_entropy"].mean(axis=0)):
            _refuse("ensemble_entropy", where)


def _refuse(name: str, where: str) -> None:
    raise RunStoreError(f"{where}: the reduced record {name} of a committed epoch is damaged (it holds values no probabilities give)")


@dataclass(frozen=True)
class FinalPredictions:
    """What the analyses use of the last committed epoch: each member's arg-max, entropy (bits)
    and top probability, and the ensemble average's arg-max and top probability. From raw
    probabilities (`from_probs`) or from the reduced record; the same numbers either way (the
    top probability to float32 rounding; None from top-k logs)."""

    argmax: np.ndarray  # (members, samples)
    entropy: np.ndarray  # (members, samples), bits
    top1: np.ndarray  # (members, samples)
    ensemble_argmax: np.ndarray  # (samples,)
    ensemble_top1: np.ndarray | None = None  # (samples,)

    @classmethod
    def from_probs(cls, probs) -> FinalPredictions:
        """From (members, samples, classes) probabilities."""
        from .scores import entropy

        probs = np.asarray(probs)
        if probs.ndim != 3:
            raise InputError(f"final predictions must be (members, samples, classes), got shape {probs.shape}")
        average = probs.sum(axis=0, dtype=np.float64) / probs.shape[0]
        return cls(
            argmax=probs.argmax(axis=-1),
            entropy=entropy(probs),
            top1=probs.max(axis=-1).astype(np.float64),
            ensemble_argmax=average.argmax(axis=-1),
            ensemble_top1=average.max(axis=-1),
        )

    @property
    def n_members(self) -> int:
        return self.argmax.shape[0]

    @property
    def n_samples(self) -> int:
        return self.argmax.shape[1]

    def samples(self, index) -> FinalPredictions:
        """The same predictions for a subset of the samples (an index or a boolean mask)."""
        top = None if self.ensemble_top1 is None else self.ensemble_top1[index]
        return FinalPredictions(self.argmax[:, index], self.entropy[:, index], self.top1[:, index], self.ensemble_argmax[index], top)


def as_final(final) -> FinalPredictions:
    """FinalPredictions from itself or from (members, samples, classes) probabilities."""
    return final if isinstance(final, FinalPredictions) else FinalPredictions.from_probs(final)
