"""The signals beyond confusion: the members' embeddings in the store, the neighbourhood scores,
the learned `combined`, and the ceiling of what a label-free score can see."""

import json

import numpy as np
import pytest

from confusion import Recorder
from confusion.analyses import error_ceiling
from confusion.combined import CombinedFit, fit_combined, folds_of
from confusion.difficulty import SCORES, difficulty_scores, fit_combined_run
from confusion.errors import InputError, RunStoreError
from confusion.neighbours import neighbourhood
from confusion.reduced import FinalPredictions
from confusion.store import RunStore
from confusion.store.embeddings import DIMS

from .conftest import needs_torch


def onehot_probs(predicted, n_classes, sharp=0.9):
    probs = np.full((len(predicted), n_classes), (1 - sharp) / (n_classes - 1))
    probs[np.arange(len(predicted)), predicted] = sharp
    return probs


def record(path, splits, predicted, embeddings, members=1, epochs=(1,), n_classes=2, embed_epochs=None):
    """A run whose members predict `predicted[split]` and embed `embeddings[split]` (member m adds m)."""
    Recorder.create(path, n_classes=n_classes, members=members, splits=splits)
    for member in range(members):
        with Recorder.open(path).member(member) as writer:
            for epoch in epochs:
                for split in splits:
                    writer.log(split, epoch, onehot_probs(predicted[split], n_classes))
                    if embed_epochs is None or epoch in embed_epochs:
                        writer.log_embeddings(split, epoch, np.asarray(embeddings[split], dtype=np.float32) + member)
                writer.end_epoch(epoch)
    return RunStore.open(path)


# ----------------------------------------------------------------------------- the store
def test_embeddings_appear_with_their_committed_epoch_and_are_projected(tmp_path):
    rng = np.random.default_rng(0)
    wide = {"train": rng.normal(size=(300, 80)), "val": rng.normal(size=(50, 80))}
    splits = {"train": rng.integers(0, 2, 300), "val": rng.integers(0, 2, 50)}
    Recorder.create(tmp_path / "run", n_classes=2, members=2, splits=splits)
    recorder = Recorder.open(tmp_path / "run")
    with recorder.member(0) as writer:
        for split, values in wide.items():
            writer.log(split, 1, onehot_probs(np.zeros(len(values), int), 2))
            order = rng.permutation(len(values))  # any order, with index
            writer.log_embeddings(split, 1, values[order], index=order)
        writer.end_epoch(1)
    store = RunStore.open(tmp_path / "run")
    assert store.recorded_epochs == [] and store.embedding_epochs(["train", "val"]) == []  # member 1 has not ended it
    with recorder.member(1) as writer:
        for split, values in wide.items():
            writer.log(split, 1, onehot_probs(np.zeros(len(values), int), 2))
            writer.log_embeddings(split, 1, values)
        writer.end_epoch(1)
    store = RunStore.open(tmp_path / "run")
    assert store.embedding_epochs(["train", "val"]) == [1]
    kept = store.embeddings("train", 0, 1)
    assert kept.shape == (300, DIMS) and kept.dtype == np.float16
    # The projection is onto the train rows' principal axes: it keeps their distances nearly
    # (80 -> 64 axes of isotropic noise keep most of the variance), and centres them.
    centred = wide["train"] - wide["train"].mean(axis=0)
    assert abs(np.linalg.norm(kept.astype(np.float64)) / np.linalg.norm(centred) - 1) < 0.15
    np.testing.assert_allclose(kept.astype(np.float64).mean(axis=0), 0, atol=0.05)
    # Members are projected alike: both saw the same rows.
    np.testing.assert_allclose(np.abs(store.embeddings("val", 0, 1).astype(float)), np.abs(store.embeddings("val", 1, 1).astype(float)), atol=2e-2)


def test_narrow_embeddings_are_kept_as_they_are(tmp_path):
    values = {"train": np.arange(20, dtype=np.float32).reshape(10, 2), "val": np.ones((3, 2), np.float32)}
    store = record(
        tmp_path / "run", {"train": np.zeros(10, int), "val": np.zeros(3, int)}, {"train": np.zeros(10, int), "val": np.zeros(3, int)}, values
    )
    np.testing.assert_array_equal(store.embeddings("train", 0, 1), values["train"].astype(np.float16))


@pytest.mark.parametrize(
    "values, index, message",
    [
        (np.full((4, 3), np.nan, np.float32), None, "embeddings must be finite"),
        (np.ones((4, 3), np.int64), None, "embeddings must be finite floating-point"),
        (np.full((4, 3), 1e6, np.float32), None, r"within \+-65504"),
        (np.ones((4, 3), np.float32), np.array([0, 1, 2, 9]), "outside 0..4"),
        (np.ones((6, 3), np.float32), None, "6 embedding rows of split 'val'"),
    ],
)
def test_bad_embeddings_are_refused_in_one_line_and_the_writer_goes_on(tmp_path, values, index, message):
    Recorder.create(tmp_path / "run", n_classes=2, members=1, splits={"val": np.zeros(5, int)})
    with Recorder.open(tmp_path / "run").member(0) as writer:
        with pytest.raises(InputError, match=message):
            writer.log_embeddings("val", 1, values, index=index)
        writer.log("val", 1, onehot_probs(np.zeros(5, int), 2))
        writer.log_embeddings("val", 1, np.ones((5, 3), np.float32))
        writer.end_epoch(1)
    assert RunStore.open(tmp_path / "run").embedding_epochs(["val"]) == [1]


def test_an_epoch_with_some_embeddings_missing_is_not_ended(tmp_path):
    Recorder.create(tmp_path / "run", n_classes=2, members=1, splits={"train": np.zeros(4, int), "val": np.zeros(5, int)})
    with Recorder.open(tmp_path / "run").member(0) as writer:
        writer.log("train", 1, onehot_probs(np.zeros(4, int), 2))
        writer.log("val", 1, onehot_probs(np.zeros(5, int), 2))
        writer.log_embeddings("val", 1, np.ones((5, 3), np.float32))
        with pytest.raises(InputError) as caught:
            writer.end_epoch(1)
        assert str(caught.value) == (
            "member 0, epoch 1: 4 of 4 embedding rows of split 'train' were never logged; log embeddings of every sample of every split, or of none"
        )
        writer.log_embeddings("train", 1, np.ones((2, 4), np.float32)[:, :3])
        with pytest.raises(InputError, match="2 of 4 embedding rows of split 'train'"):
            writer.end_epoch(1)
        with pytest.raises(InputError, match="3 wide this epoch, not 4"):
            writer.log_embeddings("train", 1, np.ones((2, 4), np.float32))
        writer.log_embeddings("train", 1, np.ones((2, 3), np.float32))
        writer.end_epoch(1)
    store = RunStore.open(tmp_path / "run")
    assert store.recorded_epochs == [1] and store.embedding_epochs(["train", "val"]) == [1]


def test_a_killed_writers_open_embeddings_are_dropped(tmp_path):
    Recorder.create(tmp_path / "run", n_classes=2, members=1, splits={"val": np.zeros(5, int)})
    writer = Recorder.open(tmp_path / "run").member(0)
    writer.log("val", 1, onehot_probs(np.zeros(5, int), 2))
    writer.log_embeddings("val", 1, np.ones((5, 3), np.float32))
    assert list((tmp_path / "run/penultimate/member-0").glob(".open-*"))
    writer.close()
    with Recorder.open(tmp_path / "run").member(0) as again:
        assert not list((tmp_path / "run/penultimate/member-0").glob(".*"))
        again.log("val", 1, onehot_probs(np.zeros(5, int), 2))
        again.end_epoch(1)  # without embeddings this time: an epoch logs them for every split, or for none
    assert RunStore.open(tmp_path / "run").embedding_epochs(["val"]) == []


def test_a_damaged_embedding_file_is_one_line(tmp_path):
    store = record(tmp_path / "run", {"val": np.zeros(3, int)}, {"val": np.zeros(3, int)}, {"val": np.ones((3, 2))})
    (tmp_path / "run/penultimate/member-0/epoch-1/val.npy").write_bytes(b"not numpy")
    with pytest.raises(RunStoreError, match="is damaged"):
        store.embeddings("val", 0, 1)


# ----------------------------------------------------------------------------- neighbourhood
def test_neighbourhood_scores_by_hand(tmp_path):
    # Training points on a line: 0 and 1 (class 0), 10 (class 1). Query A at 2 predicted 0, query
    # B at 2 predicted 1. k = 2: A's neighbours 1 and 0, both class 0 -> disagreement 0; d_pred 1,
    # no other class among them -> d_other = the 2nd neighbour's distance 2 -> untrust 1/3. B:
    # disagreement 1; d_pred = 8 (to 10), d_other = 1 -> 8/9.
    train = np.array([[0.0], [1.0], [10.0]])
    val = np.array([[2.0], [2.0]])
    store = record(
        tmp_path / "run",
        {"train": np.array([0, 0, 1]), "val": np.array([-1, -1])},
        {"train": np.array([0, 0, 1]), "val": np.array([0, 1])},
        {"train": train, "val": val},
    )
    found = neighbourhood(store, "val", k=2, cache=False)
    np.testing.assert_allclose(found.knn_disagreement, [0.0, 1.0])
    np.testing.assert_allclose(found.untrust, [1 / 3, 8 / 9])
    # On the train split, a sample is not its own neighbour: the point at 10 (predicted 1, as
    # labelled) has neighbours 1 and 0 (class 0): disagreement 1; its own class has no other
    # training sample: untrust 1.
    on_train = neighbourhood(store, "train", k=2, cache=False)
    np.testing.assert_allclose(on_train.knn_disagreement, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(on_train.untrust, [1 / 11, 1 / 10, 1.0])


def test_neighbourhood_matches_a_brute_force_reference_and_averages_members(tmp_path):
    rng = np.random.default_rng(1)
    train, val = rng.normal(size=(120, 3)), rng.normal(size=(40, 3))
    train_labels = rng.integers(0, 3, 120)
    predicted = {"train": rng.integers(0, 3, 120), "val": rng.integers(0, 3, 40)}
    store = record(tmp_path / "run", {"train": train_labels, "val": np.full(40, -1)}, predicted, {"train": train, "val": val}, members=2, n_classes=3)
    k = 5
    found = neighbourhood(store, "val", k=k)
    expected_d, expected_u = np.zeros(40), np.zeros(40)
    for member in range(2):  # member m's embeddings are shifted by m: the same distances
        reference = store.embeddings("train", member, 1).astype(np.float32)
        queries = store.embeddings("val", member, 1).astype(np.float32)
        distances = np.sqrt(((queries[:, None, :] - reference[None]) ** 2).sum(-1))
        for i in range(40):
            order = np.argsort(distances[i], kind="stable")[:k]
            guess = store.final_predictions("val").ensemble_argmax[i]
            other = train_labels[order] != guess
            expected_d[i] += other.mean() / 2
            d_pred = distances[i][train_labels == guess].min()
            d_other = distances[i][order][other].min() if other.any() else distances[i][order][-1]
            expected_u[i] += d_pred / (d_pred + d_other) / 2
    np.testing.assert_allclose(found.knn_disagreement, expected_d)
    np.testing.assert_allclose(found.untrust, expected_u, atol=1e-5)
    cached = neighbourhood(store, "val", k=k)  # from RUN/cache/
    np.testing.assert_array_equal(cached.untrust, found.untrust)
    assert list((tmp_path / "run/cache").glob("neighbours-*.npz"))


def test_neighbourhood_needs_embeddings_and_says_how_to_get_them(tmp_path):
    Recorder.create(tmp_path / "run", n_classes=2, members=1, splits={"train": np.zeros(4, int), "val": np.zeros(3, int)})
    with Recorder.open(tmp_path / "run").member(0) as writer:
        for split, n in (("train", 4), ("val", 3)):
            writer.log(split, 1, onehot_probs(np.zeros(n, int), 2))
        writer.end_epoch(1)
    store = RunStore.open(tmp_path / "run")
    with pytest.raises(InputError) as caught:
        neighbourhood(store, "val")
    assert str(caught.value) == (
        f"{store.path} keeps no embeddings of split 'val' and a train split; the neighbourhood scores need them "
        "(record with `confusion train --embeddings last`, or a writer's log_embeddings)"
    )
    from confusion.views import view_scores

    with pytest.raises(InputError) as caught:
        view_scores(store, "val")
    assert str(caught.value) == (
        f"{store.path} keeps no test-time views of split 'val' at its last epoch; the view scores need them "
        "(record with `confusion train --views auto` on images, or a writer's log_views)"
    )
    table = difficulty_scores(store, "val")  # every score: the neighbourhood ones empty, and why
    assert table["knn_disagreement"].isna().all() and table["untrust"].isna().all()
    assert any("keeps no embeddings" in note for note in table.attrs["notes"])
    with pytest.raises(InputError, match="--embeddings last"):
        difficulty_scores(store, "val", names=["untrust"])


# ----------------------------------------------------------------------------- combined
def test_combined_is_cross_fitted_by_sample_id():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 3))
    errors = x[:, 0] + rng.normal(scale=0.5, size=400) > 0.8
    ids = np.array([f"s{i}" for i in range(400)])
    fit = fit_combined(x, errors, ids, ["a", "b", "c"], folds=4)
    from sklearn.linear_model import LogisticRegression

    fold = folds_of(ids, 4)
    z = (x - x.mean(0)) / x.std(0)
    scored = fit.apply(x, ids, calibration=True)
    for f in range(4):  # each calibration sample is scored by the fit that did not see it
        model = LogisticRegression(max_iter=2000).fit(z[fold != f], errors[fold != f])
        np.testing.assert_allclose(scored[fold == f], model.decision_function(z[fold == f]), atol=1e-6)
    whole = LogisticRegression(max_iter=2000).fit(z, errors)
    np.testing.assert_allclose(fit.apply(x, ids, calibration=False), whole.decision_function(z), atol=1e-6)
    assert fit.coef[0] > 1 and abs(fit.coef[1]) < 0.5 and 0.8 < fit.cross_fitted_auroc < 1
    assert not np.allclose(scored, fit.apply(x, ids, calibration=False))


def test_combined_needs_errors_in_every_fold():
    with pytest.raises(InputError, match="errors and correct predictions in every fold"):
        fit_combined(np.ones((20, 1)), np.zeros(20, bool), np.arange(20).astype(str), ["a"], folds=5)


def signal_run(tmp_path, n_train=200, n_val=300, n_pool=50):
    """A run whose val errors sit where the train neighbourhood disagrees: combined should see them."""
    rng = np.random.default_rng(3)
    train_x = rng.normal(size=(n_train, 2))
    train_y = (train_x[:, 0] > 0).astype(int)
    val_x, pool_x = rng.normal(size=(n_val, 2)), rng.normal(size=(n_pool, 2))
    val_y = (val_x[:, 0] > 0).astype(int)
    guess = lambda x: ((x[:, 0] + 0.6 * x[:, 1]) > 0).astype(int)  # noqa: E731 - a tilted, imperfect boundary
    return record(
        tmp_path / "run",
        {"train": train_y, "val": val_y, "pool": np.full(n_pool, -1)},
        {"train": guess(train_x), "val": guess(val_x), "pool": guess(pool_x)},
        {"train": train_x, "val": val_x, "pool": pool_x},
        members=2,
        epochs=(1, 2),
        embed_epochs=(2,),
    )


def test_combined_scores_an_unlabeled_split_from_a_fit_on_val_kept_as_json(tmp_path):
    store = signal_run(tmp_path)
    table = difficulty_scores(store, "pool")
    assert table["combined"].notna().all() and table["knn_disagreement"].notna().all()
    kept = json.loads((tmp_path / "run/combined.json").read_text())
    assert kept["calibration"] == "val" and kept["target"] == "ensemble" and kept["recorded_epochs"] == [1, 2]
    assert "knn_disagreement" in kept["features"] and kept["cross_fitted_auroc"] > 0.8
    fit = CombinedFit.load(tmp_path / "run")
    val = difficulty_scores(store, "val")
    val_errors = store.final_predictions("val").ensemble_argmax != store.labels("val")
    from confusion.analyses import auroc

    assert auroc(val["combined"].to_numpy(), val_errors) == pytest.approx(fit.cross_fitted_auroc)
    assert SCORES["combined"].needs_labels is False  # a hard set may be chosen by it


def test_combined_fitted_to_another_runs_errors(tmp_path):
    store = signal_run(tmp_path)
    other = tmp_path / "other"
    labels = store.labels("val")
    Recorder.create(other, n_classes=2, members=1, splits={"val": labels}, ids={"val": store.sample_ids("val")})
    with Recorder.open(other).member(0) as writer:
        writer.log("val", 1, onehot_probs(1 - labels, 2)[::-1].copy())
        writer.end_epoch(1)
    fit = fit_combined_run(store, target=str(other), folds=3)
    assert fit.target == str(other.resolve()) and fit.folds == 3
    assert CombinedFit.load(tmp_path / "run").target == fit.target
    Recorder.create(tmp_path / "few", n_classes=2, members=1, splits={"val": labels[:10]}, ids={"val": store.sample_ids("val")[:10]})
    with Recorder.open(tmp_path / "few").member(0) as writer:
        writer.log("val", 1, onehot_probs(labels[:10], 2))
        writer.end_epoch(1)
    with pytest.raises(InputError, match="lacks 290 samples of split 'val'"):
        fit_combined_run(store, target=str(tmp_path / "few"))


def test_a_damaged_combined_json_is_one_line(tmp_path):
    store = signal_run(tmp_path)
    fit_combined_run(store)
    path = tmp_path / "run/combined.json"
    data = json.loads(path.read_text())
    data["coef"] = data["coef"][:-1]
    path.write_text(json.dumps(data))
    with pytest.raises(RunStoreError, match="combined.json is damaged"):
        difficulty_scores(store, "pool", names=["combined"])


def test_difficulty_and_combine_commands(tmp_path, cli):
    signal_run(tmp_path)
    done = cli("difficulty", tmp_path / "run", "--out", tmp_path / "t.csv", "--split", "pool")
    assert done.exit_code == 0, done.stderr
    assert "knn_disagree" in done.stdout and "combined" in done.stdout
    import pandas as pd

    table = pd.read_csv(tmp_path / "t.csv")
    assert table["combined"].notna().all() and len(table) == 50
    done = cli("combine", tmp_path / "run", "--folds", 3, "--calibration", "val")
    assert done.exit_code == 0, done.stderr
    assert "cross-fitted AUROC" in done.stdout + done.stderr
    for args, message in [
        (("--folds", 1), "--folds must be a whole number from 2 to 50"),
        (("--k", 0), "--k must be a whole number of neighbours"),
        (("--calibration", "nope"), "--calibration must be a split of"),
        (("--target", tmp_path / "missing"), "missing"),
    ]:
        done = cli("combine", tmp_path / "run", *args)
        assert done.exit_code == 2 and done.stderr.count("\n") == 1 and message in done.stderr, (args, done.stderr)
    done = cli("difficulty", tmp_path / "run", "--out", tmp_path / "u.csv", "--k", 5000)
    assert done.exit_code == 2 and "--k must be" in done.stderr and not (tmp_path / "u.csv").exists()


# ----------------------------------------------------------------------------- ceiling
def test_the_ceiling_by_hand():
    # 4 samples; the reference's final ensemble predicts class 1 with 0.95 on samples 0 and 1,
    # 0.6 on 2 and 3. The model (one member) errs on 0 (predicting 1: shared and confident), on 2
    # (predicting 1, but the reference is unsure) and not on 1 and 3.
    reference = FinalPredictions(
        argmax=np.array([[1, 1, 1, 1]]),
        entropy=np.zeros((1, 4)),
        top1=np.array([[0.95, 0.95, 0.6, 0.6]]),
        ensemble_argmax=np.array([1, 1, 1, 1]),
        ensemble_top1=np.array([0.95, 0.95, 0.6, 0.6]),
    )
    model = FinalPredictions(np.array([[1, 0, 1, 1]]), np.zeros((1, 4)), np.ones((1, 4)), np.array([1, 0, 1, 1]))
    labels = np.array([0, 0, 0, 1])
    confusion = np.array([0.1, 0.2, 0.5, 0.4])
    found = error_ceiling(confusion, reference, model, labels, threshold=0.9)
    assert found["shared_confident_error_share"] == 0.5 and found["n_errors"] == 2
    # The ceiling ranks error 2 first, then keeps confusion's order: 3 (0.4), 1 (0.2), 0 (0.1).
    # Errors {2, 0} against correct {3, 1}: 2 beats both, 0 beats neither -> AUROC 0.5.
    assert found["auroc_ceiling"] == 0.5
    assert error_ceiling(confusion, reference, model, labels, threshold=0.99)["shared_confident_error_share"] == 0.0
    with pytest.raises(InputError, match="threshold"):
        error_ceiling(confusion, reference, model, labels, threshold=1.0)


# ----------------------------------------------------------------------------- views
def test_view_scores_by_hand(tmp_path):
    # 2 members, 2 samples, 2 classes, 2 views. Member 0 predicts class 0 on both samples; its
    # views of sample 0 agree (0.8, 0.6 on class 0), of sample 1 one flips (0.3 on class 0).
    # Member 1 predicts class 1 on sample 0 and its views both say class 0 (0.6, 0.6).
    plain = [np.array([[0.9, 0.1], [0.7, 0.3]]), np.array([[0.4, 0.6], [0.8, 0.2]])]
    views = [
        np.array([[[0.8, 0.2], [0.6, 0.4]], [[0.7, 0.3], [0.3, 0.7]]]),
        np.array([[[0.6, 0.4], [0.6, 0.4]], [[0.9, 0.1], [0.9, 0.1]]]),
    ]
    Recorder.create(tmp_path / "run", n_classes=2, members=2, splits={"val": np.array([-1, -1])})
    for member in range(2):
        with Recorder.open(tmp_path / "run").member(member) as writer:
            writer.log("val", 1, plain[member])
            writer.log_views("val", 1, views[member])
            writer.end_epoch(1)
    from confusion.views import view_scores

    found = view_scores(RunStore.open(tmp_path / "run"), "val")
    # Sample 0: member 0 none of 2 views disagree, member 1 both -> 0.5. Sample 1: 1 of 4 -> 0.25.
    np.testing.assert_allclose(found.view_disagreement, [0.5, 0.25])
    average = np.array([(0.8 + 0.6 + 0.6 + 0.6) / 4, (0.7 + 0.3 + 0.9 + 0.9) / 4])
    expected = -(average * np.log2(average) + (1 - average) * np.log2(1 - average))
    np.testing.assert_allclose(found.view_confusion, expected, atol=2e-3)  # float16 storage


def test_views_are_refused_in_one_line(tmp_path):
    Recorder.create(tmp_path / "run", n_classes=2, members=1, splits={"val": np.zeros(3, int)})
    with Recorder.open(tmp_path / "run").member(0) as writer:
        with pytest.raises(InputError, match=r"view outputs must be \(batch, views, 2\)"):
            writer.log_views("val", 1, np.full((3, 2), 0.5))
        with pytest.raises(InputError, match="sum"):
            writer.log_views("val", 1, np.full((3, 2, 2), 0.9))
        writer.log_views("val", 1, np.zeros((3, 1, 2)), logits=True)
        writer.log("val", 1, np.full((3, 2), 0.5))
        writer.end_epoch(1)
    store = RunStore.open(tmp_path / "run")
    assert store.view_epochs(["val"]) == [1] and store.views("val", 0, 1).shape == (3, 1, 2)


@needs_torch
def test_the_trainer_records_embeddings_and_views_at_the_last_epoch(tmp_path, cli):
    result = cli("train", "--data", "digits", "--members", "2", "--epochs", "2", "--limit-train", "300", "--workers", "0", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    store = RunStore.open(tmp_path / "run")
    assert store.embedding_epochs(["train", "val"]) == [2] and store.view_epochs(["train", "val"]) == [2]
    assert store.embeddings("val", 1, 2).shape == (store.n_samples("val"), DIMS)  # cnn-s: 32 x 2 x 2 = 128 wide, on 64 axes
    assert store.views("val", 0, 2).shape == (store.n_samples("val"), 4, 10)  # digits: no flip (it changes the digit)
    table = difficulty_scores(store, "val")
    for name in ("knn_disagreement", "untrust", "view_disagreement", "view_confusion", "combined"):
        assert table[name].notna().all(), name
    result = cli(
        "train", "--data", "digits", "--members", "1", "--epochs", "1", "--limit-train", "300", "--embeddings", "none", "--out", tmp_path / "plain"
    )
    assert result.exit_code == 0 and not (tmp_path / "plain/penultimate").exists() and not (tmp_path / "plain/views").exists()
    result = cli("train", "--data", "digits", "--views", "flip,tilt", "--out", tmp_path / "bad")
    assert result.exit_code == 2 and "--views must be auto, none or a list of" in result.stderr and not (tmp_path / "bad").exists()


def test_every_report_puts_the_ceiling_per_model(tmp_path, cli):
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 400)
    Recorder.create(tmp_path / "run", n_classes=3, members=2, splits={"val": labels})
    Recorder.create(tmp_path / "other", n_classes=3, members=1, splits={"val": labels})
    for member in range(2):
        with Recorder.open(tmp_path / "run").member(member) as writer:
            for epoch in (1, 2):
                writer.log("val", epoch, rng.dirichlet(np.full(3, 0.3), 400))
                writer.end_epoch(epoch)
    with Recorder.open(tmp_path / "other").member(0) as writer:
        writer.log("val", 1, rng.dirichlet(np.full(3, 0.5), 400))
        writer.end_epoch(1)
    result = cli("report", tmp_path / "run", "--models", tmp_path / "other", "--out", tmp_path / "report", "--ceiling-threshold", "0.8")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((tmp_path / "report/metrics.json").read_text())
    (name,) = metrics["models"]
    ceiling = metrics["models"][name]["ceiling"]
    assert ceiling["threshold"] == 0.8 and 0 < ceiling["shared_confident_error_share"] < 1
    assert metrics["models"][name]["auroc_error"] < ceiling["auroc_ceiling"] <= 1
    store, other = RunStore.open(tmp_path / "run"), RunStore.open(tmp_path / "other")
    from confusion.runscores import score_run

    expected = error_ceiling(score_run(store, "val").confusion, store.final_predictions("val"), other.final_predictions("val"), labels, threshold=0.8)
    assert ceiling == pytest.approx(expected)
    assert "shared confident error share" in (tmp_path / "report/index.html").read_text()


# ----------------------------------------------------------------------------- combined, kept and refitted
def test_combined_is_fitted_on_every_labelled_sample_with_the_settings_asked_for_and_kept(tmp_path, monkeypatch):
    store = signal_run(tmp_path)
    labels = store.labels("val")
    assert (labels == 0).any()
    fit = fit_combined_run(store, folds=3, k=3)
    table = difficulty_scores(store, "val", names=fit.features, k=3)
    features = table[fit.features].to_numpy()[labels >= 0]  # class 0 counts as a label
    np.testing.assert_allclose(fit.mean, features.mean(axis=0), rtol=1e-12)
    assert fit.calibration == "val" and fit.target == "ensemble" and fit.folds == 3 and fit.extra == {"k": 3}
    assert fit.recorded_epochs == store.recorded_epochs == [1, 2]
    assert CombinedFit.load(tmp_path / "run") == fit

    def refused(self, run):
        raise OSError("read-only")

    monkeypatch.setattr(CombinedFit, "save", refused)
    assert fit_combined_run(store, folds=3, k=3) == fit  # a read-only run is still scored


def test_combined_needs_two_labelled_samples_per_fold(tmp_path):
    from confusion.combined import folds_of
    from confusion.importing import import_predictions

    candidates = np.array([f"s{i}" for i in range(40)])
    fold = folds_of(candidates, 2)
    ids = np.concatenate([candidates[fold == 0][:2], candidates[fold == 1][:2], candidates[:4]])  # 4 labelled, then 4 not
    ids = np.concatenate([ids[:4], [f"u{i}" for i in range(4)]])
    labels = np.array([0, 1, 0, 1, -1, -1, -1, -1])
    predicted = np.array([0, 0, 0, 0, 1, 1, 1, 1])  # one error and one right in each fold
    probs = np.stack([onehot_probs(predicted, 2, sharp=s) for s in (0.9, 0.7)])[:, None]  # 2 members, 1 epoch
    import_predictions(probs, tmp_path / "run", labels=labels, sample_ids=list(ids))
    fit = fit_combined_run(RunStore.open(tmp_path / "run"), folds=2, save=False)
    assert fit.features == ["confusion"] and not (tmp_path / "run/combined.json").exists()
    labels[3] = -1
    import_predictions(probs, tmp_path / "three", labels=labels, sample_ids=list(ids))
    with pytest.raises(InputError) as caught:
        fit_combined_run(RunStore.open(tmp_path / "three"), folds=2)
    assert str(caught.value) == "combined is fitted on the labels of split 'val', and it has 3 labelled samples"


def test_combined_values_use_the_kept_fit_and_refit_a_stale_one_as_it_was_fitted(tmp_path, monkeypatch):
    import confusion.difficulty as difficulty
    from confusion.difficulty import combined_values

    store = signal_run(tmp_path)
    other = tmp_path / "other"
    labels = store.labels("val")
    Recorder.create(other, n_classes=2, members=1, splits={"val": labels}, ids={"val": store.sample_ids("val")})
    with Recorder.open(other).member(0) as writer:
        writer.log("val", 1, onehot_probs(np.where(np.arange(len(labels)) % 4 == 0, 1 - labels, labels), 2))
        writer.end_epoch(1)
    fit = fit_combined_run(store, folds=3, k=4, target=other)
    table = difficulty_scores(store, "val", names=fit.features, k=4)
    features = table[fit.features].to_numpy()
    ids = store.sample_ids("val")
    fitting = []
    refit = difficulty.fit_combined_run
    monkeypatch.setattr(difficulty, "fit_combined_run", lambda *args, **kwargs: fitting.append(kwargs) or refit(*args, **kwargs))
    crossed = combined_values(store, "val")  # the kept fit, cross-fitted on its own calibration split
    np.testing.assert_allclose(crossed, fit.apply(features, ids, calibration=True), rtol=1e-12)
    assert not np.allclose(crossed, fit.apply(features, ids, calibration=False)) and fitting == []
    pool = difficulty_scores(store, "pool", names=fit.features, k=4)
    np.testing.assert_allclose(
        combined_values(store, "pool"), fit.apply(pool[fit.features].to_numpy(), store.sample_ids("pool"), calibration=False), rtol=1e-12
    )
    computing = []
    monkeypatch.setattr(difficulty, "difficulty_scores", lambda *args, **kwargs: computing.append(kwargs) or [][0])
    known = {name: table[name].to_numpy() for name in fit.features}
    np.testing.assert_array_equal(combined_values(store, "val", known=known), crossed)  # nothing recomputed
    assert computing == []
    monkeypatch.undo()
    monkeypatch.setattr(difficulty, "fit_combined_run", lambda *args, **kwargs: fitting.append(kwargs) or refit(*args, **kwargs))

    path = tmp_path / "run/combined.json"
    kept = json.loads(path.read_text())
    assert len(kept["features"]) == 2
    for stale in ({"recorded_epochs": [1]}, {"features": kept["features"][::-1]}):
        path.write_text(json.dumps({**kept, **stale}))
        fitting.clear()
        np.testing.assert_allclose(combined_values(store, "val"), crossed, rtol=1e-12)  # refitted as it was
        assert fitting == [{"calibration": "val", "folds": 3, "target": str(other.resolve()), "k": 4}]
        assert json.loads(path.read_text()) == kept
    import shutil

    shutil.rmtree(other)  # the target run is gone: the refit predicts the run's own errors
    path.write_text(json.dumps({**kept, "recorded_epochs": [1]}))
    fitting.clear()
    combined_values(store, "val", k=7)
    assert fitting == [{"calibration": "val", "folds": 3, "target": "ensemble", "k": 4}]
    path.unlink()  # no fit kept: the defaults, with the k asked for
    fitting.clear()
    combined_values(store, "val", k=7)
    assert fitting == [{"k": 7}] and CombinedFit.load(tmp_path / "run").extra == {"k": 7}


def test_combined_reads_the_views_where_the_run_keeps_them_and_a_named_combined_is_refused_without_labels(tmp_path):
    from confusion.difficulty import combined_features, label_free_score

    rng = np.random.default_rng(9)
    labels = rng.integers(0, 3, 40)
    Recorder.create(tmp_path / "run", n_classes=3, members=2, splits={"val": labels})
    for member in range(2):
        with Recorder.open(tmp_path / "run").member(member) as writer:
            writer.log("val", 1, rng.dirichlet(np.ones(3), size=40))
            writer.log_views("val", 1, rng.dirichlet(np.ones(3), size=(40, 2)))
            writer.end_epoch(1)
    store = RunStore.open(tmp_path / "run")
    assert combined_features(store, "val") == ["confusion", "view_confusion"]  # no train split: no neighbours
    unlabeled = tmp_path / "unlabeled"
    Recorder.create(unlabeled, n_classes=3, members=1, splits={"val": 40})
    with Recorder.open(unlabeled).member(0) as writer:
        writer.log("val", 1, rng.dirichlet(np.ones(3), size=40))
        writer.end_epoch(1)
    with pytest.raises(InputError) as caught:  # asked for by name, not a column of NaN
        label_free_score(RunStore.open(unlabeled), "val", "combined")
    assert str(caught.value) == "combined is fitted on the labels of split 'val', and it has 0 labelled samples"


def test_the_kept_signals_reach_the_table_with_the_k_asked_for(tmp_path):
    from confusion.views import view_scores

    store = signal_run(tmp_path)
    table = difficulty_scores(store, "val", k=3)
    np.testing.assert_array_equal(table["knn_disagreement"].to_numpy(), neighbourhood(store, "val", k=3).knn_disagreement)
    assert CombinedFit.load(tmp_path / "run").extra == {"k": 3}  # fitted now, with the k asked for
    rng = np.random.default_rng(10)
    labels = rng.integers(0, 3, 40)
    Recorder.create(tmp_path / "views", n_classes=3, members=2, splits={"val": labels, "pool": 30})
    for member in range(2):
        with Recorder.open(tmp_path / "views").member(member) as writer:
            for split, n in (("val", 40), ("pool", 30)):
                writer.log(split, 1, rng.dirichlet(np.ones(3), size=n))
                writer.log_views(split, 1, rng.dirichlet(np.ones(3), size=(n, 2)))
            writer.end_epoch(1)
    views = RunStore.open(tmp_path / "views")
    found = view_scores(views, "val")
    table = difficulty_scores(views, "val")
    np.testing.assert_array_equal(table["view_confusion"].to_numpy(), found.view_confusion)
    np.testing.assert_array_equal(table["view_disagreement"].to_numpy(), found.view_disagreement)
    alone = difficulty_scores(views, "val", names=["view_confusion"])  # no neighbourhood score asked for
    np.testing.assert_array_equal(alone["view_confusion"].to_numpy(), found.view_confusion)
    from confusion.errors import ParameterError

    with pytest.raises(ParameterError) as caught:
        fit_combined_run(views, calibration="test")
    assert str(caught.value) == f"calibration must be a split of {views.path} (val, pool), got 'test'"


def test_combined_is_fitted_on_the_calibration_split_named_and_a_fit_without_k_takes_the_one_asked_for(tmp_path, monkeypatch):
    import confusion.difficulty as difficulty
    from confusion.difficulty import combined_values

    store = signal_run(tmp_path)
    rng = np.random.default_rng(11)
    other = tmp_path / "other"
    labels = store.labels("val")
    Recorder.create(other, n_classes=2, members=1, splits={"check": labels}, ids={"check": store.sample_ids("val")})
    with Recorder.open(other).member(0) as writer:
        writer.log("check", 1, onehot_probs(np.where(rng.random(len(labels)) < 0.2, 1 - labels, labels), 2))
        writer.end_epoch(1)
    fit = fit_combined_run(RunStore.open(other), calibration="check", folds=2, save=False)
    assert fit.calibration == "check"
    path = tmp_path / "run/combined.json"
    fit_combined_run(store, k=4)
    kept = json.loads(path.read_text())
    path.write_text(json.dumps({**kept, "extra": {}}))  # a fit kept without its k
    fitted = CombinedFit.load(tmp_path / "run")
    pool = difficulty_scores(store, "pool", names=fitted.features, k=5)
    np.testing.assert_allclose(
        combined_values(store, "pool", k=5), fitted.apply(pool[fitted.features].to_numpy(), store.sample_ids("pool"), calibration=False), rtol=1e-12
    )
    fitting = []
    refit = difficulty.fit_combined_run
    monkeypatch.setattr(difficulty, "fit_combined_run", lambda *args, **kwargs: fitting.append(kwargs) or refit(*args, **kwargs))
    path.write_text(json.dumps({**kept, "extra": {}, "recorded_epochs": [1]}))  # and stale
    combined_values(store, "val", k=6)
    assert fitting == [{"calibration": "val", "folds": len(kept["fold_coef"]), "target": "ensemble", "k": 6}]


# ----------------------------------------------------------------------------- --keep reduced
def twin_runs(tmp_path, embed_epochs=(2,)):
    """The same rows recorded raw and `--keep reduced`: 2 members x 2 epochs, embeddings and views
    (at `embed_epochs`) of a labelled train and val and an unlabeled pool."""
    rng = np.random.default_rng(12)
    sizes, n_classes = {"train": 80, "val": 50, "pool": 30}, 3
    labels = {"train": rng.integers(0, 3, 80), "val": rng.integers(0, 3, 50), "pool": np.full(30, -1)}
    rows = {
        (member, epoch, split): (
            rng.dirichlet(np.ones(3), size=n),
            rng.normal(size=(n, 5)).astype(np.float32),
            rng.dirichlet(np.ones(3), size=(n, 2)),
        )
        for member in range(2)
        for epoch in (1, 2)
        for split, n in sizes.items()
    }
    for keep in ("raw", "reduced"):
        Recorder.create(tmp_path / keep, n_classes=n_classes, members=2, splits=labels, keep=keep)
        for member in range(2):
            with Recorder.open(tmp_path / keep).member(member) as writer:
                for epoch in (1, 2):
                    for split in sizes:
                        probs, embedding, views = rows[member, epoch, split]
                        writer.log(split, epoch, probs)
                        if epoch in embed_epochs:
                            writer.log_embeddings(split, epoch, embedding)
                            writer.log_views(split, epoch, views)
                    writer.end_epoch(epoch)
    return RunStore.open(tmp_path / "raw"), RunStore.open(tmp_path / "reduced")


def test_a_reduced_run_keeps_the_neighbourhood_and_view_scores_not_the_embeddings_and_views(tmp_path):
    raw, kept = twin_runs(tmp_path)
    assert not list((tmp_path / "reduced").glob("penultimate/member-*/epoch-*")) and not list((tmp_path / "reduced").glob("views/member-*/epoch-*"))
    assert sorted(p.name for p in (tmp_path / "reduced/signals/epoch-2").iterdir()) == [
        f"{split}.{kind}.npz" for split in ("pool", "train", "val") for kind in ("neighbours", "views")
    ]
    assert len(list((tmp_path / "raw").glob("penultimate/member-*/epoch-2/*.npy"))) == 6  # a raw run keeps them
    columns = ["knn_disagreement", "untrust", "view_disagreement", "view_confusion"]
    for split in ("train", "val", "pool"):
        assert kept.signal_epochs(split, "neighbours") == [2]
        expected, found = difficulty_scores(raw, split, k=15), difficulty_scores(kept, split, k=15)
        for column in columns:  # the same kernels on the same rows, and the same arg-max
            np.testing.assert_array_equal(found[column].to_numpy(), expected[column].to_numpy(), err_msg=f"{split} {column}")
        np.testing.assert_allclose(found["combined"].to_numpy(), expected["combined"].to_numpy(), atol=1e-6)
    with pytest.raises(InputError) as caught:  # only k = 15 is kept
        difficulty_scores(kept, "val", k=3)
    assert str(caught.value) == (
        f"{kept.path} was recorded with --keep reduced, which keeps the neighbourhood scores at k = 15 instead of the embeddings; "
        "k = 3 needs them (record with --keep raw)"
    )


def test_a_reduced_runs_neighbourhood_scores_compare_with_the_ensemble_of_their_own_epoch(tmp_path):
    raw, kept = twin_runs(tmp_path, embed_epochs=(1,))
    assert kept.signal_epochs("val", "neighbours") == [1] and kept.signal_epochs("val", "views") == [1]
    from confusion.signalmath import member_neighbourhood
    from confusion.views import view_epoch

    assert view_epoch(kept, "val") is None and view_epoch(raw, "val") is None  # views of an earlier epoch are not read
    found = neighbourhood(kept, "val")
    assert found.epoch == 1
    # By hand from the raw run's embeddings at epoch 1 and the ensemble's arg-max *at epoch 1*.
    at_one = raw.probs("val")[:, 0].astype(np.float64).mean(axis=0).argmax(axis=1)
    labels = raw.labels("train")
    expected = np.zeros((2, 50))
    for member in range(2):
        reference = raw.embeddings("train", member, 1).astype(np.float32)
        expected += np.array(member_neighbourhood(reference, labels, raw.embeddings("val", member, 1), at_one, 15)) / 2
    np.testing.assert_array_equal(found.knn_disagreement, expected[0])
    np.testing.assert_array_equal(found.untrust, expected[1])


def test_replacing_a_split_drops_what_was_kept_of_its_old_samples(tmp_path, cli):
    raw, kept = twin_runs(tmp_path)
    probs = np.random.default_rng(13).dirichlet(np.ones(3), size=(2, 2, 30)).astype(np.float32)
    np.save(tmp_path / "pool.npy", probs)
    for run in ("raw", "reduced"):
        result = cli("import", "--probs", tmp_path / "pool.npy", "--split", "pool", "--overwrite", "--out", tmp_path / run)
        assert result.exit_code == 0, result.stderr
    assert RunStore.open(tmp_path / "raw").embedding_epochs(["pool"]) == [] and RunStore.open(tmp_path / "raw").view_epochs(["pool"]) == []
    kept = RunStore.open(tmp_path / "reduced")
    assert kept.signal_epochs("pool", "neighbours") == [] and kept.signal_epochs("pool", "views") == []
    assert kept.signal_epochs("val", "neighbours") == [2]  # the other splits keep theirs
    with pytest.raises(InputError, match=r"keeps no embeddings of split 'pool' and a train split, nor their neighbourhood scores \(--keep reduced\)"):
        neighbourhood(kept, "pool")
    table = difficulty_scores(kept, "pool")
    assert table["knn_disagreement"].isna().all() and table["confusion"].notna().all()
    # A replaced train split takes every split's neighbourhood scores with it: they were its samples'.
    np.save(tmp_path / "train.npy", np.random.default_rng(14).dirichlet(np.ones(3), size=(2, 2, 80)).astype(np.float32))
    np.save(tmp_path / "train-labels.npy", kept.labels("train"))
    result = cli(
        "import",
        "--probs",
        tmp_path / "train.npy",
        "--labels",
        tmp_path / "train-labels.npy",
        "--split",
        "train",
        "--overwrite",
        "--out",
        tmp_path / "reduced",
    )
    assert result.exit_code == 0, result.stderr
    kept = RunStore.open(tmp_path / "reduced")
    assert kept.signal_epochs("val", "neighbours") == [] and kept.signal_epochs("val", "views") == [2]


def test_a_damaged_kept_signal_file_is_one_line(tmp_path):
    _, kept = twin_runs(tmp_path)
    (tmp_path / "reduced/signals/epoch-2/val.views.npz").write_bytes(b"not numpy")
    with pytest.raises(RunStoreError, match=r"val.views.npz is damaged \(.*\); the epoch's views scores are lost"):
        kept.signals("val", "views", 2)
    from confusion._files import write_npz_atomic

    write_npz_atomic(tmp_path / "reduced/signals/epoch-2/val.neighbours.npz", knn_disagreement=np.full(50, 1.5), untrust=np.zeros(50), k=np.int64(15))
    with pytest.raises(RunStoreError, match=r"holds a damaged knn_disagreement \(float64 \(50,\), for 50 samples\)"):
        neighbourhood(kept, "val")


def test_another_k_on_a_reduced_run_is_refused_before_any_work(tmp_path, cli):
    twin_runs(tmp_path)
    for command in (["difficulty", tmp_path / "reduced", "--k", 3, "--out", tmp_path / "table.csv"], ["combine", tmp_path / "reduced", "--k", 3]):
        result = cli(*command)
        assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
            f"confusion: error: {tmp_path / 'reduced'} was recorded with --keep reduced, which keeps the neighbourhood scores at k = 15 "
            "instead of the embeddings; k = 3 needs them (record with --keep raw)"
        ]
    assert not (tmp_path / "table.csv").exists() and not (tmp_path / "reduced/combined.json").exists()
    assert cli("difficulty", tmp_path / "raw", "--k", 3, "--out", tmp_path / "table.csv").exit_code == 0  # a raw run keeps the embeddings


def test_a_combined_fitted_on_few_errors_says_so(tmp_path):
    raw, _ = twin_runs(tmp_path)
    table = difficulty_scores(raw, "pool")
    fit = CombinedFit.load(tmp_path / "raw")
    assert fit.n_calibration == 50 and 0 < fit.n_errors < 50
    assert (
        f"combined: fitted on {fit.n_errors} errors among 50 samples of 'val'; under 50 its order is unstable and confusion is the safer score"
        in table.attrs["notes"]
    )
    many = signal_run(tmp_path / "many", n_val=600)
    notes = difficulty_scores(many, "val").attrs["notes"]
    assert CombinedFit.load(tmp_path / "many/run").n_errors >= 50 and not any("errors among" in note for note in notes)


def test_the_few_errors_note_starts_below_50_errors(monkeypatch):
    from types import SimpleNamespace

    import confusion.difficulty as difficulty

    store = SimpleNamespace(path="run")
    for errors, expected in ((49, 1), (50, 0)):
        fit = SimpleNamespace(n_errors=errors, n_calibration=400, calibration="val")
        monkeypatch.setattr(difficulty.CombinedFit, "load", staticmethod(lambda path, fit=fit: fit))
        assert len(difficulty.few_errors_note(store)) == expected
    monkeypatch.setattr(difficulty.CombinedFit, "load", staticmethod(lambda path: None))
    assert difficulty.few_errors_note(store) == []
