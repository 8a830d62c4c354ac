"""Top-k logs: the confusion score with guaranteed bounds when only k of C probabilities are kept.

Large-C models and model APIs often return only the top k (log-)probabilities of a prediction.
Member i then gives, per sample and epoch, classes K_i (|K_i| = k) with probabilities v_ij; its
missing mass R_i = 1 - sum_j v_ij is spread, unknown, over the other C - k classes, each of
which holds at most c_i = min(min_j v_ij, R_i) (it was not in the top k). Over every way of
spreading it, the ensemble average's entropy (eq. 2) lies within:

- upper bound: the largest entropy of p_j = a_j + u_j with 0 <= u_j <= b_j and sum_j u_j = R,
  where a_j = (1/M) sum_{i: j in K_i} v_ij is the known mass, b_j = (1/M) sum_{i: j not in K_i}
  c_i the room and R = (1/M) sum_i R_i. This set holds every true completion (it only pools the
  members' constraints), so its maximum bounds the true one. It is the water-filling
  p_j = clip(lam, a_j, a_j + b_j), with lam making the sum 1.
- lower bound: the smallest value of the same problem with each term -p log p replaced by its
  chord over [a_j, a_j + b_j] (below it, by concavity): a fractional knapsack, filled greedily
  in order of the chords' slopes. Below the smallest entropy of the pooled set, so below the
  true one; exact whenever no class is filled part-way.
- point estimate: each member's missing mass spread evenly over its C - k missing classes
  (a possible completion, so inside the bounds).

Classes that no member lists are handled as one group with its count, so the cost is
O(M k log(M k)) per sample and epoch, whatever C. Scores of an epoch average (eq. 3) are
bounded by the averages of the bounds. With k = C the three coincide.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from .errors import InputError, ParameterError, RunStoreError

__all__ = [
    "MASS_TOLERANCE",
    "SLACK",
    "TOLERANCE",
    "bounds_kernel",
    "certain_in_top",
    "check_topk",
    "ensemble_argmax",
    "epoch_bounds",
    "load_topk",
    "prepare_topk",
    "read_topk_rows",
]

TOLERANCE = 1e-3  # a top-k mass may exceed 1 by this much (float16/float32 rounding), no more
SLACK = 1e-5  # nats each bound is widened by, for rounding (stored float32 values, the scorer's fast log)
# A prediction stored at float16 (as run stores keep them, and many APIs) sums to 1 only within
# about 2^-11: its missing mass is taken anywhere in 1 - (top-k sum) +- this, so the exact score
# of such rows stays inside the bounds (it widens them by ~0.01 bits at C = 1,000).
MASS_TOLERANCE = 2.0**-11


@njit(inline="always")
def _h(p):
    return -p * math.log(p) if p > 0.0 else 0.0


@njit(inline="always")
def _filled(lam, a, top, mult, n):
    total = 0.0
    for z in range(n):
        total += mult[z] * min(max(lam, a[z]), top[z])
    return total


@njit(cache=True, nogil=True)
def bounds_kernel(values, indices, n_classes, point, low, high, member_point):
    """values, indices: (members, samples, k) float64 / int64 of one epoch; outputs in nats:
    point, low, high (samples,), member_point (members, samples)."""
    n_members, n_samples, k = values.shape
    width = n_members * k + 1
    classes = np.empty(width, np.int64)
    a = np.empty(width)
    room = np.empty(width)
    spread = np.empty(width)
    mult = np.empty(width)
    top = np.empty(width)
    points = np.empty(2 * width)
    slopes = np.empty(width)
    cap = np.empty(n_members)
    even = np.empty(n_members)
    free = n_classes - k
    free_max = 1.0 / math.e  # where -p log p is largest
    for x in range(n_samples):
        cap_sum = 0.0
        even_sum = 0.0
        least = 0.0
        most = 0.0
        for i in range(n_members):
            total = 0.0
            smallest = 1.0
            known = 0.0
            for q in range(k):
                v = values[i, x, q]
                total += v
                smallest = min(smallest, v)
                known += _h(v)
            if free == 0:
                r, r_low, r_high, c = 0.0, 0.0, 0.0, 0.0
            else:
                r = max(0.0, 1.0 - total)
                r_low = max(0.0, 1.0 - total - MASS_TOLERANCE)  # the row itself may sum to 1 +- the tolerance
                r_high = max(0.0, 1.0 - total + MASS_TOLERANCE)
                c = min(smallest, r_high)
                if c * free < r_high:  # rounding left more mass than the missing classes could hold
                    c = r_high / free
            e = r / free if free else 0.0
            cap[i] = c
            even[i] = e
            cap_sum += c
            even_sum += e
            least += r_low
            most += r_high
            member_point[i, x] = known + free * _h(e)
        # The classes some member lists, each with its known mass and its room.
        n = 0
        for i in range(n_members):
            for q in range(k):
                j = indices[i, x, q]
                z = 0
                while z < n and classes[z] != j:
                    z += 1
                if z == n:
                    classes[n] = j
                    a[n] = 0.0
                    room[n] = cap_sum
                    spread[n] = even_sum
                    n += 1
                a[z] += values[i, x, q]
                room[z] -= cap[i]
                spread[z] -= even[i]
        for z in range(n):
            a[z] /= n_members
            room[z] = max(0.0, room[z] / n_members)
            spread[z] = max(0.0, spread[z] / n_members)
            mult[z] = 1.0
        # The classes no member lists: one group of identical ones.
        a[n] = 0.0
        room[n] = cap_sum / n_members
        spread[n] = even_sum / n_members
        mult[n] = float(n_classes - n)
        groups = n + 1
        least /= n_members
        most /= n_members

        estimate = 0.0
        known_mass = 0.0
        for z in range(groups):
            estimate += mult[z] * _h(a[z] + spread[z])
            known_mass += mult[z] * a[z]
            top[z] = a[z] + room[z]
            points[2 * z] = a[z]
            points[2 * z + 1] = top[z]

        # Upper bound: water-filling to the missing mass in [least, most] that the level 1/e
        # (the free maximum of -p log p) would add, found between sorted breakpoints.
        target = min(max(_filled(free_max, a, top, mult, groups) - known_mass, least), most) + known_mass
        upper = 0.0
        if target <= known_mass:
            for z in range(groups):
                upper += mult[z] * _h(a[z])
        else:
            ordered = np.sort(points[: 2 * groups])
            lo, hi = 0, 2 * groups - 1
            if _filled(ordered[hi], a, top, mult, groups) <= target:
                lam = ordered[hi]
            else:
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if _filled(ordered[mid], a, top, mult, groups) <= target:
                        lo = mid
                    else:
                        hi = mid
                f_lo = _filled(ordered[lo], a, top, mult, groups)
                f_hi = _filled(ordered[hi], a, top, mult, groups)
                lam = ordered[lo]
                if f_hi > f_lo:
                    lam += (target - f_lo) * (ordered[hi] - ordered[lo]) / (f_hi - f_lo)
            for z in range(groups):
                upper += mult[z] * _h(min(max(lam, a[z]), top[z]))

        # Lower bound: chords filled greedily by slope, at least `least` of mass and no more
        # than `most`, taking what lowers the sum (negative slopes) and only what it must.
        lower = 0.0
        for z in range(groups):
            lower += mult[z] * _h(a[z])
            slopes[z] = (_h(top[z]) - _h(a[z])) / room[z] if room[z] > 0.0 else np.inf
        order = np.argsort(slopes[:groups])
        taken = 0.0
        for z in order:
            if room[z] <= 0.0:
                break
            limit = (most if slopes[z] < 0.0 else least) - taken
            if limit <= 0.0:
                break
            take = min(limit, mult[z] * room[z])
            lower += slopes[z] * take
            taken += take
        point[x] = estimate
        low[x] = max(0.0, min(lower, estimate) - SLACK)
        high[x] = max(upper, estimate) + SLACK


def ensemble_argmax(values: np.ndarray, indices: np.ndarray, n_classes: int) -> np.ndarray:
    """Arg-max of the point estimate of the ensemble average: (members, samples, k) -> (samples,)."""
    n_members, n_samples, k = values.shape
    free = n_classes - k
    missing = np.clip(1.0 - values.sum(axis=-1), 0.0, None)  # (members, samples)
    out = np.empty(n_samples, dtype=np.int64)
    block = max(1, 2**22 // n_classes)
    for start in range(0, n_samples, block):
        stop = min(n_samples, start + block)
        even = missing[:, start:stop] / free if free else np.zeros((n_members, stop - start))
        dense = np.repeat(even[:, :, None], n_classes, axis=2)
        for i in range(n_members):
            np.put_along_axis(dense[i], indices[i, start:stop], values[i, start:stop], axis=-1)
        out[start:stop] = (dense.sum(axis=0)).argmax(axis=-1)
    return out


def epoch_bounds(values: np.ndarray, indices: np.ndarray, n_classes: int):
    """(point, low, high, member_point) in nats for one epoch: values/indices (members, samples, k)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    n_members, n_samples, _ = values.shape
    point, low, high = np.empty(n_samples), np.empty(n_samples), np.empty(n_samples)
    member_point = np.empty((n_members, n_samples))
    bounds_kernel(values, indices, int(n_classes), point, low, high, member_point)
    return point, low, high, member_point


def check_topk(values: np.ndarray, indices: np.ndarray, n_classes: int) -> None:
    """One line naming the first thing wrong with top-k values (probabilities) and indices."""
    k = values.shape[-1]
    if k > n_classes:
        raise ParameterError(f"{{topk}}: k = {k} probabilities per prediction, more than the {n_classes} classes", "topk")
    if not np.isfinite(values).all():
        raise ParameterError("{topk}: values hold NaN or inf", "topk")
    if (values < 0).any() or (values > 1 + TOLERANCE).any():
        bad = values[(values < 0) | (values > 1 + TOLERANCE)][0]
        raise ParameterError(
            f"{{topk}}: a value of {bad:g} is not a probability (0..1); pass {{logprobs}} if these are log-probabilities", "topk", "logprobs"
        )
    mass = values.sum(axis=-1)
    if (mass > 1 + TOLERANCE).any():
        where = np.unravel_index(int(np.argmax(mass)), mass.shape)
        raise ParameterError(
            f"{{topk}}: the top-k probabilities of one prediction sum to {mass.max():.4f} > 1 (at {tuple(int(w) for w in where)})", "topk"
        )
    if (indices < 0).any() or (indices >= n_classes).any():
        bad = indices[(indices < 0) | (indices >= n_classes)][0]
        raise ParameterError(f"{{topk}}: class index {int(bad)} is outside 0..{n_classes - 1}", "topk")
    if k > 1:
        ordered = np.sort(indices, axis=-1)
        if (ordered[..., 1:] == ordered[..., :-1]).any():
            raise ParameterError("{topk}: a prediction lists the same class twice among its top k", "topk")


def load_topk(path, *, n_classes: int | None, logprobs: bool):
    """(values, indices, n_classes) from an .npz holding `values` and `indices`, each
    (members, epochs, samples, k) or (samples, k), and optionally `n_classes`.

    Values are probabilities of the listed classes (log-probabilities with ``logprobs``), not
    renormalised over the k: what is missing from 1 is the mass of the other classes.
    """
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"{{topk}} {path} does not exist", "topk")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "values" not in data or "indices" not in data:
                raise ParameterError(f"{{topk}} {path} must hold arrays 'values' and 'indices' (it has {', '.join(data.files) or 'none'})", "topk")
            values, indices = data["values"], data["indices"]
            stored = int(data["n_classes"]) if "n_classes" in data else None
    except InputError:
        raise
    except (OSError, ValueError) as error:
        raise ParameterError(f"{{topk}} {path} is not a readable .npz file: {str(error).splitlines()[0]}", "topk") from None
    if n_classes is not None and stored is not None and stored != n_classes:
        raise ParameterError(f"{{topk}} {path} says {stored} classes, and {n_classes} were given", "topk")
    return prepare_topk(values, indices, n_classes=n_classes if n_classes is not None else stored, logprobs=logprobs)


def prepare_topk(values, indices, *, n_classes: int | None, logprobs: bool):
    """(values as probabilities, indices, n_classes), each array (members, epochs, samples, k),
    from top-k arrays shaped so or (samples, k); every check of `check_topk` passed."""
    values, indices = np.asarray(values), np.asarray(indices)
    if values.shape != indices.shape or values.ndim not in (2, 4) or 0 in values.shape:
        raise InputError(
            f"--topk: values {values.shape} and indices {indices.shape} must have one shape, (members, epochs, samples, k) or (samples, k)"
        )
    if values.dtype.kind != "f" or indices.dtype.kind not in "iu":
        raise ParameterError(f"{{topk}}: values must be floating point and indices integers, got {values.dtype} and {indices.dtype}", "topk")
    if n_classes is None:
        raise ParameterError(
            "{topk} needs the number of classes: {n_classes} C, {classes} NAMES, or 'n_classes' in the .npz", "topk", "n_classes", "classes"
        )
    if values.ndim == 2:
        values, indices = values[None, None], indices[None, None]
    values = values.astype(np.float64)
    if logprobs:
        if (values > TOLERANCE).any():
            raise ParameterError(f"{{topk}} {{logprobs}}: a log-probability of {values.max():g} is above 0", "topk", "logprobs")
        values = np.exp(np.minimum(values, 0.0))
    check_topk(values, indices, n_classes)
    return values, indices.astype(np.int64), int(n_classes)


def certain_in_top(low: np.ndarray, high: np.ndarray, chosen: np.ndarray, size: int) -> np.ndarray:
    """For each chosen sample: whether it is in the top `size` by the exact score whatever the
    missing mass was, i.e. fewer than `size` other samples could score above its lower bound."""
    ordered = np.sort(high)
    above = len(high) - np.searchsorted(ordered, low[chosen], side="right")  # samples whose upper bound exceeds it
    above -= (high[chosen] > low[chosen]).astype(int)  # not counting itself
    return above < size


def read_topk_rows(
    values_array: Any, indices_array: Any, members: Any, slots: np.ndarray, start: int, stop: int, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k logs of some members, epoch slots and rows, checked for damage.

    Parameters
    ----------
    values_array, indices_array : zarr.Array
        The split's topk_values and topk_indices.
    members : sequence of int
        The members.
    slots : ndarray
        The epoch slots.
    start, stop : int
        The rows.
    where : str
        The run and split, for errors.

    Returns
    -------
    tuple of ndarray
        (values, indices), each (members, slots, rows, k).
    """
    members = np.asarray(members, dtype=np.intp)
    try:
        low, high = int(slots.min()), int(slots.max()) + 1
        values = values_array[:, low:high, start:stop][members][:, slots - low]
        indices = indices_array[:, low:high, start:stop][members][:, slots - low]
    except Exception as error:
        raise RunStoreError(f"{where}: its top-k logs are damaged ({type(error).__name__})") from None
    if np.isnan(values).any() or (indices == np.iinfo(indices.dtype).max).any():  # the fill values: a chunk file is gone
        raise RunStoreError(f"{where}: its top-k logs are missing for committed epochs (chunk files damaged)")
    return values, indices
