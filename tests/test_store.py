"""The run store: round trips, committed epochs, the writer lock, import."""

import json

import numpy as np
import pytest

from confusion.errors import InputError, RunLockedError, RunStoreError
from confusion.importing import import_predictions
from confusion.runscores import score_run
from confusion.scores import confusion_scores
from confusion.store import RunStore, SplitData, hold_lock

from .conftest import needs_torch


def test_import_round_trip(tmp_path, probs_file):
    path, labels_path, probs, labels = probs_file
    store = import_predictions(path, tmp_path / "run", labels=labels_path, split="val")
    again = RunStore.open(tmp_path / "run")
    assert again.splits == ["val"] and again.recorded_epochs == [1, 2, 3, 4]
    stored = again.probs("val")
    assert stored.dtype == np.float16 and stored.shape == probs.shape
    assert stored.chunks[0] == 1 and stored.chunks[1] == 1  # one member, one epoch per chunk
    np.testing.assert_array_equal(stored[:], probs.astype(np.float16))
    np.testing.assert_array_equal(again.labels("val"), labels)
    assert again.sample_ids("val")[:3].tolist() == ["0", "1", "2"]
    scored = score_run(again, "val").confusion
    np.testing.assert_allclose(scored, confusion_scores(probs.astype(np.float16).astype(np.float64)).confusion, atol=1e-5)
    np.testing.assert_allclose(scored, confusion_scores(probs).confusion, atol=2e-3)
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["source"] == "import" and meta["n_classes"] == 10 and "zarr" in meta["versions"]
    assert store.path == tmp_path / "run"


def test_adding_an_unlabeled_split(tmp_path, probs_file):
    path, labels_path, probs, _ = probs_file
    import_predictions(path, tmp_path / "run", labels=labels_path, split="val")
    import_predictions(probs[:, :, :50], tmp_path / "run", split="pool")
    store = RunStore.open(tmp_path / "run")
    assert store.splits == ["val", "pool"]
    assert (store.labels("pool") == -1).all()
    with pytest.raises(InputError, match="3 members x 4 epochs x 10 classes"):
        import_predictions(probs[:2], tmp_path / "run", split="other")
    with pytest.raises(RunStoreError, match="already has a split"):
        import_predictions(probs, tmp_path / "run", split="val")


def test_failed_import_leaves_nothing(tmp_path):
    probs = np.full((2, 2, 10, 4), 0.25, np.float32)
    probs[1, 1, 9, 0] = np.nan
    with pytest.raises(InputError, match="member 1, epoch 1, sample 9"):
        import_predictions(probs, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_failed_added_split_is_never_listed_and_can_be_retried(tmp_path, probs_file):
    path, _, probs, _ = probs_file
    import_predictions(path, tmp_path / "run", split="val")
    bad = probs[:, :, :50].copy()
    bad[2, 3, 49, 0] = np.nan  # found only after most of the split was written
    with pytest.raises(InputError, match="member 2, epoch 3, sample 49"):
        import_predictions(bad, tmp_path / "run", split="pool")
    store = RunStore.open(tmp_path / "run")
    assert store.splits == ["val"] and "pool" not in json.loads((tmp_path / "run" / "run.json").read_text())["splits"]
    score_run(store, "val")  # the run still scores
    import_predictions(probs[:, :, :50], tmp_path / "run", split="pool")  # the retry goes through
    np.testing.assert_allclose(score_run(RunStore.open(tmp_path / "run"), "pool").confusion, confusion_scores(probs[:, :, :50]).confusion, atol=2e-3)


@needs_torch
def test_nothing_is_written_into_a_users_folder_that_is_not_a_run(tmp_path, probs_file, cli):
    path, _, _, _ = probs_file
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(RunStoreError, match="not empty"):
        import_predictions(path, folder)
    result = cli("train", "--out", folder, "--data", "digits", "--arch", "mlp-s", "--members", "1", "--epochs", "1")
    assert result.exit_code == 2 and "not empty" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_scoring_reads_only_committed_epochs(tmp_path):
    ids = np.array(["a", "b", "c"])
    store = RunStore.create(
        tmp_path / "run",
        n_classes=2,
        members=[{"index": 0, "seed": 0}, {"index": 1, "seed": 1}],
        epoch_capacity=3,
        splits={"val": SplitData(ids=ids, labels=[0, 1, -1])},
    )
    with pytest.raises(RunStoreError, match="no committed epoch"):
        score_run(store, "val")
    with store.member_writer(0) as first, store.member_writer(1) as second:
        first.log("val", 1, np.array([[1, 0], [1, 0], [0.5, 0.5]]))
        assert first.end_epoch(1) == []  # member 1 has not ended epoch 1 yet
        second.log("val", 1, np.array([[0, 1], [1, 0], [0.5, 0.5]]))
        assert second.end_epoch(1) == [1]
        first.log("val", 2, np.array([[0.5, 0.5]] * 3))  # half-written epoch 2: not committed
    reopened = RunStore.open(tmp_path / "run")
    np.testing.assert_allclose(score_run(reopened, "val").confusion, [1.0, 0.0, 1.0], atol=1e-6)
    assert reopened.recorded_epochs == [1]
    store.ensure_capacity(5)
    assert RunStore.open(tmp_path / "run").probs("val").shape == (2, 5, 3, 2)


def test_not_a_run_store(tmp_path):
    with pytest.raises(RunStoreError, match="does not exist"):
        RunStore.open(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(RunStoreError, match="not a run store"):
        RunStore.open(tmp_path / "plain")


def test_split_data_checks():
    with pytest.raises(InputError, match="unique"):
        SplitData(ids=["a", "a"], labels=[0, 1])
    with pytest.raises(InputError, match="alike"):
        SplitData(ids=["a", "b"], labels=[0])


def test_second_writer_is_refused(tmp_path, lock_holder):
    pid = lock_holder(tmp_path / "run")
    with pytest.raises(RunLockedError, match=f"in use by process {pid}"):
        with hold_lock(tmp_path / "run"):
            pass


def test_scores_are_cached_per_selection_and_renewed_when_an_epoch_commits(tmp_path):
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.full(4, 0.5), size=(2, 3, 50))
    store = RunStore.create(
        tmp_path / "run",
        n_classes=4,
        members=[{"index": 0}, {"index": 1}],
        epoch_capacity=0,
        splits={"val": SplitData(ids=np.arange(50).astype(str), labels=np.zeros(50, int))},
    )
    writers = [store.member_writer(m) for m in range(2)]
    for epoch in (1, 2):
        for m, writer in enumerate(writers):
            writer.log("val", epoch, probs[m, epoch - 1])
            writer.end_epoch(epoch)
    first = score_run(RunStore.open(tmp_path / "run"), "val")
    assert len(list((tmp_path / "run" / "cache").glob("scores-*.npz"))) == 1
    again = score_run(RunStore.open(tmp_path / "run"), "val")  # read back from the cache, the same numbers
    np.testing.assert_array_equal(first.per_epoch, again.per_epoch)
    one = score_run(RunStore.open(tmp_path / "run"), "val", members=[0])
    np.testing.assert_allclose(one.confusion, confusion_scores(probs[:1, :2].astype(np.float16)).confusion, atol=1e-6)
    for m, writer in enumerate(writers):
        writer.log("val", 3, probs[m, 2])
        writer.end_epoch(3)
        writer.close()
    renewed = score_run(RunStore.open(tmp_path / "run"), "val")  # epoch 3 committed: not the stale cache
    np.testing.assert_allclose(renewed.confusion, confusion_scores(probs.astype(np.float16)).confusion, atol=1e-6)
    by_epoch = score_run(RunStore.open(tmp_path / "run"), "val", epochs=[3])  # training epochs, 1-based
    np.testing.assert_allclose(by_epoch.confusion, confusion_scores(probs[:, 2:].astype(np.float16)).confusion, atol=1e-6)
    with pytest.raises(InputError, match=r"epochs \[4\] are not committed"):
        score_run(RunStore.open(tmp_path / "run"), "val", epochs=[4])


def test_a_run_recorded_before_member_files_resumes_after_its_committed_epochs(tmp_path, probs_file):
    import shutil

    path, _, probs, _ = probs_file
    import_predictions(probs[:, :2], tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "members")  # as the previous version left it: no member files,
    meta = json.loads((tmp_path / "run" / "run.json").read_text())  # and no mark that there are any
    del meta["member_files"]
    (tmp_path / "run" / "run.json").write_text(json.dumps(meta))
    store = RunStore.open(tmp_path / "run", mode="a")
    assert store.ended_epochs() == [[1, 2]] * 3
    before = store.probs("val")[:, :2]
    for member in range(3):
        with store.member_writer(member) as writer:
            assert writer.last_epoch == 2
            writer.log("val", 3, probs[member, 2])
            writer.end_epoch(3)
    again = RunStore.open(tmp_path / "run")
    assert again.recorded_epochs == [1, 2, 3]
    np.testing.assert_array_equal(again.probs("val")[:, :2], before)  # the committed epochs untouched
