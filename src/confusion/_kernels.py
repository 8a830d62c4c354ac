"""Fused numba kernel for eqs. 1-2 and the members' entropies, one pass over the input.

Why a kernel: on a 2-core CPU the plain numpy path spends its time converting float16 and
in a slow vector log; here each value is decoded, summed into the ensemble average and
turned into its member-entropy term while it is in a register, and the log is a short
polynomial that LLVM vectorises (relative error ~1e-7, well inside float16 storage error).
Importing this module raises ImportError when numba is missing; `scores` then uses numpy.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic, overload

# No 'nnan'/'ninf': the validity checks below must see NaN and inf for what they are.
_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}
_I = np.int32
_F = np.float32


@intrinsic
def _bits_to_f32(typingctx, value):
    signature = types.float32(types.int32)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return signature, codegen


@intrinsic
def _f32_to_bits(typingctx, value):
    signature = types.int32(types.float32)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(types.int32))

    return signature, codegen


def _decode(value):  # pragma: no cover - replaced by the overloads below
    raise NotImplementedError


def _invalid(value):  # pragma: no cover - replaced by the overloads below
    raise NotImplementedError


@overload(_decode, inline="always", fastmath=_FAST)
def _decode_overload(value):
    if value == types.uint16:
        # float16 bits -> float32: move exponent and mantissa into place, then rescale by
        # 2**112 (exact for normal and subnormal halves). The sign is checked by _invalid.
        def decode_half(value):
            return _bits_to_f32(_I(_I(_I(value) & _I(0x7FFF)) << _I(13))) * _F(5.192296858534828e33)

        return decode_half
    if value == types.float32:
        return lambda value: value
    return None


@overload(_invalid, inline="always")
def _invalid_overload(value):
    # 1 for a negative value (sign bit set on a non-zero) or NaN/inf (exponent all ones).
    if value == types.uint16:

        def invalid_half(value):
            bits = _I(value)
            negative = bits > _I(0x8000)  # 0x8000 itself is -0.0, which is fine
            nonfinite = (bits & _I(0x7C00)) == _I(0x7C00)
            return _I(negative) | _I(nonfinite)

        return invalid_half
    if value == types.float32:

        def invalid_single(value):
            bits = _f32_to_bits(value)
            negative = (bits < _I(0)) & ((bits & _I(0x7FFFFFFF)) != _I(0))
            nonfinite = (bits & _I(0x7F800000)) == _I(0x7F800000)
            return _I(negative) | _I(nonfinite)

        return invalid_single
    return None


@njit(inline="always", fastmath=_FAST, error_model="numpy")
def _log(x):
    """Natural log of a positive normal float32: x = m 2^e with m in (sqrt 1/2, sqrt 2]."""
    bits = _f32_to_bits(x)
    shifted = _I(bits - _I(0x3F3504F3))
    exponent = _I(shifted >> _I(23))
    m = _bits_to_f32(_I(_I(shifted & _I(0x7FFFFF)) + _I(0x3F3504F3))) - _F(1.0)
    # log(1 + m) = 2 atanh(s), s = m / (2 + m), |s| < 0.172: five odd terms reach 1e-7.
    s = m / (_F(2.0) + m)
    z = s * s
    series = s * (
        _F(2.0) + z * (_F(0.6666666666666735) + z * (_F(0.3999999999940942) + z * (_F(0.2857142874366239) + z * _F(0.22222198432149784))))
    )
    return _F(exponent) * _F(0.6931471805599453) + series


_TINY = _F(1e-30)  # below this, v log v is < 1e-28: clamping the log argument changes nothing


@njit(inline="always", fastmath=_FAST, error_model="numpy")
def _add_member_row(row, average, member_terms):
    """average += f; member_terms += f log f; returns (#invalid values, sum of the row)."""
    invalid = _I(0)
    total = _F(0.0)
    for c in range(row.shape[0]):
        value = _decode(row[c])
        invalid += _invalid(row[c])
        total += value
        average[c] += value
        member_terms[c] += value * _log(max(value, _TINY))
    return invalid, total


@njit(parallel=True, fastmath=_FAST, error_model="numpy", cache=True, nogil=True)
def _fused(data, members, epochs, start, stop, entropy_out, expected_out):
    n_classes = data.shape[3]
    inverse_members = _F(1.0 / members.shape[0])
    n_blocks = (stop - start + 63) // 64
    invalid_per_block = np.zeros(n_blocks, np.int64)
    deviation_per_block = np.zeros(n_blocks, np.float32)
    for block in prange(n_blocks):
        average = np.zeros(n_classes, np.float32)
        member_terms = np.zeros(n_classes, np.float32)
        invalid = 0
        deviation = _F(0.0)
        first = start + block * 64
        for n in range(first, min(stop, first + 64)):
            for k in range(epochs.shape[0]):
                t = epochs[k]
                for i in members:
                    bad, total = _add_member_row(data[i, t, n], average, member_terms)
                    invalid += bad
                    deviation = max(deviation, abs(total - _F(1.0)))
                entropy = _F(0.0)
                member_entropy = _F(0.0)
                for c in range(n_classes):
                    p = average[c] * inverse_members  # eq. 1
                    entropy -= p * _log(max(p, _TINY))  # eq. 2
                    member_entropy -= member_terms[c]
                    average[c] = 0.0
                    member_terms[c] = 0.0
                entropy_out[k, n - start] = entropy
                expected_out[k, n - start] = member_entropy * inverse_members
        invalid_per_block[block] = invalid
        deviation_per_block[block] = deviation
    return invalid_per_block.sum(), float(deviation_per_block.max()) if n_blocks else 0.0


@njit(parallel=True, fastmath=_FAST, error_model="numpy", cache=True, nogil=True)
def _fused_confusion_only(data, members, epochs, start, stop, entropy_out):
    """Eqs. 1-2 only: no member entropies, so one log per class of the average.

    Indexing the values directly (no row views) and summing, then checking, in separate
    passes measured 1.3x faster than one pass over row views (bench/score.py).
    """
    n_classes = data.shape[3]
    inverse_members = _F(1.0 / members.shape[0])
    n_blocks = (stop - start + 63) // 64
    invalid_per_block = np.zeros(n_blocks, np.int64)
    deviation_per_block = np.zeros(n_blocks, np.float32)
    for block in prange(n_blocks):
        average = np.zeros(n_classes, np.float32)
        invalid = 0
        deviation = _F(0.0)
        first = start + block * 64
        for n in range(first, min(stop, first + 64)):
            for k in range(epochs.shape[0]):
                t = epochs[k]
                for c in range(n_classes):
                    average[c] = _decode(data[members[0], t, n, c])
                for j in range(1, members.shape[0]):
                    for c in range(n_classes):
                        average[c] += _decode(data[members[j], t, n, c])
                for j in range(members.shape[0]):
                    total = _F(0.0)
                    bad = _I(0)
                    for c in range(n_classes):
                        bad += _invalid(data[members[j], t, n, c])
                        total += _decode(data[members[j], t, n, c])
                    invalid += bad
                    deviation = max(deviation, abs(total - _F(1.0)))
                entropy = _F(0.0)
                for c in range(n_classes):
                    p = average[c] * inverse_members  # eq. 1
                    entropy -= p * _log(max(p, _TINY))  # eq. 2
                entropy_out[k, n - start] = entropy
        invalid_per_block[block] = invalid
        deviation_per_block[block] = deviation
    return invalid_per_block.sum(), float(deviation_per_block.max()) if n_blocks else 0.0


def fused_entropies(data, members, epochs, entropy_out, expected_out, start=0, stop=None, with_expected=True):
    """Fill entropy_out / expected_out (epochs, stop - start) in nats for samples [start, stop).

    data: C-contiguous (members, epochs, samples, classes) float16 or float32.
    with_expected=False skips the members' own entropies (expected_out is filled with NaN):
    the path for when only `confusion` is wanted.
    Returns (number of negative/NaN/inf values, max |row sum - 1|) for the caller to judge.
    """
    stop = data.shape[2] if stop is None else stop
    if data.dtype == np.float16:
        data = data.view(np.uint16)
    members = np.ascontiguousarray(members, dtype=np.int64)
    epochs = np.ascontiguousarray(epochs, dtype=np.int64)
    if not with_expected:
        expected_out[...] = np.nan
        return _fused_confusion_only(data, members, epochs, int(start), int(stop), entropy_out)
    return _fused(data, members, epochs, int(start), int(stop), entropy_out, expected_out)


@njit(parallel=True, fastmath=_FAST, error_model="numpy", cache=True, nogil=True)
def _reduce(data, labels, member_entropy, member_argmax, member_label, member_other, member_sumsq, ensemble_entropy, ensemble_argmax, ensemble_top1):
    """The reduced record of one epoch (`confusion.reduced`), one pass over (members, samples, classes).

    The entropies take the same float32 operations in the same order as `_fused_confusion_only`
    (so they equal what raw scoring computes); the arg-max and top probability of the average
    use a float64 sum, exact for float16 inputs.
    """
    n_members, n_samples, n_classes = data.shape
    inverse_members = _F(1.0 / n_members)
    n_blocks = (n_samples + 63) // 64
    invalid_per_block = np.zeros(n_blocks, np.int64)
    deviation_per_block = np.zeros(n_blocks, np.float32)
    for block in prange(n_blocks):
        average = np.zeros(n_classes, np.float32)
        exact = np.zeros(n_classes, np.float64)
        invalid = 0
        deviation = _F(0.0)
        for n in range(block * 64, min(n_samples, block * 64 + 64)):
            y = labels[n]
            for c in range(n_classes):
                average[c] = _decode(data[0, n, c])
                exact[c] = average[c]
            for j in range(1, n_members):
                for c in range(n_classes):
                    value = _decode(data[j, n, c])
                    average[c] += value
                    exact[c] += value
            for j in range(n_members):
                entropy = _F(0.0)
                total = _F(0.0)
                squares = _F(0.0)
                best = _F(-1.0)
                bad = _I(0)
                for c in range(n_classes):  # branch-free, so LLVM vectorises it
                    value = _decode(data[j, n, c])
                    bad += _invalid(data[j, n, c])
                    total += value
                    squares += value * value
                    entropy -= value * _log(max(value, _TINY))
                    best = max(best, value)
                best_class = 0
                while best_class < n_classes - 1 and _decode(data[j, n, best_class]) != best:  # the first largest
                    best_class += 1
                other = _F(-1.0)
                for c in range(max(y, 0)):
                    other = max(other, _decode(data[j, n, c]))
                for c in range(y + 1, n_classes):  # the largest class but the label (all of them when it is unknown)
                    other = max(other, _decode(data[j, n, c]))
                invalid += bad
                deviation = max(deviation, abs(total - _F(1.0)))
                member_entropy[j, n] = entropy
                member_argmax[j, n] = best_class
                member_label[j, n] = _decode(data[j, n, y]) if y >= 0 else np.nan
                member_other[j, n] = other if n_classes > 1 or y < 0 else _F(0.0)
                member_sumsq[j, n] = squares
            entropy = _F(0.0)
            best64 = -1.0
            for c in range(n_classes):
                p = average[c] * inverse_members  # eq. 1
                entropy -= p * _log(max(p, _TINY))  # eq. 2
                best64 = max(best64, exact[c])
            best_class = 0
            while best_class < n_classes - 1 and exact[best_class] != best64:
                best_class += 1
            ensemble_entropy[n] = entropy
            ensemble_argmax[n] = best_class
            ensemble_top1[n] = best64 / n_members
        invalid_per_block[block] = invalid
        deviation_per_block[block] = deviation
    return invalid_per_block.sum(), float(deviation_per_block.max()) if n_blocks else 0.0


def reduce_epoch(data, labels, out: dict) -> tuple[int, float]:
    """Fill `out` (confusion.reduced's fields, (members, samples) and (samples,)) from one epoch's
    (members, samples, classes) float16/float32 block; returns (#invalid values, max |row sum - 1|)."""
    data = np.ascontiguousarray(data)
    if data.dtype == np.float16:
        data = data.view(np.uint16)
    return _reduce(
        data, np.ascontiguousarray(labels, dtype=np.int64), out["member_entropy"], out["member_argmax"], out["member_label"], out["member_other"],
        out["member_sumsq"], out["ensemble_entropy"], out["ensemble_argmax"], out["ensemble_top1"],
    )
