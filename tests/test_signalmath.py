"""The arithmetic of the neighbourhood and view scores (`confusion.signalmath`) at its edges, and
the readers around it (`confusion.neighbours`, `confusion.views`, `confusion.store.signals`):
what bench/mutation.sh's `signals` module showed the broader tests in test_signals.py miss."""

import numpy as np
import pytest

from confusion import Recorder
from confusion._files import write_npz_atomic
from confusion.errors import InputError, ParameterError, RunStoreError
from confusion.neighbours import check_k, neighbourhood
from confusion.signalmath import _ratio, _without_self, member_neighbourhood, own_positions, view_statistics
from confusion.store import RunStore
from confusion.views import view_scores

from .test_signals import record, twin_runs


def test_k_is_a_whole_number_from_1_to_1000():
    assert check_k(1) == 1 and check_k(1000) == 1000 and check_k(np.int64(7)) == 7
    for bad in (0, 1001, True, 2.0, "5"):
        with pytest.raises(ParameterError, match="must be a whole number of neighbours from 1 to 1000"):
            check_k(bad)


def test_own_positions_mark_the_unlabelled_with_minus_one():
    own = own_positions(np.array([0, 2, 3]), 5)
    assert own.dtype == np.int64 and own.tolist() == [0, -1, 1, 2, -1]


def test_a_query_not_found_among_its_own_neighbours_keeps_the_k_nearest():
    distances, index = np.array([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]]), np.array([[5, 6, 7], [9, 5, 6]])
    kept_d, kept_i = _without_self(distances, index, np.array([4, 9]), 2)  # the first query (4) is not among them
    assert kept_i.tolist() == [[5, 6], [5, 6]] and kept_d.tolist() == [[0.0, 1.0], [1.0, 2.0]]


def test_the_distance_ratio_at_its_edges():
    ratio = _ratio(np.array([0.0, 1.0, np.inf, 3.0]), np.array([0.0, 3.0, 2.0, 0.0]))
    assert ratio.tolist() == [0.5, 0.25, 1.0, 1.0]


def test_where_every_neighbour_agrees_d_other_is_the_kth_distance_and_blocks_change_nothing(monkeypatch):
    import confusion.signalmath as signalmath

    # Training points 0, 1, 2 (class 0) and 10 (class 1), k = 3. A query at -1 predicted 0: its
    # neighbours 0, 1, 2 all agree, so d_other is the 3rd distance, 3, and d_pred 1: 1/4. At 9
    # predicted 1: 10, 2, 1 -> disagreement 2/3, d_other 7, d_pred 1: 1/8. At 1.5 predicted 0:
    # d_other the 3rd distance 1.5, d_pred 0.5: 1/4. At 5.25 predicted 1: 2, 1, 10 -> 2/3,
    # d_other 3.25, d_pred 4.75: 4.75/8.
    reference = np.array([[0.0], [1.0], [2.0], [10.0]], dtype=np.float32)
    labels = np.array([0, 0, 0, 1])
    queries = np.array([[-1.0], [9.0], [1.5], [5.25]], dtype=np.float16)
    predicted = np.array([0, 1, 0, 1])
    disagreement, untrust = member_neighbourhood(reference, labels, queries, predicted, 3)
    np.testing.assert_allclose(disagreement, [0, 2 / 3, 0, 2 / 3])
    np.testing.assert_allclose(untrust, [1 / 4, 1 / 8, 0.5 / 2.0, 4.75 / 8.0], rtol=1e-6)
    sizes = []
    monkeypatch.setattr(signalmath, "BLOCK_BYTES", 4 * len(reference))  # one query per block
    again = member_neighbourhood(reference, labels, queries, predicted, 3, progress=sizes.append)
    np.testing.assert_array_equal(again[0], disagreement)
    np.testing.assert_array_equal(again[1], untrust)
    assert sizes == [1, 1, 1, 1]


def test_a_predicted_class_with_no_training_sample_has_untrust_1_and_the_others_their_own():
    reference = np.array([[0.0], [1.0], [10.0]], dtype=np.float32)
    labels = np.array([1, 1, 2])  # class 0 has no training sample
    queries = np.array([[0.5], [0.5], [9.0]], dtype=np.float32)
    _, untrust = member_neighbourhood(reference, labels, queries, np.array([0, 1, 2]), 2)
    np.testing.assert_allclose(untrust, [1.0, 0.5 / (0.5 + 0.5), 1.0 / (1.0 + 8.0)])


def test_view_statistics_by_hand_in_float64():
    # One member, two views of two samples, three classes; rows in float16 and not summing to 1
    # exactly: the average is taken in float64 and normalised before its entropy (bits).
    views = np.array([[[0.5, 0.5, 0.0], [0.25, 0.25, 0.5]], [[1.0, 0.0, 0.0], [0.8, 0.2, 0.0]]], dtype=np.float16) * np.float16(1.002)
    plain = np.array([[0, 0]])
    disagreement, confusion = view_statistics([views], plain)
    average = views.astype(np.float64).mean(axis=1)
    average /= average.sum(axis=1, keepdims=True)
    expected = -(np.where(average > 0, average * np.log2(np.where(average > 0, average, 1)), 0)).sum(axis=1)
    np.testing.assert_allclose(confusion, expected, rtol=1e-12)
    assert disagreement.tolist() == [0.5, 0.0]  # the second view of sample 0 predicts class 2


def test_the_neighbourhood_cache_is_read_back_keyed_by_k_and_skipped_when_asked(tmp_path, monkeypatch):
    import confusion.neighbours as neighbours

    store = record(
        tmp_path / "run",
        {"train": np.array([0, 0, 1, 1, 0]), "val": np.array([-1, -1, -1])},
        {"train": np.array([0, 0, 1, 1, 0]), "val": np.array([0, 1, 1])},
        {"train": np.array([[0.0], [1.0], [5.0], [6.0], [2.0]]), "val": np.array([[0.5], [5.5], [3.0]])},
        epochs=(1, 2),
        embed_epochs=(2,),
    )
    cache = tmp_path / "run/cache"
    assert neighbourhood(store, "val", k=2, cache=False).epoch == 2 and not cache.exists()
    sizes = []
    first = neighbourhood(store, "val", k=2, progress=sizes.append)
    assert (first.epoch, first.k, sizes) == (2, 2, [3])
    (path,) = cache.glob("neighbours-*.npz")
    with np.load(path) as kept:
        np.testing.assert_array_equal(kept["knn_disagreement"], first.knn_disagreement)
        np.testing.assert_array_equal(kept["untrust"], first.untrust)
    write_npz_atomic(path, knn_disagreement=np.array([0.1, 0.2, 0.3]), untrust=np.array([0.4, 0.5, 0.6]))
    cached = neighbourhood(store, "val", k=2)
    assert cached.knn_disagreement.tolist() == [0.1, 0.2, 0.3] and cached.untrust.tolist() == [0.4, 0.5, 0.6]
    assert (cached.epoch, cached.k) == (2, 2)
    other = neighbourhood(store, "val", k=3)  # another k: its own entry, not the one above
    assert other.k == 3 and len(list(cache.glob("neighbours-*.npz"))) == 2 and other.knn_disagreement.tolist() != [0.1, 0.2, 0.3]
    np.savez(path, knn_disagreement=np.array([{"a": 1}] * 3, dtype=object), untrust=np.zeros(3))  # pickled: never loaded
    assert neighbourhood(store, "val", k=2).knn_disagreement.dtype == np.float64

    def refuse(*args, **kwargs):
        raise OSError("read-only")

    monkeypatch.setattr(neighbours, "write_npz_atomic", refuse)  # a run we may not write into is searched again
    np.testing.assert_array_equal(neighbourhood(store, "val", k=4).knn_disagreement, neighbourhood(store, "val", k=4, cache=False).knn_disagreement)


def test_exactly_k_labelled_training_samples_are_too_few(tmp_path):
    store = record(
        tmp_path / "run",
        {"train": np.array([0, 1, -1]), "val": np.array([-1])},
        {"train": np.array([0, 1, 0]), "val": np.array([0])},
        {"train": np.array([[0.0], [1.0], [2.0]]), "val": np.array([[0.5]])},
    )
    with pytest.raises(InputError) as caught:
        neighbourhood(store, "val", k=2)
    assert str(caught.value) == f"the neighbourhood scores need more than k = 2 labelled training samples; {store.path} has 2"
    assert neighbourhood(store, "val", k=1).k == 1


def test_the_scores_say_their_epoch_raw_and_reduced(tmp_path):
    raw, kept = twin_runs(tmp_path)
    for store in (raw, kept):
        assert view_scores(store, "val").epoch == 2
        found = neighbourhood(store, "val")
        assert (found.epoch, found.k) == (2, 15)


@pytest.mark.parametrize("labelled, kept", [(15, []), (16, [1])])
def test_a_reduced_run_with_embeddings_and_no_views_and_just_too_few_or_enough_labels(tmp_path, labelled, kept):
    rng = np.random.default_rng(15)
    train = np.r_[np.zeros(labelled - 7, int), np.ones(7, int)]  # class 0 counts as labelled: more than k = 15 from 16 on
    labels = {"train": train, "val": np.full(6, -1)}
    Recorder.create(tmp_path / "run", n_classes=2, members=1, splits=labels, keep="reduced")
    with Recorder.open(tmp_path / "run").member(0) as writer:
        for split, n in (("train", labelled), ("val", 6)):
            writer.log(split, 1, rng.dirichlet(np.ones(2), size=n))
            writer.log_embeddings(split, 1, rng.normal(size=(n, 3)).astype(np.float32))
        writer.end_epoch(1)
    store = RunStore.open(tmp_path / "run")
    assert store.signal_epochs("val", "neighbours") == kept and store.signal_epochs("val", "views") == []
    assert not list((tmp_path / "run").glob("penultimate/member-*/epoch-*"))


def test_replacing_a_split_that_never_had_embeddings(tmp_path, cli):
    raw, _ = twin_runs(tmp_path)
    probs = np.random.default_rng(16).dirichlet(np.ones(3), size=(2, 2, 10)).astype(np.float32)
    np.save(tmp_path / "extra.npy", probs)
    for flags in ((), ("--overwrite",)):  # added after training (no embeddings), then replaced
        result = cli("import", "--probs", tmp_path / "extra.npy", "--split", "extra", *flags, "--out", tmp_path / "raw")
        assert result.exit_code == 0, result.stderr
    assert RunStore.open(tmp_path / "raw").embedding_epochs(["val", "train"]) == [2]


def test_a_kept_signal_file_of_the_wrong_length_is_damage(tmp_path):
    _, kept = twin_runs(tmp_path)
    write_npz_atomic(tmp_path / "reduced/signals/epoch-2/val.views.npz", view_disagreement=np.zeros(49), view_confusion=np.zeros(50))
    with pytest.raises(RunStoreError, match=r"holds a damaged view_disagreement \(float64 \(49,\), for 50 samples\)"):
        kept.signals("val", "views", 2)
    (tmp_path / "reduced/signals/epoch-2/val.neighbours.npz").write_bytes(b"not numpy")
    with pytest.raises(RunStoreError) as caught:
        kept.signals("val", "neighbours", 2)
    assert str(caught.value) == (
        f"{tmp_path / 'reduced/signals/epoch-2/val.neighbours.npz'} is damaged (ValueError); the epoch's neighbours scores are lost "
        "(record them again with --keep raw)"
    )
