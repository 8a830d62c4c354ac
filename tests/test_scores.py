"""The score against hand-computed cases and the properties eqs. 1-3 imply."""

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from confusion.errors import InputError
from confusion.scores import confusion_score, confusion_scores, entropy, softmax

ENGINES = ["numpy", "numba"]


def _reference(probs: np.ndarray, base: float = 2.0) -> np.ndarray:
    """Eqs. 1-3 written out with Python floats, for the hand checks."""
    members, epochs, samples, classes = probs.shape
    out = []
    for n in range(samples):
        total = 0.0
        for t in range(epochs):
            average = [sum(float(probs[i, t, n, j]) for i in range(members)) / members for j in range(classes)]
            total += -sum(p * math.log(p, base) for p in average if p > 0)
        out.append(total / epochs)
    return np.array(out)


@pytest.mark.parametrize("engine", ENGINES)
def test_two_members_that_disagree_on_two_classes_give_one_bit(engine):
    probs = np.array([[[[1.0, 0.0]]], [[[0.0, 1.0]]]], dtype=np.float32)
    scores = confusion_scores(probs, engine=engine)
    assert scores.confusion[0] == pytest.approx(1.0, abs=1e-6)
    assert scores.expected_entropy[0] == pytest.approx(0.0, abs=1e-6)
    assert scores.disagreement[0] == pytest.approx(1.0, abs=1e-6)
    assert scores.confusion_normalized[0] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("classes", [2, 3, 10, 100, 1000])
def test_uniform_average_gives_log2_of_classes(engine, classes):
    probs = np.full((3, 2, 4, classes), 1.0 / classes, dtype=np.float32)
    scores = confusion_scores(probs, engine=engine)
    np.testing.assert_allclose(scores.confusion, math.log2(classes), rtol=1e-5)
    np.testing.assert_allclose(scores.disagreement, 0.0, atol=1e-4)


@pytest.mark.parametrize("engine", ENGINES)
def test_members_agreeing_one_hot_give_zero(engine):
    probs = np.zeros((3, 4, 5, 10), dtype=np.float16)
    probs[..., 7] = 1.0
    scores = confusion_scores(probs, engine=engine)
    np.testing.assert_allclose(scores.confusion, 0.0, atol=1e-6)
    np.testing.assert_allclose(scores.expected_entropy, 0.0, atol=1e-6)


def test_hand_computed_two_epoch_case():
    # epoch 1: members [0.9, 0.1] and [0.5, 0.5] average to [0.7, 0.3]; epoch 2 agree on [1, 0].
    probs = np.array([[[[0.9, 0.1]], [[1.0, 0.0]]], [[[0.5, 0.5]], [[1.0, 0.0]]]])
    h = -(0.7 * math.log2(0.7) + 0.3 * math.log2(0.3))  # 0.881290899...
    scores = confusion_scores(probs)
    assert scores.confusion[0] == pytest.approx(h / 2, abs=1e-12)
    member_entropy = (-(0.9 * math.log2(0.9) + 0.1 * math.log2(0.1)) + 1.0) / 2
    assert scores.expected_entropy[0] == pytest.approx(member_entropy / 2, abs=1e-12)
    np.testing.assert_allclose(scores.per_epoch[:, 0], [h, 0.0], atol=1e-12)
    nats = confusion_scores(probs, base="e")
    assert nats.confusion[0] == pytest.approx(h / 2 * math.log(2), abs=1e-12)
    assert nats.unit == "nats" and scores.unit == "bits"


def test_two_dimensional_input_is_one_model_at_one_epoch():
    probs = np.array([[0.25, 0.25, 0.5], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(confusion_scores(probs).confusion, [1.5, 0.0], atol=1e-12)


def test_entropy_helper():
    assert float(entropy(np.array([0.5, 0.5]))) == pytest.approx(1.0)
    assert float(entropy(np.array([1.0, 0.0]))) == 0.0


SHAPES = (st.integers(1, 4), st.integers(1, 4), st.integers(1, 6), st.integers(2, 12))  # members, epochs, samples, classes


def random_probs(draw_shape=SHAPES):
    @st.composite
    def build(draw):
        shape = tuple(draw(s) for s in draw_shape)
        raw = draw(hnp.arrays(np.float64, shape, elements=st.floats(0.0, 1.0, allow_nan=False)))
        sharp = draw(st.sampled_from([1.0, 4.0, 16.0]))
        raw = raw**sharp + 1e-12
        return raw / raw.sum(axis=-1, keepdims=True)

    return build()


@settings(max_examples=60, deadline=None)
@given(random_probs())
def test_properties_of_the_score(probs):
    classes = probs.shape[-1]
    scores = confusion_scores(probs)
    # range: 0 <= s <= log2 C; the decomposition adds up and the disagreement is >= 0
    assert (scores.confusion >= -1e-9).all() and (scores.confusion <= math.log2(classes) + 1e-9).all()
    assert (scores.disagreement >= 0).all()
    np.testing.assert_allclose(scores.expected_entropy + scores.disagreement, scores.confusion, atol=1e-9)
    np.testing.assert_allclose(scores.confusion, _reference(probs), atol=1e-9)
    # invariance to the order of members and of classes
    rng = np.random.default_rng(0)
    shuffled = probs[rng.permutation(probs.shape[0])][..., rng.permutation(classes)]
    np.testing.assert_allclose(confusion_scores(shuffled).confusion, scores.confusion, atol=1e-9)
    # bits = nats / ln 2
    np.testing.assert_allclose(confusion_scores(probs, base=math.e).confusion / math.log(2), scores.confusion, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(random_probs(), st.data())
def test_subset_arguments_equal_slicing(probs, data):
    members = data.draw(st.lists(st.integers(0, probs.shape[0] - 1), min_size=1, unique=True))
    epochs = data.draw(st.lists(st.integers(0, probs.shape[1] - 1), min_size=1, unique=True))
    for engine in ENGINES:
        for dtype in (np.float32, np.float16):
            array = probs.astype(dtype)
            chosen = confusion_scores(array, members=members, epochs=epochs, engine=engine)
            sliced = confusion_scores(np.ascontiguousarray(array[members][:, epochs]), engine=engine)
            np.testing.assert_allclose(chosen.confusion, sliced.confusion, atol=1e-6)
            np.testing.assert_allclose(chosen.expected_entropy, sliced.expected_entropy, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(random_probs())
def test_fused_kernel_matches_float64_reference(probs):
    for dtype in (np.float16, np.float32):
        array = probs.astype(dtype)
        exact = confusion_scores(array.astype(np.float64), engine="numpy")
        fused = confusion_scores(array, engine="numba")
        precision = 3e-7 * max(1.0, math.log2(probs.shape[-1]))  # README 'The score': 3e-7 x log2 C bits
        np.testing.assert_allclose(fused.confusion, exact.confusion, rtol=0, atol=precision)
        np.testing.assert_allclose(fused.expected_entropy, exact.expected_entropy, rtol=0, atol=precision)
        # float16 storage stays within the 2e-3 bits the toolkit promises
        np.testing.assert_allclose(fused.confusion, confusion_scores(probs).confusion, atol=2e-3)


def test_epoch_subsets_from_per_epoch_rows():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(5), size=(3, 6, 20))
    scores = confusion_scores(probs)
    np.testing.assert_allclose(scores.for_epochs([0, 2, 4]).confusion, confusion_scores(probs, epochs=[0, 2, 4]).confusion)
    np.testing.assert_allclose(scores.for_epochs(slice(None, None, 3)).confusion, confusion_scores(probs[:, ::3]).confusion)


def test_logits_equal_softmax_then_probabilities():
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=5, size=(2, 3, 10, 7))
    np.testing.assert_allclose(confusion_scores(logits, logits=True).confusion, confusion_scores(softmax(logits)).confusion, atol=1e-12)


def test_streaming_blocks_agree_with_one_block(monkeypatch):
    import confusion._blocks as module

    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4), size=(2, 2, 1000)).astype(np.float32)
    whole = confusion_scores(probs, engine="numpy").confusion
    monkeypatch.setattr(module, "BLOCK_BYTES", 2048)  # forces dozens of blocks
    calls = []
    blocked = confusion_scores(probs, engine="numpy", progress=calls.append).confusion
    assert len(calls) > 10 and sum(calls) == 1000
    np.testing.assert_allclose(blocked, whole)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda a: a.__setitem__((1, 0, 3, 2), np.nan), "NaN or inf at member 1, epoch 0, sample 3"),
        (lambda a: a.__setitem__((0, 1, 5, 0), np.inf), "NaN or inf at member 0, epoch 1, sample 5"),
        (lambda a: a.__setitem__((0, 0, 2, 1), -0.25), "negative probability"),
        (lambda a: a.__imul__(1.2), "do not sum to 1"),
    ],
)
def test_invalid_probabilities_are_named(engine, damage, message):
    probs = np.full((2, 2, 8, 4), 0.25, dtype=np.float32)
    damage(probs)
    with pytest.raises(InputError, match=message):
        confusion_scores(probs, engine=engine)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((2, 3, 4)), "4-D .* or 2-D"),
        (np.zeros((1, 1, 1, 2, 3)), "4-D .* or 2-D"),
        (np.zeros((0, 3)), "empty"),
        (np.zeros((2, 0, 3, 4)), "empty"),
    ],
)
def test_bad_shapes(array, message):
    with pytest.raises(InputError, match=message):
        confusion_scores(array)


def test_float16_tolerance_is_looser_than_float32():
    row = np.array([[0.5, 0.495]])  # sums to 0.995
    confusion_scores(row.astype(np.float16))
    with pytest.raises(InputError, match="tolerance 0.001"):
        confusion_scores(row.astype(np.float32))


def test_bad_subset_arguments():
    probs = np.full((2, 2, 3, 2), 0.5)
    with pytest.raises(InputError, match="out of range"):
        confusion_scores(probs, members=[2])
    with pytest.raises(InputError, match="repeat"):
        confusion_scores(probs, epochs=[0, 0])
    with pytest.raises(InputError, match="base"):
        confusion_scores(probs, base=10)


@pytest.mark.parametrize("engine", ["numba", "numpy"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_confusion_only_path_gives_the_same_confusion_and_still_checks_input(engine, dtype):
    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.full(7, 0.4), size=(3, 4, 300)).astype(dtype)
    full = confusion_scores(probs, engine=engine)
    only = confusion_scores(probs, engine=engine, decomposition=False)
    np.testing.assert_allclose(only.confusion, full.confusion, atol=1e-6)
    assert np.isnan(only.expected_entropy).all()
    bad = probs.copy()
    bad[2, 1, 150, 3] = -0.25
    with pytest.raises(InputError, match="member 2, epoch 1, sample 150, class 3"):
        confusion_scores(bad, engine=engine, decomposition=False)
    bad[2, 1, 150, 3] = 0.9  # a row that no longer sums to 1
    with pytest.raises(InputError, match="do not sum to 1"):
        confusion_scores(bad, engine=engine, decomposition=False)


@pytest.mark.parametrize("members", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("decomposition", [True, False])
def test_the_kernel_checks_every_members_rows_whatever_the_ensemble_size(members, decomposition):
    # The kernel takes members three at a time (a short group repeats one with weight 0):
    # every member must still count once and have every row checked.
    rng = np.random.default_rng(members)
    probs = rng.dirichlet(np.full(11, 0.5), size=(members, 2, 40)).astype(np.float32)
    fused = confusion_scores(probs, engine="numba", decomposition=decomposition)
    exact = confusion_scores(probs.astype(np.float64), engine="numpy", decomposition=decomposition)
    np.testing.assert_allclose(fused.confusion, exact.confusion, atol=2e-5)
    if decomposition:
        np.testing.assert_allclose(fused.expected_entropy, exact.expected_entropy, atol=2e-5)
    for member in range(members):
        bad = probs.copy()
        bad[member, 1, 33] *= 1.01  # sums to 1.01: over float32's tolerance of 1e-3
        with pytest.raises(InputError, match="do not sum to 1"):
            confusion_scores(bad, engine="numba", decomposition=decomposition)


def test_the_kernels_log_is_within_float32_rounding_of_the_true_log():
    numba = pytest.importorskip("numba")
    from confusion._kernels import _log

    @numba.njit
    def logs(x):
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            out[i] = _log(x[i])
        return out

    # Every power of two from the smallest normal float32 up, and many mantissas around 1.
    x = np.concatenate([np.geomspace(1.2e-38, 1.0, 200_000), np.linspace(0.5, 2.0, 100_001), 2.0 ** np.arange(-126, 2)]).astype(np.float32)
    exact = np.log(x.astype(np.float64))
    error = np.abs(logs(x).astype(np.float64) - exact)
    assert (error <= 2.5e-7 * np.maximum(np.abs(exact), 1.0)).all(), float(error.max())
    assert logs(np.array([1.0], np.float32))[0] == 0.0


# Issue 29 (bench/mutation.sh): the score cache, Scores.for_epochs and softmax, to their exact results.
def _imported(tmp_path, seed=5, shape=(3, 4, 120, 5)):
    from confusion.importing import import_predictions
    from confusion.store import RunStore

    probs = np.random.default_rng(seed).dirichlet(np.full(shape[-1], 0.5), size=shape[:-1]).astype(np.float32)
    import_predictions(probs, tmp_path / "run")
    return probs.astype(np.float16), RunStore.open(tmp_path / "run")  # what the store keeps


SELECTIONS = [
    ({}, {}),
    ({"base": "e"}, {"base": math.e}),
    ({"members": [0, 2]}, {"members": [0, 2]}),
    ({"epochs": [2, 4]}, {"epochs": [1, 3]}),
    ({"members": [1], "epochs": slice(-1, None)}, {"members": [1], "epochs": [3]}),
]


def test_score_run_caches_each_selection_apart_and_reads_it_back_exactly(tmp_path, monkeypatch):
    from confusion import runscores

    probs, store = _imported(tmp_path)
    first = []
    for run_args, plain_args in SELECTIONS:
        scores = runscores.score_run(store, "val", **run_args)
        plain = confusion_scores(probs, **plain_args)
        np.testing.assert_allclose(scores.per_epoch, plain.per_epoch, rtol=0, atol=1e-6)
        np.testing.assert_allclose(scores.per_epoch_expected, plain.per_epoch_expected, rtol=0, atol=1e-6)
        assert scores.base == plain.base and scores.members == plain.members and scores.epochs == plain.epochs
        first.append(scores)
    assert len(list((tmp_path / "run" / "cache").glob("scores-*.npz"))) == len(SELECTIONS)  # one entry each, none shared

    def recomputed(*args, **kwargs):
        raise AssertionError("scored again instead of read from the cache")

    monkeypatch.setattr(runscores, "confusion_scores", recomputed)
    for (run_args, _), before in zip(SELECTIONS, first, strict=True):
        seen = []
        again = runscores.score_run(store, "val", progress=seen.append, **run_args)
        assert seen == [120]
        np.testing.assert_array_equal(again.per_epoch, before.per_epoch)
        np.testing.assert_array_equal(again.per_epoch_expected, before.per_epoch_expected)
        assert (again.n_classes, again.base, again.members, again.epochs) == (before.n_classes, before.base, before.members, before.epochs)
        assert again.training_epochs == before.training_epochs
    only = runscores.score_run(store, "val", decomposition=False)  # the cached decomposition serves it
    np.testing.assert_array_equal(only.confusion, first[0].confusion)
    with pytest.raises(AssertionError, match="scored again"):
        runscores.score_run(store, "val", cache=False)
    with pytest.raises(AssertionError, match="scored again"):
        runscores.score_run(store, "val", members=[0])  # a selection never scored is not in the cache


def test_a_stale_damaged_or_oversized_cache_entry_is_scored_again(tmp_path, monkeypatch):
    from confusion import runscores

    probs, store = _imported(tmp_path, seed=6)
    runscores.score_run(store, "val")
    (entry,) = (tmp_path / "run" / "cache").glob("scores-*.npz")
    assert runscores._read_cached_scores(entry, [1, 2, 3]) is None  # computed from other epochs
    assert runscores._read_cached_scores(entry, store.recorded_epochs) is not None
    entry.write_bytes(b"damaged")
    assert runscores._read_cached_scores(entry, store.recorded_epochs) is None
    assert runscores._read_cached_scores(tmp_path / "absent.npz", store.recorded_epochs) is None
    again = runscores.score_run(store, "val")  # recomputed and kept again
    np.testing.assert_allclose(again.per_epoch, confusion_scores(probs).per_epoch, rtol=0, atol=1e-6)
    assert runscores._read_cached_scores(entry, store.recorded_epochs) is not None
    decomposed = runscores._score_cache(store, "val", 2.0, None, np.arange(4), True)
    assert runscores._score_cache(store, "val", 2.0, None, np.arange(4), False) != decomposed
    assert runscores._score_cache(store, "val", 2.0, [0, 1, 2], np.arange(4), True) != decomposed
    assert runscores._score_cache(store, "val", 2.0, None, np.arange(4), True) == decomposed
    monkeypatch.setattr(runscores, "SCORE_CACHE_BYTES", 2 * 4 * 120 * 8 - 1)  # one byte short of (epochs x samples) x 2
    assert runscores._score_cache(store, "val", 2.0, None, np.arange(4), True) is None
    monkeypatch.setattr(runscores, "SCORE_CACHE_BYTES", 2 * 4 * 120 * 8)
    assert runscores._score_cache(store, "val", 2.0, None, np.arange(4), True) == decomposed


def test_for_epochs_keeps_exactly_the_chosen_epochs():
    probs = np.random.default_rng(8).dirichlet(np.ones(4), size=(2, 5, 30))
    scores = confusion_scores(probs)
    for which, positions in (([0, 3], [0, 3]), ([4], [4]), (slice(1, 4), [1, 2, 3]), (slice(-2, None), [3, 4])):
        part = scores.for_epochs(which)
        np.testing.assert_array_equal(part.per_epoch, scores.per_epoch[positions])
        np.testing.assert_array_equal(part.per_epoch_expected, scores.per_epoch_expected[positions])
        assert part.epochs == tuple(scores.epochs[p] for p in positions)
        assert (part.n_classes, part.base, part.members) == (scores.n_classes, scores.base, scores.members)
        np.testing.assert_allclose(part.confusion, confusion_scores(probs[:, positions]).confusion, rtol=0, atol=1e-12)
    assert scores.for_epochs([1]).per_epoch_low is None
    bounded = replace(scores, per_epoch_low=scores.per_epoch - 0.1, per_epoch_high=scores.per_epoch + 0.1, training_epochs=(2, 4, 6, 8, 10))
    part = bounded.for_epochs([1, 4])
    np.testing.assert_array_equal(part.per_epoch_low, scores.per_epoch[[1, 4]] - 0.1)
    np.testing.assert_array_equal(part.per_epoch_high, scores.per_epoch[[1, 4]] + 0.1)
    assert part.training_epochs == (4, 10)


def test_softmax_by_hand_along_any_axis():
    np.testing.assert_allclose(softmax(np.array([0.0, math.log(3.0)])), [0.25, 0.75], rtol=0, atol=1e-15)
    np.testing.assert_allclose(softmax(np.array([1000.0, 1000.0 + math.log(3.0)])), [0.25, 0.75], rtol=0, atol=1e-13)  # no overflow
    logits = np.array([[0.0, 0.0], [math.log(3.0), 0.0]])
    np.testing.assert_allclose(softmax(logits, axis=0), [[0.25, 0.5], [0.75, 0.5]], rtol=0, atol=1e-15)
    np.testing.assert_allclose(softmax(logits), [[0.5, 0.5], [0.75, 0.25]], rtol=0, atol=1e-15)
    assert softmax(np.array([1, 2], dtype=np.float16)).dtype == np.float64


def test_confusion_score_is_the_confusion_column_in_either_unit():
    from confusion.scores import confusion_score

    probs = np.random.default_rng(9).dirichlet(np.ones(6), size=(2, 3, 40))
    np.testing.assert_array_equal(confusion_score(probs), confusion_scores(probs).confusion)
    np.testing.assert_allclose(confusion_score(probs, base="e"), confusion_scores(probs).confusion * math.log(2), rtol=1e-12)
    np.testing.assert_array_equal(confusion_score(probs, members=[1], epochs=[0, 2]), confusion_scores(probs, members=[1], epochs=[0, 2]).confusion)
    np.testing.assert_allclose(confusion_score(np.full((3, 2, 4, 8), 1 / 8)), [3.0] * 4, rtol=0, atol=1e-12)


@pytest.mark.parametrize("keep", ["reduced", "topk"])
def test_a_reduced_or_top_k_run_is_scored_block_by_block_as_the_raw_run(tmp_path, keep, monkeypatch):
    """The block scorer (`_scores_by_block`, `score_rows`) and the reduced record's kernel
    (`reduce_epoch`), against the raw run scored by the whole-array scorer; blocks are forced
    small so that several are scored and put back in order."""
    from confusion import runscores
    from confusion.importing import import_predictions, import_topk
    from confusion.store import RunStore

    rng = np.random.default_rng(10)
    probs = rng.dirichlet(np.full(6, 0.4), size=(3, 4, 500)).astype(np.float16)
    import_predictions(probs, tmp_path / "raw")
    if keep == "reduced":
        import_predictions(probs, tmp_path / "run", keep="reduced")
    else:  # every class listed: the bounds close on the exact score
        order = np.argsort(-probs.astype(np.float64), axis=-1)
        values = np.take_along_axis(probs.astype(np.float64), order, axis=-1)
        np.savez(tmp_path / "top.npz", values=values, indices=order, n_classes=6)
        import_topk(tmp_path / "top.npz", tmp_path / "run", n_classes=6, logprobs=False)
    raw = runscores.score_run(RunStore.open(tmp_path / "raw"), "val", cache=False)
    monkeypatch.setattr(runscores, "BLOCK_BYTES", 2**11)  # a few blocks of whole chunks
    for options in ({}, {"base": "e"}, {"epochs": [2, 3]}, {"members": [1]}):
        seen = []
        other = runscores.score_run(RunStore.open(tmp_path / "run"), "val", cache=False, progress=seen.append, **options)
        plain = runscores.score_run(RunStore.open(tmp_path / "raw"), "val", cache=False, **options)
        assert sum(seen) == 500 and len(seen) > 1
        precision = 3e-7 * math.log2(6) * (1 if options.get("base") != "e" else math.log(2))
        np.testing.assert_allclose(other.per_epoch, plain.per_epoch, rtol=0, atol=precision + (1e-5 if keep == "topk" else 0))
        np.testing.assert_allclose(other.confusion, plain.confusion, rtol=0, atol=precision + (1e-5 if keep == "topk" else 0))
        assert other.epochs == plain.epochs and other.base == plain.base and other.training_epochs == plain.training_epochs
        assert other.members == plain.members and other.n_classes == 6 and other.bounded == (keep == "topk")
        np.testing.assert_allclose(other.per_epoch_expected, plain.per_epoch_expected, rtol=0, atol=precision + (1e-5 if keep == "topk" else 0))
        if keep == "topk":  # every class listed: the bounds close on the score (the float16 mass tolerance apart)
            assert (other.per_epoch_low <= plain.per_epoch + 1e-6).all() and (other.per_epoch_high >= plain.per_epoch - 1e-6).all()
            assert (other.per_epoch_high - other.per_epoch_low).max() < 1e-4
    np.testing.assert_allclose(runscores.score_run(RunStore.open(tmp_path / "run"), "val", cache=False).confusion, raw.confusion, rtol=0, atol=2e-5)


def test_the_threads_of_a_cluster_are_counted_and_an_unreachable_one_is_one():
    from confusion.runscores import _cluster_threads

    class Cluster:
        def __init__(self, threads):
            self.threads = threads

        def nthreads(self):
            if self.threads is None:
                raise OSError("gone")
            return self.threads

    assert _cluster_threads(Cluster({"tcp://a": 2, "tcp://b": 3})) == 5
    assert _cluster_threads(Cluster({})) == 1
    assert _cluster_threads(Cluster(None)) == 1


def test_the_base_is_bits_or_nats_by_number_or_name():
    from confusion.scores import check_base

    for base in (2, 2.0, "2", "bits", " Bit ", "BITS"):
        assert check_base(base) == 2.0
    for base in (math.e, "e", "nats", "NAT", " e "):
        assert check_base(base) == math.e
    for base in (10, 0, "ten", "", 2.5):
        with pytest.raises(InputError) as caught:
            check_base(base)
        assert str(caught.value) == f"base must be 2 (bits) or e (nats), got {base!r}"


def test_shapes_are_read_as_members_epochs_samples_classes_or_refused_word_for_word():
    from confusion.scores import as_four_d

    assert as_four_d((5, 3)) == (1, 1, 5, 3) and as_four_d((2, 4, 5, 3)) == (2, 4, 5, 3)
    assert all(type(s) is int for s in as_four_d((np.int64(2), 1, 5, 3)))
    refusals = {
        (2, 3, 4): "probs must be 4-D (members, epochs, samples, classes) or 2-D (samples, classes); got 3-D with shape (2, 3, 4)",
        (0, 3): "probs is empty: shape (members, epochs, samples, classes) = (1, 1, 0, 3)",
        (2, 0, 3, 4): "probs is empty: shape (members, epochs, samples, classes) = (2, 0, 3, 4)",
        (4, 1): "probs has 1 class; confusion needs at least 2 (shape (members, epochs, samples, classes) = (1, 1, 4, 1))",
    }
    for shape, message in refusals.items():
        with pytest.raises(InputError) as caught:
            as_four_d(shape)
        assert str(caught.value) == message
    with pytest.raises(InputError) as caught:
        as_four_d((3,), name="logits")
    assert str(caught.value).startswith("logits must be 4-D")


def test_the_engine_is_chosen_by_dtype_and_option(monkeypatch):
    from confusion.scores import _engine

    f16, f32, f64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
    assert _engine("auto", f32, False) == "numba" and _engine("auto", f16, False) == "numba"
    assert _engine("auto", f64, False) == "numpy" and _engine("auto", f32, True) == "numpy"
    assert _engine("numpy", f32, False) == "numpy" and _engine("numba", f16, False) == "numba"
    monkeypatch.setenv("CONFUSION_ENGINE", "NumPy")
    assert _engine("auto", f32, False) == "numpy" and _engine("numba", f32, False) == "numba"
    monkeypatch.setenv("CONFUSION_ENGINE", "numba")
    assert _engine("auto", f32, False) == "numba"
    with pytest.raises(InputError) as caught:
        _engine("fast", f32, False)
    assert str(caught.value) == "engine must be auto, numpy or numba, got 'fast'"
    for dtype, logits in ((f64, False), (f32, True)):
        with pytest.raises(InputError) as caught:
            _engine("numba", dtype, logits)
        assert str(caught.value) == "the numba engine takes float16/float32 probabilities only"


def test_invalid_blocks_are_named_word_for_word():
    from confusion.scores import describe_invalid

    good = np.full((2, 3, 4, 2), 0.5, dtype=np.float32)
    assert describe_invalid(good, good.dtype, 0, False) is None
    cases = [
        ((1, 2, 3, 1), np.nan, False, "NaN or inf at member 11, epoch 7, sample 103, class 1"),
        ((0, 1, 0, 0), -np.inf, False, "NaN or inf at member 10, epoch 6, sample 100, class 0"),
        ((1, 0, 2, 0), -0.25, False, "negative probability -0.25 at member 11, epoch 5, sample 102, class 0 (are these logits? pass --logits)"),
        (
            (0, 0, 1, 1),
            0.6,
            False,
            "probabilities do not sum to 1 (sum 1.1 at member 10, epoch 5, sample 101; tolerance 0.001 for float32); if these are logits, pass --logits",
        ),
        ((0, 2, 3, 1), np.inf, True, "NaN or +inf logit at member 10, epoch 7, sample 103, class 1"),
        ((1, 1, 0, 0), np.nan, True, "NaN or +inf logit at member 11, epoch 6, sample 100, class 0"),
    ]
    for where, value, logits, message in cases:
        block = good.copy()
        block[where] = value
        assert describe_invalid(block, block.dtype, 100, logits, members=[10, 11], epochs=[5, 6, 7]) == message
    block = good.copy()
    block[1, 2, 1] = -np.inf
    assert describe_invalid(block, block.dtype, 0, True) == "every class's logit is -inf at member 1, epoch 2, sample 1"
    block[1, 2, 1, 0] = 3.0  # one class left: a valid logit row; the rest are still probabilities
    assert describe_invalid(block, block.dtype, 0, True) is None
    assert describe_invalid(good, good.dtype, 0, True) == (
        "these are probabilities already (every row lies in [0, 1] and sums to 1), not logits; drop --logits"
    )
    assert describe_invalid(good * 0.99, good.dtype, 0, True) is None  # rows of 0.99: logits, however odd
    half = np.full((1, 1, 1, 2), 0.5, dtype=np.float16)
    half[..., 0] = 0.495  # sums to 0.995: inside float16's tolerance, outside float32's
    assert describe_invalid(half, np.dtype(np.float16), 0, False) is None
    assert "tolerance 0.001 for float32" in describe_invalid(half.astype(np.float32), np.dtype(np.float32), 0, False)
    assert "tolerance 0.001 for int8" in describe_invalid(np.full((1, 1, 1, 2), 0.4), np.dtype(np.int8), 0, False)  # the default
    edge = np.array([[[[0.5, 0.5 + 1e-3]]]], dtype=np.float64)  # a deviation of 1e-3 is tolerated
    assert describe_invalid(edge, edge.dtype, 0, False) is None


def test_a_scores_table_by_hand():
    from confusion.scores import Scores

    per_epoch = np.array([[1.0, 0.5, 0.0], [0.0, 0.5, 1.0]])
    expected = np.array([[0.5, 0.5, 0.0], [0.0, 0.25, 1.0 + 1e-9]])  # the last: rounding above confusion
    scores = Scores(per_epoch, expected, n_classes=4, epochs=(0, 1))
    assert scores.unit == "bits" and scores.max_score == 2.0 and not scores.bounded
    np.testing.assert_array_equal(scores.confusion, [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(scores.confusion_normalized, [0.25, 0.25, 0.25])
    np.testing.assert_array_equal(scores.confusion_low, scores.confusion)
    np.testing.assert_array_equal(scores.confusion_high, scores.confusion)
    np.testing.assert_allclose(scores.expected_entropy, [0.25, 0.375, 0.5 + 5e-10])
    np.testing.assert_allclose(scores.disagreement, [0.25, 0.125, 0.0])  # never below zero
    table = scores.to_frame()
    assert list(table.columns) == ["sample", "confusion", "confusion_normalized", "expected_entropy", "disagreement", "unit"]
    assert table["sample"].tolist() == [0, 1, 2] and set(table["unit"]) == {"bits"}
    table = scores.to_frame(sample_ids=["a", "b", "c"], labels=[1, -1, 0], split="val")
    assert list(table.columns) == ["sample", "split", "confusion", "confusion_normalized", "expected_entropy", "disagreement", "label", "unit"]
    assert table["sample"].tolist() == ["a", "b", "c"] and table["label"].tolist() == [1, -1, 0] and set(table["split"]) == {"val"}
    nats = Scores(per_epoch, expected, n_classes=4, base=math.e, epochs=(0, 1))
    assert nats.unit == "nats" and nats.max_score == pytest.approx(math.log(4))
    np.testing.assert_allclose(nats.confusion_normalized, 0.5 / math.log(4))
    single = Scores(per_epoch, expected, n_classes=1)
    np.testing.assert_array_equal(single.confusion_normalized, [0.0, 0.0, 0.0])
    low, high = per_epoch - 0.25, per_epoch + np.array([[0.5], [0.25]])
    bounded = Scores(per_epoch, expected, n_classes=4, epochs=(0, 1), per_epoch_low=low, per_epoch_high=high, training_epochs=(3, 6))
    assert bounded.bounded
    np.testing.assert_allclose(bounded.confusion_low, [0.25, 0.25, 0.25])
    np.testing.assert_allclose(bounded.confusion_high, [0.875, 0.875, 0.875])
    table = bounded.to_frame()
    assert list(table.columns)[-4:] == ["confusion_low", "confusion_high", "bound_width", "unit"]
    np.testing.assert_allclose(table["bound_width"], 0.625)
    last = bounded.for_epochs([1])
    assert last.epochs == (1,) and last.training_epochs == (6,) and last.n_classes == 4 and last.base == 2.0
    np.testing.assert_array_equal(last.per_epoch_low, low[1:]) and np.testing.assert_array_equal(last.per_epoch_high, high[1:])
    np.testing.assert_array_equal(last.confusion, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(bounded.for_epochs(slice(None, None, -1)).per_epoch, per_epoch[::-1])
    assert bounded.for_epochs(slice(None, None, -1)).training_epochs == (6, 3)
    assert scores.for_epochs([0]).training_epochs == () and scores.for_epochs([0]).per_epoch_low is None
    assert nats.for_epochs([1]).base == math.e and nats.for_epochs([1]).unit == "nats"
    np.testing.assert_array_equal(table["confusion_low"], [0.25] * 3)
    np.testing.assert_array_equal(table["confusion_high"], [0.875] * 3)
    np.testing.assert_allclose(table["expected_entropy"], [0.25, 0.375, 0.5 + 5e-10])
    np.testing.assert_allclose(table["disagreement"], [0.25, 0.125, 0.0])


def test_a_raw_run_scored_block_by_block_as_a_cluster_does_equals_the_whole_array_scorer(tmp_path, monkeypatch):
    """`_scores_by_block` on a raw run is what each Dask task computes (`score_rows` through the
    raw layout): every option reaches it, and damage is named with the run and split."""
    from confusion import runscores
    from confusion.importing import import_predictions
    from confusion.store import RunStore

    rng = np.random.default_rng(11)
    probs = rng.dirichlet(np.full(5, 0.5), size=(3, 3, 300)).astype(np.float16)  # as the store keeps them
    store = import_predictions(probs, tmp_path / "raw")
    monkeypatch.setattr(runscores, "BLOCK_BYTES", 2**12)
    for base, members, engine in ((2.0, None, "numba"), (math.e, [0, 2], "numpy")):
        seen = []
        slots = np.array([0, 2])
        blocked = runscores._scores_by_block(store, "val", base, members, slots, True, engine, seen.append, None)
        whole = confusion_scores(probs, base=base, members=members, epochs=slots)
        assert sum(seen) == 300
        np.testing.assert_allclose(blocked.per_epoch, whole.per_epoch, rtol=0, atol=1e-6)
        np.testing.assert_allclose(blocked.per_epoch_expected, whole.per_epoch_expected, rtol=0, atol=1e-6)
        assert blocked.base == base and blocked.epochs == (0, 2) and blocked.members == (tuple(range(3)) if members is None else tuple(members))
    only = runscores._scores_by_block(store, "val", 2.0, None, np.array([1]), False, "numpy", None, None)
    assert np.isnan(only.per_epoch_expected).all() and np.isfinite(only.per_epoch).all()
    with pytest.raises(InputError) as caught:
        runscores._scores_by_block(store, "val", 2.0, None, np.array([1]), True, "fast", None, None)
    assert "engine must be auto, numpy or numba" in str(caught.value)
    chunk = sorted(p for p in (store.path / "predictions.zarr" / "val" / "probs" / "c").rglob("*") if p.is_file())[0]
    chunk.write_bytes(b"")  # an emptied chunk file reads as zeros
    with pytest.raises(Exception) as caught:
        runscores._scores_by_block(RunStore.open(store.path), "val", 2.0, None, np.array([0, 1, 2]), True, "numpy", None, None)
    assert str(caught.value).startswith(f"{store.path}: split 'val' is damaged: probabilities do not sum to 1 (sum 0 at member 0, epoch 0, sample 0")


def test_one_member_of_a_reduced_run_is_scored_as_that_member_of_the_raw_run(tmp_path):
    from confusion.importing import import_predictions
    from confusion.runscores import score_run

    rng = np.random.default_rng(12)
    probs = rng.dirichlet(np.full(4, 0.5), size=(3, 2, 200)).astype(np.float16)
    raw, reduced = import_predictions(probs, tmp_path / "raw"), import_predictions(probs, tmp_path / "reduced", keep="reduced")
    for members in ([1], [2]):
        found = score_run(reduced, "val", members=members, cache=False)
        expected = score_run(raw, "val", members=members, cache=False)
        assert found.members == tuple(members)
        np.testing.assert_allclose(found.confusion, expected.confusion, rtol=0, atol=3e-7 * 2)
        np.testing.assert_allclose(found.expected_entropy, expected.expected_entropy, rtol=0, atol=3e-7 * 2)


def test_a_split_replaced_after_scoring_is_scored_again_and_a_cache_that_cannot_be_written_is_skipped(tmp_path, monkeypatch):
    from confusion import runscores
    from confusion.importing import import_predictions
    from confusion.store import RunStore

    rng = np.random.default_rng(13)
    first, second = (rng.dirichlet(np.full(3, 0.5), size=(2, 2, 100)).astype(np.float16) for _ in range(2))
    import_predictions(first, tmp_path / "run")
    before = runscores.score_run(RunStore.open(tmp_path / "run"), "val").confusion
    np.testing.assert_allclose(before, confusion_score(first), rtol=0, atol=1e-6)
    import_predictions(second, tmp_path / "run", overwrite=True)  # the same shape, other predictions
    after = runscores.score_run(RunStore.open(tmp_path / "run"), "val").confusion
    np.testing.assert_allclose(after, confusion_score(second), rtol=0, atol=1e-6)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runscores, "write_npz_atomic", full_disk)
    store = import_predictions(first, tmp_path / "other")
    np.testing.assert_allclose(runscores.score_run(store, "val").confusion, before, rtol=0, atol=0)
    assert not any((tmp_path / "other" / runscores.CACHE_DIR).glob("scores-*.npz"))


def test_the_score_table_of_every_split_with_ids_labels_and_unit(tmp_path):
    from confusion.importing import import_predictions
    from confusion.runscores import score_table
    from confusion.store import RunStore

    rng = np.random.default_rng(14)
    val, train = (rng.dirichlet(np.full(3, 0.5), size=(2, 2, n)).astype(np.float16) for n in (6, 4))
    import_predictions(val, tmp_path / "run", labels=np.array([0, 0, 0, -1, 0, 0]), sample_ids=[f"v{i}" for i in range(6)])
    import_predictions(train, tmp_path / "run", split="train", sample_ids=[f"t{i}" for i in range(4)])
    store = RunStore.open(tmp_path / "run")
    seen = []
    table = score_table(store, progress=seen.append)
    assert table["split"].tolist() == ["val"] * 6 + ["train"] * 4 and sum(seen) == 10
    assert table.index.tolist() == list(range(10))
    assert table["sample"].tolist() == [f"v{i}" for i in range(6)] + [f"t{i}" for i in range(4)]
    assert table["label"].dtype == np.int64 and table["label"].tolist() == [0, 0, 0, -1, 0, 0] + [-1] * 4  # labels of 0 are labels
    assert set(table["unit"]) == {"bits"}
    np.testing.assert_allclose(table["confusion"][:6], confusion_score(val), rtol=0, atol=1e-6)
    nats = score_table(store, ["train"], base="e")
    assert set(nats["unit"]) == {"nats"} and "label" not in nats  # no labelled sample: no label column
    np.testing.assert_allclose(nats["confusion"], confusion_score(train, base="e"), rtol=0, atol=1e-6)


def test_whole_arrays_scored_by_the_kernel_in_many_blocks(monkeypatch):
    import confusion._blocks as blocks

    rng = np.random.default_rng(15)
    probs = rng.dirichlet(np.full(4, 0.5), size=(3, 2, 50)).astype(np.float32)
    monkeypatch.setattr(blocks, "WHOLE_BLOCK", 7)
    found = confusion_scores(probs, engine="numba", members=[2, 0], epochs=[1])
    expected = confusion_scores(probs, engine="numpy", members=[2, 0], epochs=[1])
    np.testing.assert_allclose(found.per_epoch, expected.per_epoch, rtol=0, atol=3e-7 * 2)
    np.testing.assert_allclose(found.per_epoch_expected, expected.per_epoch_expected, rtol=0, atol=3e-7 * 2)


def test_entropy_and_softmax_in_float64_whatever_comes_in():
    probs = np.array([[0.1, 0.2, 0.7], [0.3, 0.3, 0.4]], dtype=np.float16)
    exact = -(probs.astype(np.float64) * np.log2(probs.astype(np.float64))).sum(axis=-1)
    found = entropy(probs)
    assert found.dtype == np.float64
    np.testing.assert_allclose(found, exact, rtol=0, atol=1e-12)
    wide = softmax(np.array([[1000.0, 0.0], [-1000.0, -1001.0]]))  # each row shifted by its own maximum
    np.testing.assert_allclose(wide, [[1.0, 0.0], [1 / (1 + math.exp(-1)), 1 - 1 / (1 + math.exp(-1))]], rtol=1e-12)
    columns = softmax(np.array([[1000.0, -1000.0], [0.0, -1001.0]]), axis=0)
    np.testing.assert_allclose(columns, [[1.0, 1 / (1 + math.exp(-1))], [0.0, 1 - 1 / (1 + math.exp(-1))]], rtol=1e-12)


def test_a_runs_epochs_and_members_are_chosen_by_number_or_slice_and_refused_in_one_line(tmp_path):
    from confusion import Recorder
    from confusion.errors import RunStoreError
    from confusion.importing import import_predictions
    from confusion.runscores import score_run

    rng = np.random.default_rng(16)
    probs = rng.dirichlet(np.full(3, 0.5), size=(3, 4, 40)).astype(np.float16)
    store = import_predictions(probs, tmp_path / "run")
    chosen = score_run(store, "val", epochs=[2, 4], cache=False)
    assert chosen.epochs == (1, 3) and chosen.training_epochs == (2, 4)
    np.testing.assert_allclose(chosen.confusion, confusion_score(probs, epochs=[1, 3]), rtol=0, atol=1e-6)
    last = score_run(store, "val", epochs=slice(-1, None))
    assert last.epochs == (3,) and last.training_epochs == (4,)
    pair = score_run(store, "val", members=slice(0, 2), cache=False)
    assert pair.members == (0, 1)
    np.testing.assert_allclose(pair.confusion, confusion_score(probs, members=[0, 1]), rtol=0, atol=1e-6)
    with pytest.raises(InputError) as caught:
        score_run(store, "val", epochs=[4, 5, 7])
    assert str(caught.value) == f"epochs [5, 7] are not committed in {store.path} (committed: [1, 2, 3, 4])"
    empty = Recorder.create(tmp_path / "empty", n_classes=3, members=2, splits={"val": 5}).store
    with pytest.raises(RunStoreError) as caught:
        score_run(empty, "val")
    assert str(caught.value) == f"{empty.path} has no committed epoch yet; nothing to score"


def test_the_score_cache_keeps_each_selection_and_unit_apart(tmp_path):
    """What score_run caches is keyed by split, unit, members, epochs and whether the
    decomposition was computed: a confusion-only result never stands in for the full one, bits
    never for nats, and `cache=False` neither reads nor writes."""
    from confusion.importing import import_predictions
    from confusion.runscores import CACHE_DIR, score_run

    rng = np.random.default_rng(17)
    probs = rng.dirichlet(np.full(3, 0.5), size=(2, 3, 60)).astype(np.float16)
    store = import_predictions(probs, tmp_path / "run")
    cached = lambda: sorted(p.name for p in (store.path / CACHE_DIR).glob("scores-*.npz"))  # noqa: E731
    assert np.isnan(score_run(store, "val", decomposition=False, cache=False).per_epoch_expected).all()
    assert cached() == []  # cache=False keeps nothing
    seen = []
    only = score_run(store, "val", decomposition=False, progress=seen.append)
    assert sum(seen) == 60 and len(cached()) == 1  # a confusion-only result is kept too
    full = score_run(store, "val")
    assert np.isfinite(full.per_epoch_expected).all() and len(cached()) == 2
    np.testing.assert_array_equal(full.confusion, only.confusion)
    nats = score_run(store, "val", decomposition=False, base="e")
    np.testing.assert_allclose(nats.confusion, full.confusion * math.log(2), rtol=1e-12)
    one = score_run(store, "val", decomposition=False, members=[1])
    np.testing.assert_allclose(one.confusion, confusion_score(probs, members=[1]), rtol=0, atol=1e-6)
    again = score_run(store, "val", decomposition=False, members=[1])  # read back
    np.testing.assert_array_equal(again.confusion, one.confusion)
    with pytest.raises(InputError) as caught:
        score_run(store, "val", engine="fast", cache=False)
    assert str(caught.value) == "engine must be auto, numpy or numba, got 'fast'"


def test_a_damaged_raw_run_is_named_by_the_whole_array_scorer(tmp_path):
    from confusion.errors import RunStoreError
    from confusion.importing import import_predictions
    from confusion.runscores import score_run
    from confusion.store import RunStore

    probs = np.random.default_rng(18).dirichlet(np.full(3, 0.5), size=(2, 2, 50)).astype(np.float16)
    store = import_predictions(probs, tmp_path / "run")
    chunk = sorted(p for p in (store.path / "predictions.zarr" / "val" / "probs" / "c").rglob("*") if p.is_file())[0]
    chunk.write_bytes(b"")
    for engine in ("numpy", "numba"):
        with pytest.raises(RunStoreError) as caught:
            score_run(RunStore.open(store.path), "val", engine=engine, cache=False)
        assert str(caught.value).startswith(
            f"{store.path}: split 'val' is damaged: probabilities do not sum to 1 (sum 0 at member 0, epoch 0, sample 0"
        )


def test_the_engine_falls_back_to_numpy_without_numba_unless_numba_is_asked_for(monkeypatch):
    import sys

    import confusion
    from confusion.scores import _engine

    monkeypatch.setitem(sys.modules, "confusion._kernels", None)  # as if numba were not installed
    monkeypatch.delattr(confusion, "_kernels", raising=False)
    assert _engine("auto", np.dtype(np.float32), False) == "numpy"
    with pytest.raises(InputError) as caught:
        _engine("numba", np.dtype(np.float32), False)
    assert str(caught.value) == "the numba engine needs numba installed"


def test_logits_that_look_like_probabilities_by_dtype_and_edge():
    from confusion.scores import describe_invalid

    already = "these are probabilities already (every row lies in [0, 1] and sums to 1), not logits; drop --logits"
    rows = lambda values, dtype: np.array(values, dtype=dtype).reshape(1, 1, -1, 2)  # noqa: E731
    assert describe_invalid(rows([[1.0, 0.0]], np.float32), np.dtype(np.float32), 0, True) == already  # 0 and 1 are probabilities
    assert describe_invalid(rows([[0.5, 0.495]], np.float16), np.dtype(np.float16), 0, True) == already  # float16's tolerance
    assert describe_invalid(rows([[0.5, 0.495]], np.float32), np.dtype(np.float32), 0, True) is None
    assert describe_invalid(rows([[2.0, -1.0]], np.float64), np.dtype(np.float64), 0, True) is None  # sums to 1, not in [0, 1]
    assert describe_invalid(rows([[1.0005, 0.0]], np.float64), np.dtype(np.float64), 0, True) is None  # above 1
    assert describe_invalid(rows([[0, 1]], np.int64), np.dtype(np.int64), 0, True) == already  # integer logits: the default tolerance
    assert describe_invalid(rows([[1, 1]], np.int64), np.dtype(np.int64), 0, True) is None


def test_what_the_scorer_refuses_is_named_word_for_word_with_the_members_and_epochs_chosen():
    probs = np.full((3, 2, 8, 4), 0.25, dtype=np.float32)
    refusals = [
        (dict(members=[3]), "members index out of range for 3 members: [3]"),
        (dict(epochs=[0, 0]), "epochs indices repeat: [0, 0]"),
        (dict(epochs=np.array([], dtype=int)), "no epochs selected"),
        (dict(epochs=[]), "epochs must be integer indices, got float64"),
        (dict(members=[0.5]), "members must be integer indices, got float64"),
        (dict(engine="fast"), "engine must be auto, numpy or numba, got 'fast'"),
    ]
    for options, message in refusals:
        with pytest.raises(InputError) as caught:
            confusion_scores(probs, **options)
        assert str(caught.value) == message
    with pytest.raises(InputError) as caught:
        confusion_scores(np.full((2, 3), True))
    assert str(caught.value) == "probs must hold numbers, got dtype bool"
    damaged = probs.copy()
    damaged[2, 1, 5] *= 1.2  # member 2, epoch 1, sample 5
    for engine in ENGINES:
        with pytest.raises(InputError) as caught:
            confusion_scores(damaged, members=[0, 2], epochs=[1], engine=engine)
        assert str(caught.value) == (
            "probabilities do not sum to 1 (sum 1.2 at member 2, epoch 1, sample 5; tolerance 0.001 for float32); if these are logits, pass --logits"
        )


def test_the_numba_engine_runs_the_kernel(monkeypatch):
    import confusion._kernels as kernels

    calls = []
    real = kernels.slab_entropies

    def counted(*args, **kwargs):
        calls.append(args[3])  # rows of the block
        return real(*args, **kwargs)

    monkeypatch.setattr(kernels, "slab_entropies", counted)
    probs = np.random.default_rng(19).dirichlet(np.full(3, 0.5), size=(2, 2, 30)).astype(np.float32)
    confusion_scores(probs, engine="numba")
    assert sum(calls) == 30
    calls.clear()
    confusion_scores(probs, engine="numpy")
    assert calls == []


class _Done:
    """A finished task of `_SyncClient`."""

    def __init__(self, value=None, error=None):
        self.value, self.error = value, error

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value


class _SyncClient:
    """What `score_run` uses of a dask.distributed Client, run here: scatter, submit, nthreads."""

    def __init__(self, threads, fail=False):
        self.threads, self.fail, self.scattered, self.submitted = threads, fail, [], []

    def nthreads(self):
        return {"tcp://a": self.threads}

    def scatter(self, value, **options):
        self.scattered.append(options)
        return ("scattered", value)

    def submit(self, function, shared, start, stop, **options):
        assert shared[0] == "scattered" and options == {"pure": False}
        self.submitted.append((start, stop))
        if self.fail:
            return _Done(error=MemoryError("worker killed"))
        return _Done(function(shared[1], start, stop))


def test_a_cluster_gets_a_task_per_block_of_whole_chunks_and_gives_the_same_numbers(tmp_path, monkeypatch):
    """With a client, one task per block of whole chunks, at least 4 per worker thread where the
    split allows; results placed by their rows whatever order they finish in; the numbers of
    scoring in this process; a task that fails is one line naming the run."""
    import sys
    import types

    from confusion.errors import RunStoreError
    from confusion.importing import import_predictions
    from confusion.runscores import score_run, score_table
    from confusion.store import RunStore
    from confusion.store import format as store_format

    monkeypatch.setattr(store_format, "CHUNK_BYTES", 2 * 4 * 10)  # chunks of 10 samples at 4 classes
    probs = np.random.default_rng(7).dirichlet(np.ones(4), size=(2, 3, 95))
    import_predictions(probs, tmp_path / "run")
    store = RunStore.open(tmp_path / "run")
    here = score_run(store, "val", cache=False)
    finished_last_first = types.ModuleType("distributed")
    finished_last_first.as_completed = lambda futures: list(futures)[::-1]
    monkeypatch.setitem(sys.modules, "distributed", finished_last_first)
    client, seen = _SyncClient(threads=2), []
    there = score_run(store, "val", cache=False, client=client, progress=seen.append)
    assert client.scattered == [{"broadcast": True, "hash": False}]
    assert client.submitted == [(start, min(95, start + 10)) for start in range(0, 95, 10)]  # ceil(95 / 8) = 12: one chunk
    assert sorted(seen) == [5] + [10] * 9
    np.testing.assert_array_equal(there.per_epoch, here.per_epoch)
    np.testing.assert_array_equal(there.per_epoch_expected, here.per_epoch_expected)
    one = _SyncClient(threads=1)
    score_run(store, "val", cache=False, client=one)
    assert one.submitted == [(0, 20), (20, 40), (40, 60), (60, 80), (80, 95)]  # ceil(95 / 4) = 24: two whole chunks
    many = _SyncClient(threads=8)
    table = score_table(store, client=many)  # ceil(95 / 32) = 3, under a chunk: one chunk a task
    assert many.submitted == client.submitted
    np.testing.assert_allclose(table["confusion"].to_numpy(), here.confusion, rtol=0, atol=1e-12)
    with pytest.raises(RunStoreError) as caught:
        score_run(store, "val", cache=False, client=_SyncClient(threads=2, fail=True))
    assert str(caught.value) == f"{store.path}: split 'val': a scoring task failed on the Dask cluster (MemoryError: worker killed)"


def test_slab_addresses_are_unsigned_byte_addresses_of_each_member_and_epoch():
    from confusion._kernels import slab_addresses

    data = np.zeros((3, 4, 10, 5), dtype=np.float32)
    got = slab_addresses(data, np.array([0, 2]), np.array([1, 3]), 7)  # int64 indices, as the readers pass them
    assert got.dtype == np.uint64
    expected = [[data.ctypes.data + ((m * 4 + e) * 10 + 7) * 5 * 4 for e in (1, 3)] for m in (0, 2)]
    assert got.tolist() == expected


def test_invalid_rows_logged_by_index_are_named_by_their_sample_and_an_empty_block_of_logits_passes():
    from confusion.scores import describe_invalid

    block = np.full((1, 1, 3, 2), 0.5, dtype=np.float32)
    block[0, 0, 2, 0] = -0.5
    assert describe_invalid(block, block.dtype, 0, False, [4], [2], samples=[70, 11, 38]) == (
        "negative probability -0.5 at member 4, epoch 2, sample 38, class 0 (are these logits? pass --logits)"
    )
    assert describe_invalid(np.empty((1, 1, 0, 2), dtype=np.float32), np.dtype(np.float32), 0, True) is None
