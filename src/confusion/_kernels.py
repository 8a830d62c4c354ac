"""Fused numba kernels for eqs. 1-2 and the members' entropies, one pass over the input.

Why kernels: on a 2-core CPU the plain numpy path spends its time converting float16 and in a
slow vector log; here each value is decoded, checked and summed into the ensemble average
while it is in a register, and the log is a short polynomial that LLVM vectorises (relative
error ~1.4e-7, well inside float16 storage error).
Importing this module raises ImportError when numba is missing; `scores` then uses numpy.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import carray, njit, prange, types
from numba.extending import intrinsic, overload

# No 'nnan'/'ninf': the validity checks below must see NaN and inf for what they are.
_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}
_I = np.int32
_U = np.uint32
_F = np.float32
# Values per sample block of the scoring kernel: the block's running sums (float32) stay in
# the first-level cache while every member's rows of the block stream past (bench/score.py).
BLOCK_VALUES = 8192


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


@intrinsic
def _half_to_f32(typingctx, value):
    """float16 bits -> float32, exact (subnormals too): LLVM's fpext, which becomes one F16C
    instruction per vector of values (vcvtph2ps) where the CPU has it."""
    signature = types.float32(types.uint16)

    def codegen(context, builder, sig, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return signature, codegen


@intrinsic
def _pointer(typingctx, address, like):
    """An integer address as a pointer to `like`'s element type (see `slab_entropies`)."""
    if not isinstance(like, types.Array):
        return None
    signature = types.CPointer(like.dtype)(address, like)

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(sig.return_type))

    return signature, codegen


def _decode(value):  # pragma: no cover - replaced by the overloads below
    raise NotImplementedError


def _check_key(value):  # pragma: no cover - replaced by the overloads below
    raise NotImplementedError


def _first_bad_key(values):  # pragma: no cover - replaced by the overloads below
    raise NotImplementedError


@overload(_decode, inline="always", fastmath=_FAST)
def _decode_overload(value):
    if value == types.uint16:
        return lambda value: _half_to_f32(value)
    if value == types.float32:
        return lambda value: value
    return None


@overload(_check_key, inline="always")
def _check_key_overload(value):
    # The value's bits as an unsigned number, -0.0 taken as +0.0: every valid value (finite,
    # not negative) is below `_first_bad_key`, every invalid one at or above it, so the
    # largest key of a block says whether it holds a bad value: one integer max per value.
    if value == types.uint16:

        def key_half(value):
            # On 16 bits: twice the lanes of a 32-bit key per vector (1.2x the kernel on AVX2).
            return value * np.uint16(value != np.uint16(0x8000))  # branch-free: a select once vectorised

        return key_half
    if value == types.float32:

        def key_single(value):
            bits = _U(_f32_to_bits(value))
            return bits * _U(bits != _U(0x80000000))

        return key_single
    return None


@overload(_first_bad_key, inline="always")
def _first_bad_key_overload(values):
    if values.dtype == types.uint16:
        return lambda values: _U(0x7C00)  # +inf
    if values.dtype == types.float32:
        return lambda values: _U(0x7F800000)  # +inf
    return None


@njit(inline="always", fastmath=_FAST, error_model="numpy")
def _log(x):
    """Natural log of a positive normal float32: x = (1 + m) 2^e with 1 + m in (sqrt 1/2, sqrt 2].

    log(1 + m) = m - m^2/2 + m^3 P(m), P of degree 6 fitted to (log(1 + m) - m + m^2/2) / m^3
    over that interval (Chebyshev least squares, weighted to the relative error; fitted for
    this module, see bench/README.md): relative error 1.4e-7 in float32, and no division,
    which cost AVX2 CPUs a quarter of the scoring kernel's time.
    """
    bits = _f32_to_bits(x)
    shifted = _I(bits - _I(0x3F3504F3))
    exponent = _I(shifted >> _I(23))
    m = _bits_to_f32(_I(_I(shifted & _I(0x7FFFFF)) + _I(0x3F3504F3))) - _F(1.0)
    z = m * m
    p = _F(0.08506953377808724)
    p = p * m - _F(0.14197471796471672)
    p = p * m + _F(0.14950979494151295)
    p = p * m - _F(0.1658794906447355)
    p = p * m + _F(0.19960596533935893)
    p = p * m - _F(0.2500096937117992)
    p = p * m + _F(0.3333397256469827)
    return _F(exponent) * _F(0.6931471805599453) + (m - _F(0.5) * z + z * m * p)


_TINY = _F(1e-30)  # below this, v log v is < 1e-28: clamping the log argument changes nothing


@njit(inline="always", fastmath=_FAST, error_model="numpy")
def _add_group(a, b, c, weight_b, weight_c, n_classes, average, worst, deviation):
    """average += a + weight_b b + weight_c c, for up to three members' rows of a block (flat);
    returns (largest check key, max(deviation, |row sum - 1| of any row of a, b or c)).

    Three members per pass, row by row: the average is read and written once per three
    members, and the three row sums share one loop (bench/README.md, issue 14). A group of
    fewer members repeats one with weight 0: its rows are checked twice, counted once.
    """
    for r in range(a.shape[0] // n_classes):
        first = r * n_classes
        total_a = _F(0.0)
        total_b = _F(0.0)
        total_c = _F(0.0)
        for column in range(n_classes):
            i = first + column
            value_a = _decode(a[i])
            value_b = _decode(b[i])
            value_c = _decode(c[i])
            average[i] += value_a + weight_b * value_b + weight_c * value_c
            total_a += value_a
            total_b += value_b
            total_c += value_c
            worst = max(worst, _U(max(_check_key(a[i]), max(_check_key(b[i]), _check_key(c[i])))))
        deviation = max(deviation, max(abs(total_a - _F(1.0)), max(abs(total_b - _F(1.0)), abs(total_c - _F(1.0)))))
    return worst, deviation


@njit(inline="always", fastmath=_FAST, error_model="numpy")
def _add_terms(values, terms):
    """terms += -f log f over one member's rows of a block (flat): its own entropy, per class."""
    for i in range(values.shape[0]):
        value = _decode(values[i])
        terms[i] -= value * _log(max(value, _TINY))


@njit(inline="always", fastmath=_FAST, error_model="numpy")
def _row_sums(values, n_classes, scale, out):
    """out[r] = scale * sum of row r of a flat float32 block."""
    for r in range(out.shape[0]):
        row = values[r * n_classes : (r + 1) * n_classes]
        total = _F(0.0)
        for c in range(n_classes):
            total += row[c]
        out[r] = total * scale


@njit(inline="always")
def _block(address, like, n_rows, n_classes, first, size):
    """The values of samples first.. (size values) of the slab at `address`, flat."""
    return carray(_pointer(address, like), n_rows * n_classes)[first * n_classes : first * n_classes + size]


@njit(parallel=True, fastmath=_FAST, error_model="numpy", cache=True, nogil=True)
def _entropies(addresses, like, n_classes, n_rows, block_rows, entropy_out, expected_out, out_start, with_expected):
    """Eqs. 1-2 (and the members' mean entropy when with_expected) for n_rows samples.

    addresses[j, k]: where member j's rows of epoch k start, n_rows x n_classes values of
    like's dtype in C order (a slab of an array in memory, or a mapped chunk file). A block of
    samples of one (member, epoch) is one contiguous run of values. Per block and epoch: the
    running average, the validity key and every member's row sums (checked against 1) in one
    pass per three members; the members' `-f log f` terms in one long vectorised loop per
    member (decomposition only); then one log per class of the average.
    Results go to columns out_start + row of the outputs.
    """
    n_members, n_epochs = addresses.shape
    inverse_members = _F(1.0 / n_members)
    n_blocks = (n_rows + block_rows - 1) // block_rows
    worst_per_block = np.zeros(n_blocks, np.uint32)
    deviation_per_block = np.zeros(n_blocks, np.float32)
    for block in prange(n_blocks):
        first = block * block_rows
        rows = min(n_rows, first + block_rows) - first
        size = rows * n_classes
        average = np.empty(size, np.float32)
        terms = np.empty(size if with_expected else 0, np.float32)
        worst = _U(0)
        deviation = _F(0.0)
        for k in range(n_epochs):
            average[:] = 0.0
            terms[:] = 0.0
            for j in range(0, n_members, 3):
                # Members j..j+2; past the last member, member j again with weight 0.
                b = j + 1 if j + 1 < n_members else j
                c = j + 2 if j + 2 < n_members else j
                worst, deviation = _add_group(
                    _block(addresses[j, k], like, n_rows, n_classes, first, size),
                    _block(addresses[b, k], like, n_rows, n_classes, first, size),
                    _block(addresses[c, k], like, n_rows, n_classes, first, size),
                    _F(b != j),
                    _F(c != j),
                    n_classes,
                    average,
                    worst,
                    deviation,
                )
            if with_expected:
                for j in range(n_members):
                    _add_terms(_block(addresses[j, k], like, n_rows, n_classes, first, size), terms)
            for i in range(size):
                p = average[i] * inverse_members  # eq. 1
                average[i] = -p * _log(max(p, _TINY))  # eq. 2, summed per row below
            out = out_start + first
            _row_sums(average, n_classes, _F(1.0), entropy_out[k, out : out + rows])
            if with_expected:
                _row_sums(terms, n_classes, inverse_members, expected_out[k, out : out + rows])
        worst_per_block[block] = worst
        deviation_per_block[block] = deviation
    bad = _first_bad_key(like)
    return int((worst_per_block >= bad).sum()), float(deviation_per_block.max()) if n_blocks else 0.0


def slab_entropies(addresses, dtype, n_classes, n_rows, entropy_out, expected_out, with_expected=True, out_start=0):
    """Fill columns out_start:out_start + n_rows of entropy_out / expected_out (C-contiguous
    float64 (epochs, samples)) in nats from slabs of float16/float32 rows.

    addresses: (members, epochs) integer addresses, each of n_rows x n_classes values of
    `dtype` in C order; the caller keeps the memory they point at alive during the call.
    with_expected=False skips the members' own entropies (expected_out is filled with NaN):
    the path for when only `confusion` is wanted, one log per class of the average.
    Returns (number of sample blocks holding a negative/NaN/inf value, max |row sum - 1|)
    for the caller to judge.
    """
    like = np.empty(0, dtype=np.uint16 if np.dtype(dtype) == np.float16 else np.float32)
    if not with_expected:
        expected_out[:, out_start : out_start + n_rows] = np.nan
    block_rows = max(1, BLOCK_VALUES // n_classes)
    return _entropies(
        np.ascontiguousarray(addresses, dtype=np.uint64),
        like,
        int(n_classes),
        int(n_rows),
        block_rows,
        entropy_out,
        expected_out,
        int(out_start),
        bool(with_expected),
    )


def slab_addresses(data: np.ndarray, members, epochs, start: int) -> np.ndarray:
    """(members, epochs) addresses of sample `start` of the chosen slabs of a C-contiguous
    (members, epochs, samples, classes) array, for `slab_entropies`."""
    n_epochs, n_samples, n_classes = data.shape[1:]
    slab = (np.asarray(members, dtype=np.uint64)[:, None] * n_epochs + np.asarray(epochs, dtype=np.uint64)[None, :]) * n_samples + start
    return data.ctypes.data + slab * np.uint64(n_classes * data.dtype.itemsize)


@njit(parallel=True, fastmath=_FAST, error_model="numpy", cache=True, nogil=True)
def _reduce(data, labels, member_entropy, member_argmax, member_label, member_other, member_sumsq, ensemble_entropy, ensemble_argmax, ensemble_top1):
    """The reduced record of one epoch (`confusion.reduced`), one pass over (members, samples, classes).

    The entropies take the same float32 operations as `_entropies`
    (so they equal what raw scoring computes); the arg-max and top probability of the average
    use a float64 sum, exact for float16 inputs.
    """
    n_members, n_samples, n_classes = data.shape
    inverse_members = _F(1.0 / n_members)
    n_blocks = (n_samples + 63) // 64
    worst_per_block = np.zeros(n_blocks, np.uint32)
    deviation_per_block = np.zeros(n_blocks, np.float32)
    for block in prange(n_blocks):
        average = np.zeros(n_classes, np.float32)
        exact = np.zeros(n_classes, np.float64)
        worst = _U(0)
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
                for c in range(n_classes):  # branch-free, so LLVM vectorises it
                    value = _decode(data[j, n, c])
                    worst = max(worst, _U(_check_key(data[j, n, c])))
                    total += value
                    squares += value * value
                    entropy -= value * _log(max(value, _TINY))
                    best = max(best, value)
                best_class = n_classes - 1
                for c in range(n_classes):  # the first largest: a min over positions, which vectorises
                    best_class = min(best_class, c + (n_classes - c) * (_decode(data[j, n, c]) != best))
                other = _F(-1.0)
                for c in range(max(y, 0)):
                    other = max(other, _decode(data[j, n, c]))
                for c in range(y + 1, n_classes):  # the largest class but the label (all of them when it is unknown)
                    other = max(other, _decode(data[j, n, c]))
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
            best_class = n_classes - 1
            for c in range(n_classes):
                best_class = min(best_class, c + (n_classes - c) * (exact[c] != best64))
            ensemble_entropy[n] = entropy
            ensemble_argmax[n] = best_class
            ensemble_top1[n] = best64 / n_members
        worst_per_block[block] = worst
        deviation_per_block[block] = deviation
    bad = _first_bad_key(data)
    return int((worst_per_block >= bad).sum()), float(deviation_per_block.max()) if n_blocks else 0.0


def reduce_epoch(data, labels, out: dict) -> tuple[int, float]:
    """Fill `out` (confusion.reduced's fields, (members, samples) and (samples,)) from one epoch's
    (members, samples, classes) float16/float32 block; returns (#sample blocks holding a negative/NaN/inf
    value, max |row sum - 1|)."""
    data = np.ascontiguousarray(data)
    if data.dtype == np.float16:
        data = data.view(np.uint16)
    return _reduce(
        data,
        np.ascontiguousarray(labels, dtype=np.int64),
        out["member_entropy"],
        out["member_argmax"],
        out["member_label"],
        out["member_other"],
        out["member_sumsq"],
        out["ensemble_entropy"],
        out["ensemble_argmax"],
        out["ensemble_top1"],
    )
