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
    check_record(record, 6, labels=labels)  # a real record passes every rule


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
    check_record(dict(record), 6, all_members=False)
    for name, (index, step) in {"member_sumsq": ((0, 0, 0), 1e-6), "ensemble_top1": ((0, 1), 1e-6)}.items():
        broken = {k: v.copy() for k, v in record.items()}
        broken[name][index] += step
        with pytest.raises(RunStoreError, match=name):
            check_record(broken, 6, all_members=False)


def test_fields_that_contradict_each_other_are_damage():
    probs = _probs(alpha=0.3)
    labels = RNG.integers(0, 6, 40)
    record = {k: v.astype(np.float64) for k, v in summarize(probs, labels).items()}
    zeroed = dict(record, member_entropy=np.zeros_like(record["member_entropy"]))  # a zero-filled chunk
    with pytest.raises(RunStoreError, match="member_entropy of a committed"):
        check_record(zeroed, 6)
    squares = dict(record, member_sumsq=np.full_like(record["member_sumsq"], 1 / 6))  # says uniform; the entropies say not
    with pytest.raises(RunStoreError, match="member_sumsq of a committed"):
        check_record(squares, 6)
    lower = {k: v for k, v in record.items() if k != "ensemble_top1"}
    lower["ensemble_entropy"] = record["member_entropy"].mean(0) * 0.5  # below the members' mean: breaks eq. 2's concavity
    with pytest.raises(RunStoreError, match="ensemble_entropy of a committed"):
        check_record(lower, 6)
    check_record(lower, 6, all_members=False)  # a subset of members says nothing about the average
    small = dict(record, member_label=np.full_like(record["member_label"], 0.05), member_other=np.full_like(record["member_other"], 0.05))
    with pytest.raises(RunStoreError, match="member_other of a committed"):
        check_record(small, 6)  # no class reaches 1/C
    flipped = dict(record, member_argmax=(record["member_argmax"] + 1) % 6)
    with pytest.raises(RunStoreError, match="member_argmax of a committed"):
        check_record(flipped, 6, labels=labels)
    check_record(flipped, 6)  # without labels the arg-max cannot be checked against them
    one_hot = np.zeros((2, 1, 3, 4), dtype=np.float32)
    one_hot[..., 1] = 1.0
    check_record(summarize(one_hot, np.full(3, 1)), 4, labels=np.full(3, 1))  # zero entropy is the truth here


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
    assert reduced.read(group, "member_entropy", np.array([], dtype=int), 0, 7).shape == (2, 0, 7)
    assert reduced.read(group, "member_entropy", np.array([], dtype=int), 0, 7, members=[0]).shape == (1, 0, 7)
    assert reduced.read(group, "ensemble_top1", np.array([], dtype=int), 0, 7).shape == (0, 7)
    reduced.resize(group, 3)  # a third slot, not written yet: it reads as missing
    assert group["member_label"].shape == (2, 3, 50) and group["ensemble_argmax"].shape == (3, 50)
    for name in ("member_entropy", "ensemble_argmax"):
        with pytest.raises(RunStoreError) as caught:
            reduced.read(group, name, np.array([2]), 0, 50, where="run/val")
        assert str(caught.value) == f"run/val: the reduced record {name} of a committed epoch is missing (its chunk files are damaged)"
    with pytest.raises(RunStoreError) as caught:
        reduced.read(group, "nothing", np.array([0]), 0, 50, where="run/val")
    assert str(caught.value) == "run/val: the reduced record nothing is damaged (KeyError)"
