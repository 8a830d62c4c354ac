"""The reduced record's own functions (confusion.reduced), each to its exact result, without
PyTorch: what it keeps, its sizes, its damage checks at their bounds, and its readers. The
end-to-end comparisons of reduced and raw runs are in tests/test_reduced.py."""

import math

import numpy as np
import pytest
import zarr

from confusion import reduced
from confusion.errors import InputError, ParameterError, RunStoreError
from confusion.reduced import FinalPredictions, check_record, summarize
from confusion.scores import InvalidProbabilities

RNG = np.random.default_rng(11)


def test_keep_sizes_and_dtypes():
    assert reduced.check_keep("raw") == "raw" and reduced.check_keep("reduced") == "reduced"
    with pytest.raises(ParameterError) as caught:
        reduced.check_keep("some")
    assert str(caught.value) == "keep must be raw or reduced, got 'some'"
    assert reduced.argmax_dtype(65_535) == np.uint16 and reduced.argmax_dtype(65_536) == np.int32
    assert reduced._dtypes(10) == {
        "member_entropy": np.float32,
        "member_argmax": np.uint16,
        "member_label": np.float16,
        "member_other": np.float16,
        "member_sumsq": np.float32,
        "ensemble_entropy": np.float32,
        "ensemble_argmax": np.uint16,
        "ensemble_top1": np.float32,
    }
    assert reduced.bytes_per_prediction(3, 1000) == pytest.approx(14 + 10 / 3, rel=1e-15)  # 4+2+2+2+4, (4+2+4) / M
    assert reduced.bytes_per_prediction(1, 100_000) == 4 + 4 + 2 + 2 + 4 + 4 + 4 + 4
    assert reduced.chunk_size(100_000) == 50_000 and reduced.chunk_size(65_536) == 65_536 and reduced.chunk_size(10) == 10
    assert reduced.chunk_size(65_537) == 32_769


def test_the_small_saving_note_and_where_it_stops():
    assert reduced.small_saving(10, 3) == (
        "--keep reduced saves little at 10 classes: 17.3 bytes per member, epoch and sample against 20 raw, and a small run's "
        "fixed overhead can make it larger; it halves the store from about 18 classes up"
    )
    assert reduced.small_saving(17, 3) is not None and reduced.small_saving(18, 3) is None  # 17.33 <= 0.5 x 36
    assert reduced.small_saving(12, 1) is not None and reduced.small_saving(12, 0) == reduced.small_saving(12, 1)
    assert reduced.small_saving(1000, 3) is None


def _probs(members=3, epochs=2, samples=40, classes=6, alpha=0.5):
    return RNG.dirichlet(np.full(classes, alpha), size=(members, epochs, samples)).astype(np.float32)


def test_summarize_by_hand_and_as_the_raw_formulas():
    probs = _probs()
    labels = RNG.integers(-1, 6, 40)
    record = summarize(probs, labels)
    p = probs.astype(np.float64)
    entropy = -(p * np.log(p)).sum(-1)
    average = p.mean(0)
    np.testing.assert_allclose(record["member_entropy"], entropy, rtol=0, atol=1e-5)
    np.testing.assert_allclose(record["ensemble_entropy"], -(average * np.log(average)).sum(-1), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(record["member_argmax"], p.argmax(-1))
    np.testing.assert_array_equal(record["ensemble_argmax"], average.argmax(-1))
    np.testing.assert_allclose(record["ensemble_top1"], average.max(-1), rtol=1e-6)
    np.testing.assert_allclose(record["member_sumsq"], (p**2).sum(-1), rtol=1e-5)
    known = labels >= 0
    label_p = np.take_along_axis(p, np.where(known, labels, 0)[None, None, :, None], axis=-1)[..., 0]
    np.testing.assert_allclose(record["member_label"][..., known], label_p[..., known], rtol=2e-3)
    assert np.isnan(record["member_label"][..., ~known]).all()
    with pytest.raises(InputError, match="epoch slot 1 are not probabilities"):
        bad = probs.copy()
        bad[0, 1, 3, 0] = -0.5
        summarize(bad, labels)
    check_record(record, 6, labels=labels, where="run/val")  # a real record passes every rule


@pytest.mark.parametrize(
    "field, value",
    [
        ("member_entropy", -0.1),
        ("member_entropy", math.log(6) * 1.01 + 0.002),
        ("ensemble_entropy", np.nan),
        ("member_sumsq", 1.03),
        ("ensemble_top1", 1.02),
        ("ensemble_top1", 0.9 / 6 - 0.01),
        ("member_argmax", 6),
        ("ensemble_argmax", 7),
        ("member_other", 1.02),
        ("member_other", -0.01),
    ],
)
def test_a_value_outside_its_range_is_named_as_damage(field, value):
    record = summarize(_probs(), np.full(40, -1))
    if record[field].dtype.kind in "iu":
        record[field] = record[field].astype(np.int64)
    else:
        record[field] = record[field].astype(np.float64)
    record[field][(0,) * record[field].ndim] = value
    with pytest.raises(RunStoreError) as caught:
        check_record(record, 6, where="run/val")
    assert str(caught.value) == f"run/val: the reduced record {field} of a committed epoch is damaged (it holds values no probabilities give)"


def test_values_at_the_edges_of_their_ranges_pass():
    """Float16 rows may sum to 1 +- 1e-2 and the record keeps float32 values of them: every
    bound allows for that, exactly as written."""
    sums, slack, top, floor = 1e-2, 1e-3, math.log(6), 1 / 6
    record = {
        "member_entropy": np.array([[[-2 * sums - slack, (1 + sums) * top + slack]]]),
        "member_sumsq": np.array([[[(1 + sums) ** 2 + slack, (1 + sums) ** 2 + slack]]]),
        "ensemble_top1": np.array([[(1 - 2 * sums) * floor - slack, 1 + sums + slack]]),
        "member_argmax": np.array([[[0, 5]]]),
        "ensemble_argmax": np.array([[0, 5]]),
    }
    check_record(dict(record), 6, all_members=False, where="run/val")
    for name, (index, step) in {"member_sumsq": ((0, 0, 0), 1e-6), "ensemble_top1": ((0, 1), 1e-6)}.items():
        broken = {k: v.copy() for k, v in record.items()}
        broken[name][index] += step
        with pytest.raises(RunStoreError, match=name):
            check_record(broken, 6, all_members=False, where="run/val")


def test_fields_that_contradict_each_other_are_damage():
    probs = _probs(alpha=0.3)
    labels = RNG.integers(0, 6, 40)
    record = {k: v.astype(np.float64) for k, v in summarize(probs, labels).items()}
    zeroed = dict(record, member_entropy=np.zeros_like(record["member_entropy"]))  # a zero-filled chunk
    with pytest.raises(RunStoreError, match="member_entropy of a committed"):
        check_record(zeroed, 6, where="run/val")
    squares = dict(record, member_sumsq=np.full_like(record["member_sumsq"], 1 / 6))  # says uniform; the entropies say not
    with pytest.raises(RunStoreError, match="member_sumsq of a committed"):
        check_record(squares, 6, where="run/val")
    lower = {k: v for k, v in record.items() if k != "ensemble_top1"}
    lower["ensemble_entropy"] = record["member_entropy"].mean(0) * 0.5  # below the members' mean: breaks eq. 2's concavity
    with pytest.raises(RunStoreError, match="ensemble_entropy of a committed"):
        check_record(lower, 6, where="run/val")
    check_record(lower, 6, all_members=False, where="run/val")  # a subset of members says nothing about the average
    small = dict(record, member_label=np.full_like(record["member_label"], 0.05), member_other=np.full_like(record["member_other"], 0.05))
    with pytest.raises(RunStoreError, match="member_other of a committed"):
        check_record(small, 6, where="run/val")  # no class reaches 1/C
    flipped = dict(record, member_argmax=(record["member_argmax"] + 1) % 6)
    with pytest.raises(RunStoreError, match="member_argmax of a committed"):
        check_record(flipped, 6, labels=labels, where="run/val")
    check_record(flipped, 6, where="run/val")  # without labels the arg-max cannot be checked against them
    one_hot = np.zeros((2, 1, 3, 4), dtype=np.float32)
    one_hot[..., 1] = 1.0
    check_record(summarize(one_hot, np.full(3, 1)), 4, labels=np.full(3, 1), where="run/val")  # zero entropy is the truth here


def test_final_predictions_by_hand():
    probs = np.array([[[0.7, 0.2, 0.1], [0.2, 0.3, 0.5]], [[0.1, 0.6, 0.3], [0.1, 0.1, 0.8]]])
    final = FinalPredictions.from_probs(probs)
    assert final.argmax.tolist() == [[0, 2], [1, 2]] and final.n_members == 2 and final.n_samples == 2
    np.testing.assert_allclose(final.top1, [[0.7, 0.5], [0.6, 0.8]])
    np.testing.assert_allclose(final.entropy[0, 0], -(0.7 * math.log2(0.7) + 0.2 * math.log2(0.2) + 0.1 * math.log2(0.1)), rtol=1e-12)
    assert final.ensemble_argmax.tolist() == [1, 2]  # average (0.4, 0.4, 0.2): the first of a tie; (0.15, 0.2, 0.65)
    np.testing.assert_allclose(final.ensemble_top1, [0.4, 0.65])
    part = final.samples(np.array([False, True]))
    assert part.argmax.tolist() == [[2], [2]] and part.ensemble_argmax.tolist() == [2] and part.ensemble_top1.tolist() == [0.65]
    assert final.samples([1]).top1.tolist() == [[0.5], [0.8]]
    assert FinalPredictions(final.argmax, final.entropy, final.top1, final.ensemble_argmax).samples([0]).ensemble_top1 is None
    assert reduced.as_final(final) is final
    np.testing.assert_array_equal(reduced.as_final(probs).argmax, final.argmax)
    with pytest.raises(InputError) as caught:
        FinalPredictions.from_probs(probs[0])
    assert str(caught.value) == "final predictions must be (members, samples, classes), got shape (2, 3)"


def test_the_record_in_zarr_arrays_is_read_back_and_its_damage_named(tmp_path):
    group = zarr.open_group(tmp_path / "split.zarr", mode="w")
    reduced.create_arrays(group, n_members=2, n_slots=2, n_samples=50, n_classes=6)
    assert group["member_entropy"].shape == (2, 2, 50) and group["ensemble_top1"].shape == (2, 50)
    assert group["member_argmax"].dtype == np.uint16 and group["member_entropy"].chunks == (1, 1, 50)
    probs = _probs(members=2, epochs=2, samples=50)
    raw = zarr.create_array(tmp_path / "raw.zarr", shape=probs.shape, chunks=(2, 1, 50, 6), dtype=np.float32)
    raw[...] = probs
    labels = RNG.integers(-1, 6, 50)
    for slot in (0, 1):
        reduced.reduce_slot(group, raw, slot, labels, 6)
    expected = summarize(probs, labels)
    for name in reduced.FIELDS:
        got = reduced.read(group, name, np.array([0, 1]), 5, 45, where="run/val")
        np.testing.assert_array_equal(got, expected[name][..., 5:45].astype(got.dtype))
    one = reduced.read(group, "member_entropy", np.array([1]), 0, 50, members=[1], where="run/val")
    np.testing.assert_array_equal(one, expected["member_entropy"][[1]][:, [1]].astype(np.float32))
    assert reduced.read(group, "member_entropy", np.array([], dtype=int), 0, 7, where="run/val").shape == (2, 0, 7)
    assert reduced.read(group, "member_entropy", np.array([], dtype=int), 0, 7, members=[0], where="run/val").shape == (1, 0, 7)
    assert reduced.read(group, "ensemble_top1", np.array([], dtype=int), 0, 7, where="run/val").shape == (0, 7)
    reduced.resize(group, 3)  # a third slot, not written yet: it reads as missing
    assert group["member_label"].shape == (2, 3, 50) and group["ensemble_argmax"].shape == (3, 50)
    for name in ("member_entropy", "ensemble_argmax"):
        with pytest.raises(RunStoreError) as caught:
            reduced.read(group, name, np.array([2]), 0, 50, where="run/val")
        assert str(caught.value) == f"run/val: the reduced record {name} of a committed epoch is missing (its chunk files are damaged)"
    with pytest.raises(RunStoreError) as caught:
        reduced.read(group, "nothing", np.array([0]), 0, 50, where="run/val")
    assert str(caught.value) == "run/val: the reduced record nothing is damaged (KeyError)"


@pytest.mark.parametrize("n_classes", [2, 3, 10, 1000])
def test_the_record_invariants_hold_for_every_valid_record(n_classes):
    """`reduced.check_record` never refuses what real probabilities give: confident and uniform
    rows, float16 rounding, and rows that sum to 1 only within the float16 tolerance."""
    rng = np.random.default_rng(n_classes)
    shape = (3, 4, 400)
    sharp = rng.dirichlet(np.full(n_classes, 0.05), size=shape)
    flat = rng.dirichlet(np.full(n_classes, 50.0), size=shape)
    onehot = np.eye(n_classes)[rng.integers(0, n_classes, shape)]
    for probs in (sharp, flat, onehot, np.full(shape + (n_classes,), 1 / n_classes)):
        for scale in (1.0, 0.992, 1.008):  # float16 rows may sum to 1 +- 1e-2
            stored = (probs * scale).astype(np.float16)
            labels = rng.integers(-1, n_classes, shape[2])
            check_record(summarize(stored, labels), n_classes, labels=labels, where="run/val")


# ----------------------------------------------------------------------------- issue 29: the mutants that survived
def test_the_arrays_are_named_uncompressed_chunked_by_sample_and_resized_by_slot(tmp_path):
    group = zarr.open_group(tmp_path / "split.zarr", mode="w")
    reduced.create_arrays(group, n_members=3, n_slots=2, n_samples=50, n_classes=6)
    for name in reduced.FIELDS:
        array = group[name]
        member = name in reduced.MEMBER_FIELDS
        assert array.metadata.dimension_names == (("member", "epoch", "sample") if member else ("epoch", "sample")), name
        assert array.compressors == () and array.chunks == ((1, 1, 50) if member else (1, 50)), name
        assert (array.fill_value == np.iinfo(array.dtype).max) if array.dtype.kind in "iu" else np.isnan(array.fill_value), name
    reduced.resize(group, 5)
    assert group["member_sumsq"].shape == (3, 5, 50) and group["ensemble_top1"].shape == (5, 50)


def test_summarize_takes_any_float_dtype_gives_fixed_dtypes_and_refuses_rows_off_one():
    probs = _probs(members=2, epochs=2, samples=10)
    labels = RNG.integers(-1, 6, 10)
    as_float32 = summarize(probs, labels)
    for name, value in summarize(probs.astype(np.float64), labels).items():  # cast to float32 first
        np.testing.assert_array_equal(value, as_float32[name], err_msg=name)
    for name, value in as_float32.items():
        assert value.dtype == (np.int64 if name.endswith("argmax") else np.float32), name
    off = probs.copy()
    off[0, 1, 3] *= 1.05  # non-negative and finite, but the row sums to 1.05
    with pytest.raises(InvalidProbabilities) as caught:
        summarize(off, labels)
    assert str(caught.value) == "predictions of epoch slot 1 are not probabilities (NaN, negative, or rows off 1 by 0.05)"


class _Reader:
    """A raw (members, slots, samples, classes) array that records how many samples each read takes."""

    def __init__(self, values):
        self.values, self.shape, self.widths = values, values.shape, []

    def __getitem__(self, index):
        got = self.values[index]
        self.widths.append(got.shape[2])
        return got


def test_an_epoch_is_reduced_block_by_block_within_whole_chunks(tmp_path, monkeypatch):
    """Chunks of 13 samples (CHUNK_SAMPLES 16 over 50 samples) read in blocks of BLOCK_BYTES //
    (2 M C) samples: the same record as one pass, and no read wider than a block."""
    monkeypatch.setattr(reduced, "CHUNK_SAMPLES", 16)
    probs = _probs(members=2, epochs=2, samples=50)
    labels = RNG.integers(-1, 6, 50)
    expected = summarize(probs, labels)
    for block in (1, 5):
        monkeypatch.setattr(reduced, "BLOCK_BYTES", block * 2 * 2 * 6)
        group = zarr.open_group(tmp_path / f"split-{block}.zarr", mode="w")
        reduced.create_arrays(group, n_members=2, n_slots=2, n_samples=50, n_classes=6)
        assert group["member_entropy"].chunks == (1, 1, 13)
        reader = _Reader(probs)
        for slot in (0, 1):
            reduced.reduce_slot(group, reader, slot, labels, 6)
        assert max(reader.widths) == block and sum(reader.widths) == 2 * 50
        for name in reduced.FIELDS:
            np.testing.assert_array_equal(group[name][...], expected[name].astype(group[name].dtype), err_msg=name)


def test_reads_of_no_slot_of_a_later_slot_and_of_every_missing_field(tmp_path):
    group = zarr.open_group(tmp_path / "split.zarr", mode="w")
    reduced.create_arrays(group, n_members=3, n_slots=2, n_samples=20, n_classes=6)
    probs = _probs(members=3, epochs=1, samples=20)
    labels = np.zeros(20, dtype=int)
    raw = np.concatenate([probs, probs], axis=1)
    reduced.reduce_slot(group, raw, 0, labels, 6)  # slot 1 never written
    empty = reduced.read(group, "member_label", np.array([], dtype=int), 4, 9, where="run/val")
    assert empty.shape == (3, 0, 5) and empty.dtype == np.float16
    assert reduced.read(group, "ensemble_argmax", np.array([], dtype=int), 4, 9, where="run/val").dtype == np.uint16
    for name in reduced.FIELDS:  # slot 0 alone reads whole; the unwritten slot beside it is not read
        assert reduced.read(group, name, np.array([0]), 0, 20, where="run/val").shape[-2:] == (1, 20), name
    for name in set(reduced.FIELDS) - {"member_label"}:  # NaN there is an unknown label
        with pytest.raises(RunStoreError) as caught:
            reduced.read(group, name, np.array([1]), 0, 20, where="run/val")
        assert str(caught.value) == f"run/val: the reduced record {name} of a committed epoch is missing (its chunk files are damaged)"
    with pytest.raises(RunStoreError) as caught:
        reduced.read(group, "member_entropy", np.array([0, 7]), 0, 20, where="run/val")  # a slot past the end
    assert str(caught.value) == "run/val: the reduced record member_entropy is damaged (IndexError)"


BOUNDS_6 = {  # README: entropies in [0, ln C], probabilities in [0, 1], top probabilities and sums of squares in [1/C, 1],
    # each widened for float16 rows that sum to 1 +- 1e-2 (sums) and float32 rounding (slack)
    "member_entropy": (-2 * 1e-2 - 1e-3, 1.01 * math.log(6) + 1e-3),
    "ensemble_entropy": (-2 * 1e-2 - 1e-3, 1.01 * math.log(6) + 1e-3),
    "member_sumsq": (0.98 / 6 - 1e-3, 1.01**2 + 1e-3),
    "ensemble_top1": (0.98 / 6 - 1e-3, 1.01 + 1e-3),
    "member_label": (-1e-3, 1.01),
    "member_other": (-1e-3, 1.01),
}


@pytest.mark.parametrize("field", sorted(BOUNDS_6))
def test_each_range_holds_to_its_bound_and_breaks_just_past_it(field):
    low, high = BOUNDS_6[field]
    shape = (1, 1, 2) if field in reduced.MEMBER_FIELDS else (1, 2)
    check_record({field: np.array([low + 1e-9, high - 1e-9]).reshape(shape)}, 6, where="run/val")
    for value in (low - 1e-6, high + 1e-6):
        with pytest.raises(RunStoreError) as caught:
            check_record({field: np.array([value, 0.5]).reshape(shape)}, 6, where="run/val")
        assert str(caught.value) == f"run/val: the reduced record {field} of a committed epoch is damaged (it holds values no probabilities give)"
    for name in ("member_argmax", "ensemble_argmax"):
        shape = (1, 1, 2) if name in reduced.MEMBER_FIELDS else (1, 2)
        check_record({name: np.array([0, 5]).reshape(shape)}, 6, where="run/val")
        for value in (-1, 6):
            with pytest.raises(RunStoreError, match=name):
                check_record({name: np.array([value, 0]).reshape(shape)}, 6, where="run/val")


@pytest.mark.parametrize("entropy, other", [("member_entropy", "member_sumsq"), ("ensemble_entropy", "ensemble_top1")])
def test_an_entropy_below_what_its_top_or_squares_allow_is_damage_at_the_bound(entropy, other):
    """Shannon entropy >= -ln sum p^2 >= -ln max p, less 3e-2 (1 + H) + 1e-3 for float16 rows."""
    shape = (1, 1, 1) if entropy.startswith("member") else (1, 1)
    for value, near_floor in ((0.5, False), (0.17, True)):  # 0.17: just above 1/6, the clamp at 1/(2C) does not bind
        edge = (-math.log(value) - 3e-2 - 1e-3) / 1.03
        record = {entropy: np.full(shape, edge + 1e-7), other: np.full(shape, value)}
        check_record(record, 6, where="run/val", all_members=False)
        record[entropy] = np.full(shape, edge - 1e-6)
        with pytest.raises(RunStoreError) as caught:
            check_record(record, 6, where="run/val", all_members=False)
        assert str(caught.value) == f"run/val: the reduced record {other} of a committed epoch is damaged (it holds values no probabilities give)"
        if near_floor:
            record[entropy] = np.full(shape, 1.5)  # within 1/(2C) it would pass: the bound is -ln 0.17, not -ln(1/3)
            with pytest.raises(RunStoreError, match=other):
                check_record(record, 6, where="run/val", all_members=False)
    record = {entropy: np.zeros(shape), other: np.full(shape, 0.5)}  # a zero-filled entropy chunk is named as such
    with pytest.raises(RunStoreError, match=f"record {entropy} of"):
        check_record(record, 6, where="run/val", all_members=False)


def test_the_largest_probability_and_the_arg_max_agree_with_the_label_or_are_damage():
    floor = 0.98 / 6 - 1e-3  # the top probability of a distribution is at least 1/C, less float16 error
    both = {"member_label": np.full((1, 1, 2), floor + 1e-7), "member_other": np.full((1, 1, 2), 0.1)}
    check_record(both, 6, where="run/val")  # the label's probability is the largest, just over the floor
    check_record({"member_label": np.full((1, 1, 2), 0.05)}, 6, where="run/val")  # one field alone: nothing to tie
    both["member_other"] = np.full((1, 1, 2), floor - 1e-6)
    both["member_label"] = np.full((1, 1, 2), floor - 1e-6)
    with pytest.raises(RunStoreError) as caught:
        check_record(both, 6, where="run/val")
    assert str(caught.value) == "run/val: the reduced record member_other of a committed epoch is damaged (it holds values no probabilities give)"
    labels = np.array([0, 3])
    consistent = {"member_argmax": np.array([[[0, 1]]]), "member_label": np.array([[[0.6, 0.2]]]), "member_other": np.array([[[0.3, 0.7]]])}
    check_record(consistent, 6, where="run/val", labels=labels)
    for sample, argmax in ((0, 2), (1, 3)):  # right but not the largest (label 0); the largest but called wrong
        broken = {k: v.copy() for k, v in consistent.items()}
        broken["member_argmax"][0, 0, sample] = argmax
        with pytest.raises(RunStoreError) as caught:
            check_record(broken, 6, where="run/val", labels=labels)
        assert (
            str(caught.value) == "run/val: the reduced record member_argmax of a committed epoch is damaged (it holds values no probabilities give)"
        )
    lower = {"member_entropy": np.full((2, 1, 1), 1.0), "ensemble_entropy": np.full((1, 1), 0.9)}
    with pytest.raises(RunStoreError) as caught:
        check_record(lower, 6, where="run/val")
    assert str(caught.value) == "run/val: the reduced record ensemble_entropy of a committed epoch is damaged (it holds values no probabilities give)"


def test_final_predictions_average_the_members_in_float64_and_keep_every_field_by_sample():
    probs = np.array([[[0.5, 0.5], [0.9, 0.1]], [[0.3, 0.7], [0.6, 0.4]], [[0.2, 0.8], [0.3, 0.7]]], dtype=np.float16)  # 3 members
    final = FinalPredictions.from_probs(probs)
    exact = probs.astype(np.float64).mean(axis=0)
    assert final.ensemble_top1.dtype == np.float64
    np.testing.assert_array_equal(final.ensemble_top1, exact.max(axis=1))
    part = final.samples([1])
    np.testing.assert_array_equal(part.entropy, final.entropy[:, [1]])


def test_the_small_saving_note_for_one_member_and_at_exactly_half():
    assert reduced.small_saving(24, 1) is None  # 24 bytes <= half of 48
    assert reduced.small_saving(23, 1) == (
        "--keep reduced saves little at 23 classes: 24.0 bytes per member, epoch and sample against 46 raw, and a small run's "
        "fixed overhead can make it larger; it halves the store from about 24 classes up"
    )
