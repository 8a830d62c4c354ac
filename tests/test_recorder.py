"""The run store's writer contract: Recorder.create/open/member/log/end_epoch, from many processes."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from confusion import Recorder
from confusion.errors import InputError, RunStoreError
from confusion.runscores import score_run
from confusion.store import RunStore

N, C, M, T = 300, 5, 3, 4

# A member job: logs shuffled batches of probs.npy[member, epoch] for epochs `first`..`last`,
# optionally sleeping between batches (so a kill can land anywhere).
JOB = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from confusion import Recorder
    run, member, last, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    probs = np.load(sys.argv[5])
    rng = np.random.default_rng(member)
    with Recorder.open(run).member(member) as writer:
        for epoch in range(writer.last_epoch + 1, last + 1):
            order = rng.permutation(probs.shape[2])
            for start in range(0, len(order), 37):
                index = order[start:start + 37]
                writer.log("val", epoch, probs[member, epoch - 1, index], index=index)
                time.sleep(pause)
            writer.end_epoch(epoch)
    print("done", flush=True)
    """
)


def by_hand(probs: np.ndarray) -> np.ndarray:
    """Eqs. 1-3 in bits, written out: entropy of the member average, averaged over epochs."""
    average = probs.astype(np.float16).astype(np.float64).mean(axis=0)  # eq. 1 (stored as float16)
    terms = np.where(average > 0, -average * np.log2(np.where(average > 0, average, 1)), 0.0)
    return terms.sum(axis=-1).mean(axis=0)  # eq. 2, then eq. 3


@pytest.fixture
def run(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(C, 0.5), size=(M, T, N))
    np.save(tmp_path / "probs.npy", probs)
    labels = rng.integers(-1, C, N)
    Recorder.create(tmp_path / "run", n_classes=C, members=M, splits={"val": labels})
    return tmp_path / "run", tmp_path / "probs.npy", probs


def start_job(run, probs_path, member, last, pause=0.0):
    return subprocess.Popen(
        [sys.executable, "-c", JOB, str(run), str(member), str(last), str(pause), str(probs_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_members_in_separate_processes_give_the_papers_score_over_the_epochs_all_ended(run, cli):
    path, probs_path, probs = run
    jobs = [start_job(path, probs_path, m, last) for m, last in ((0, 4), (1, 4), (2, 2))]  # member 2 stops early
    for job in jobs:
        out, err = job.communicate(timeout=120)
        assert job.returncode == 0, err
    store = RunStore.open(path)
    assert store.recorded_epochs == [1, 2]  # what every member ended
    np.testing.assert_allclose(score_run(store, "val").confusion, by_hand(probs[:, :2]), atol=1e-6)
    result = cli("score", path, "--out", path.parent / "scores.csv")
    assert result.exit_code == 0, result.stderr

    job = start_job(path, probs_path, 2, 4)  # restarted: continues after its last ended epoch
    assert job.wait(timeout=120) == 0
    store = RunStore.open(path)
    assert store.recorded_epochs == [1, 2, 3, 4]
    assert store.ended_epochs() == [[1, 2, 3, 4]] * 3
    np.testing.assert_allclose(score_run(store, "val").confusion, by_hand(probs), atol=1e-6)
    status = json.loads(cli("status", path, "--json").stdout)
    assert status["committed_epochs"] == [1, 2, 3, 4] and [m["last_epoch"] for m in status["members"]] == [4, 4, 4]


def test_kill_9_of_a_writer_at_any_moment_leaves_a_store_that_scores_and_resumes(run):
    path, probs_path, probs = run
    for member in (0, 1):
        assert start_job(path, probs_path, member, T).wait(timeout=120) == 0
    rng = np.random.default_rng(7)
    committed_data: dict[int, np.ndarray] = {}
    for _ in range(6):  # member 2 is killed at a seeded random moment, again and again
        job = start_job(path, probs_path, 2, T, pause=0.08)
        time.sleep(float(rng.uniform(0.3, 1.3)))
        job.send_signal(signal.SIGKILL)
        job.wait()
        store = RunStore.open(path)
        committed = store.recorded_epochs
        print("killed with committed epochs", committed)
        assert committed == list(range(1, len(committed) + 1))
        if committed:
            np.testing.assert_allclose(score_run(store, "val").confusion, by_hand(probs[:, : len(committed)]), atol=1e-6)
        for slot in range(len(committed)):  # a committed epoch never changes
            data = store.probs("val")[:, slot]
            if slot in committed_data:
                np.testing.assert_array_equal(committed_data[slot], data)
            committed_data[slot] = data
    assert start_job(path, probs_path, 2, T).wait(timeout=120) == 0
    store = RunStore.open(path)
    assert store.recorded_epochs == [1, 2, 3, 4]
    np.testing.assert_allclose(score_run(store, "val").confusion, by_hand(probs), atol=1e-6)


def test_racing_creators_end_with_one_store(tmp_path):
    code = (
        "import sys; from confusion import Recorder\n"
        "Recorder.create(sys.argv[1], n_classes=3, members=2, splits={'val': [0, 1, 2, -1]}, exist_ok=True)\n"
    )
    jobs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    assert all(job.wait(timeout=60) == 0 for job in jobs), [job.stderr.read() for job in jobs]
    store = RunStore.open(tmp_path / "run")
    assert store.n_members == 2 and store.labels("val").tolist() == [0, 1, 2, -1]


def test_torch_tensors_logits_and_bf16_are_recorded(tmp_path):
    torch = pytest.importorskip("torch")
    logits = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(0))
    recorder = Recorder.create(tmp_path / "run", n_classes=4, members=2, splits={"val": torch.tensor([0, 1, 2, 3, 0, 1])}, classes=list("abcd"))
    for member in range(2):
        with recorder.member(member) as writer:
            writer.log("val", 1, logits[member, 3:].to(torch.bfloat16), index=torch.tensor([3, 4, 5]), logits=True)
            writer.log("val", 1, logits[member, :3].to(torch.bfloat16), index=np.array([0, 1, 2]), logits=True)
            writer.end_epoch(1)
    assert recorder.committed_epochs == [1]
    stored = RunStore.open(tmp_path / "run").probs("val")[:, 0].astype(np.float64)
    expected = torch.softmax(logits.to(torch.bfloat16).float(), dim=-1).numpy()
    np.testing.assert_allclose(stored, expected, atol=2e-3)
    assert RunStore.open(tmp_path / "run").classes == list("abcd")


def test_end_epoch_refuses_missing_rows_and_names_how_many(run):
    path, _, probs = run
    with Recorder.open(path).member(0) as writer:
        writer.log("val", 1, probs[0, 0, :250], index=np.arange(250))
        with pytest.raises(InputError, match="50 of 300 rows of split 'val' were never logged"):
            writer.end_epoch(1)
        writer.log("val", 1, probs[0, 0, 250:], index=np.arange(250, 300))  # the epoch stays open
        assert writer.end_epoch(1) == []
        assert writer.last_epoch == 1 and writer.ended_epochs == [1]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda w, p: w.log("val", 0, p[0, 0]), "1-based training epoch"),
        (lambda w, p: w.log("val", 1.0, p[0, 0]), "1-based training epoch"),
        (lambda w, p: w.log("test", 1, p[0, 0]), "no split 'test'"),
        # rows without index continue in order; past the split's end they cannot (a shuffling loader must give index)
        (lambda w, p: (w.log("val", 1, p[0, 0]), w.log("val", 1, p[0, 0, :10])), "logged in order this epoch"),
        (lambda w, p: w.log("val", 1, p[0, 0, :10, :3], index=np.arange(10)), r"must be \(batch, 5\)"),
        (lambda w, p: w.log("val", 1, p[0, 0, :10], index=np.arange(10) + 295), "outside 0..299"),
        (lambda w, p: w.log("val", 1, p[0, 0, :10], index=np.arange(9)), "integer sample positions"),
        (lambda w, p: w.log("val", 1, p[0, 0, :10], index=np.arange(10.0)), "integer sample positions"),
        (lambda w, p: w.log("val", 1, np.full((10, 5), np.nan), index=np.arange(10)), "NaN or inf"),
        (lambda w, p: w.log("val", 1, -p[0, 0, :10], index=np.arange(10)), "pass logits=True"),
        (lambda w, p: w.log("val", 1, 2 * p[0, 0, :10], index=np.arange(10)), "do not sum to 1"),
        (lambda w, p: w.log("val", 1, np.zeros((10, 5), dtype=int), index=np.arange(10)), "floating point"),
        (lambda w, p: w.end_epoch(1), "logged nothing for epoch 1"),
        (lambda w, p: (w.log("val", 1, p[0, 0]), w.log("val", 2, p[0, 1])), r"call end_epoch\(1\) before logging epoch 2"),
        (lambda w, p: (w.log("val", 1, p[0, 0]), w.end_epoch(1), w.log("val", 1, p[0, 0])), "already ended epoch 1"),
        (lambda w, p: (w.log("val", 2, p[0, 0]), w.end_epoch(3)), "is logging epoch 2, not 3"),
    ],
)
def test_bad_calls_get_one_clear_error(run, call, message):
    path, _, probs = run
    with Recorder.open(path).member(0) as writer:
        with pytest.raises(InputError, match=message):
            call(writer, probs)


def test_one_writer_per_member_and_members_must_record_the_same_epochs(run):
    path, _, probs = run
    recorder = Recorder.open(path)
    other_process = subprocess.run(
        [sys.executable, "-c", f"from confusion import Recorder; Recorder.open({str(path)!r}).member(0); print('opened')"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert other_process.returncode == 0  # nobody holds member 0 yet
    with recorder.member(0) as first:
        other_process = subprocess.run(
            [sys.executable, "-c", f"from confusion import Recorder; Recorder.open({str(path)!r}).member(0)"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "RunLockedError" in other_process.stderr and "member-0" in other_process.stderr
        first.log("val", 2, probs[0, 0])
        first.end_epoch(2)
    again = recorder.member(0)  # in the same process, a new writer replaces the one before
    replaced = recorder.member(0)
    with pytest.raises(InputError, match="is closed"):
        again.log("val", 3, probs[0, 0])
    assert replaced.last_epoch == 2
    replaced.close()
    with recorder.member(1) as second, pytest.raises(InputError, match="member 0 recorded epoch 2 in this place"):
        second.log("val", 1, probs[1, 0])
    with pytest.raises(InputError, match=r"member must be an integer in 0..2"):
        recorder.member(3)


def test_create_refuses_what_is_not_a_run_it_can_make_or_join(tmp_path, run):
    path, _, _ = run
    with pytest.raises(RunStoreError, match="already exists"):
        Recorder.create(path, n_classes=C, members=M, splits={"val": np.zeros(N, int)})
    with pytest.raises(RunStoreError, match="holds another run"):
        Recorder.create(path, n_classes=C, members=2, splits={"val": np.zeros(N, int)}, exist_ok=True)
    with pytest.raises(RunStoreError, match="other samples or labels"):
        Recorder.create(path, n_classes=C, members=M, splits={"val": np.zeros(N, int)}, exist_ok=True)
    with pytest.raises(InputError, match="labels must lie in 0..4"):
        Recorder.create(tmp_path / "new", n_classes=C, members=M, splits={"val": [0, 5]})
    with pytest.raises(InputError, match="members must be a whole number from 1 to 1,000, got 0"):
        Recorder.create(tmp_path / "new", n_classes=C, members=0, splits={"val": [0, 1]})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's file")
    with pytest.raises(RunStoreError, match="not empty"):
        Recorder.create(tmp_path / "mine", n_classes=C, members=M, splits={"val": 3})
    assert sorted(os.listdir(tmp_path / "mine")) == ["notes.txt"]  # nothing dropped into it
    unlabeled = Recorder.create(tmp_path / "unlabeled", n_classes=C, members=1, splits={"val": 3}, ids={"val": ["a", "b", "c"]})
    assert unlabeled.store.labels("val").tolist() == [-1, -1, -1] and unlabeled.store.sample_ids("val").tolist() == ["a", "b", "c"]
    one_split = Recorder.create(tmp_path / "plain-ids", n_classes=C, members=1, splits={"val": [0, 1]}, ids=["x", "y"])
    assert one_split.store.sample_ids("val").tolist() == ["x", "y"]
    with pytest.raises(InputError, match="must be a dict"):
        Recorder.create(tmp_path / "two", n_classes=C, members=1, splits={"val": [0], "train": [1]}, ids=["x"])
    with pytest.raises(InputError, match="unique"):
        Recorder.create(tmp_path / "dup", n_classes=C, members=1, splits={"val": [0, 1]}, ids=["x", "x"])
    assert not (tmp_path / "two").exists() and not (tmp_path / "dup").exists()


def test_an_end_epoch_that_failed_once_can_be_retried_and_commits_exactly_once(tmp_path, monkeypatch):
    """Issue 28: end_epoch marked the epoch ended before the member file was written, so a retry
    after a failure (info JSON cannot hold, a full disk) committed it twice and the run became
    unreadable. Now info is checked and converted first, and state changes only after the write."""
    import confusion.store.commit as commit

    recorder = Recorder.create(tmp_path / "run", n_classes=3, members=1, splits={"val": [0, 1, 2, 1]})
    probs = np.full((4, 3), 1 / 3, dtype=np.float32)
    with recorder.member(0) as writer:
        writer.log("val", 1, probs)
        with pytest.raises(InputError, match="^info must hold JSON-able values"):
            writer.end_epoch(1, info={"model": object()})
        assert writer.end_epoch(1, info={"loss": np.float32(0.25), "steps": np.int64(3)}) == [1]  # numpy scalars are numbers
        writer.log("val", 2, probs)
        real = commit.write_json_atomic

        def full_disk(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(commit, "write_json_atomic", full_disk)
        with pytest.raises(OSError):
            writer.end_epoch(2)
        monkeypatch.setattr(commit, "write_json_atomic", real)
        assert writer.end_epoch(2) == [2]
        with pytest.raises(InputError, match="already ended epoch 2"):
            writer.end_epoch(2)
    store = RunStore.open(tmp_path / "run")
    assert store.recorded_epochs == [1, 2] and store.ended_epochs() == [[1, 2]]
    assert store.history(0)[0] == {"loss": 0.25, "steps": 3, "epoch": 1}
    assert score_run(store, "val").confusion == pytest.approx(np.full(4, np.log2(3)), abs=1e-4)  # 1/3 as float16


def test_the_readmes_first_loop_runs_as_written(tmp_path, monkeypatch):
    """Issue 27: the README's first Recorder loop assumed a loader that yields positions; it now
    runs as written on a plain TensorDataset (shuffled with IndexedDataset, in order without)."""
    import pathlib
    import re

    pytest.importorskip("torch")
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Use it from your own training loop") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "TensorDataset" in code and "IndexedDataset" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    store = RunStore.open(tmp_path / "runs" / "mine")
    assert store.recorded_epochs == [1, 2, 3] and store.n_members == 3
    scores = score_run(store, "val")
    assert scores.confusion.shape == (100,) and np.isfinite(scores.confusion).all()


def test_a_loader_in_order_needs_no_index_and_the_two_ways_do_not_mix(tmp_path):
    recorder = Recorder.create(tmp_path / "run", n_classes=3, members=1, splits={"val": np.zeros(10, int)})
    probs = np.full((10, 3), 1 / 3, dtype=np.float32)
    with recorder.member(0) as writer:
        writer.log("val", 1, probs[:4])
        writer.log("val", 1, probs[4:])
        assert writer.end_epoch(1) == [1]
        writer.log("val", 2, probs[:4])
        with pytest.raises(InputError, match="was logged in order"):
            writer.log("val", 2, probs[4:], index=np.arange(4, 10))
        with pytest.raises(InputError, match="14 rows of split 'val' \\(10 samples\\) logged in order"):
            writer.log("val", 2, probs)
        writer.log("val", 2, probs[4:])
        assert writer.end_epoch(2) == [2]
        writer.log("val", 3, probs[:5], index=np.arange(5))
        with pytest.raises(InputError, match="was logged with index"):
            writer.log("val", 3, probs[5:])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda w, p: w.log("val", 0, p[0, 0]), "epoch must be the 1-based training epoch number, got 0"),
        (lambda w, p: w.log("val", 1, p[0, 0, :10, :3], index=np.arange(10)), "outputs must be (batch, 5) for this run, got shape (10, 3)"),
        (lambda w, p: w.log("val", 1, p[0, 0, :10], index=np.arange(10) - 1), "index holds positions outside 0..299 of split 'val'"),
        (lambda w, p: w.log("val", 1, p[0, 0, :10], index=np.arange(9)), "index must be (10,) integer sample positions, got int64 (9,)"),
        (lambda w, p: w.log("val", 1, np.zeros((10, 5), dtype=int), index=np.arange(10)), "outputs must be floating point, got dtype int64"),
        (
            lambda w, p: (w.log("val", 1, p[0, 0]), w.log("val", 1, p[0, 0, :10])),
            "310 rows of split 'val' (300 samples) logged in order this epoch: a loader that shuffles, or goes round twice, must give index",
        ),
        (
            lambda w, p: (w.log("val", 1, p[0, 0, :5], index=np.arange(5)), w.log("val", 1, p[0, 0, 5:])),
            "split 'val' was logged with index this epoch; give index for every batch of it",
        ),
        (
            lambda w, p: (w.log("val", 1, p[0, 0, :5]), w.log("val", 1, p[0, 0, 5:], index=np.arange(5, 300))),
            "split 'val' was logged in order (no index) this epoch; log all of it that way",
        ),
        (lambda w, p: w.end_epoch(1), "member 0 logged nothing for epoch 1; log every split before end_epoch"),
        (
            lambda w, p: (w.log("val", 1, p[0, 0]), w.log("val", 2, p[0, 1])),
            "member 0 is still logging epoch 1; call end_epoch(1) before logging epoch 2",
        ),
        (lambda w, p: (w.log("val", 1, p[0, 0]), w.end_epoch(1), w.log("val", 1, p[0, 0])), "member 0 already ended epoch 1; log a later epoch"),
        (lambda w, p: (w.log("val", 1, p[0, 0]), w.end_epoch(1), w.end_epoch(1)), "member 0 already ended epoch 1"),
        (lambda w, p: (w.log("val", 2, p[0, 0]), w.end_epoch(3)), "member 0 is logging epoch 2, not 3"),
        (
            lambda w, p: (w.log("val", 1, p[0, 0, :250], index=np.arange(250)), w.end_epoch(1)),
            "member 0, epoch 1: 50 of 300 rows of split 'val' were never logged; log every sample before end_epoch",
        ),
        (lambda w, p: w.log_views("val", 1, p[0, 0]), "view outputs must be (batch, views, 5) for this run, got shape (300, 5)"),
        (lambda w, p: w.log_views("val", 1, np.zeros((300, 2, 5), dtype=int)), "view outputs must be floating point, got dtype int64"),
        (lambda w, p: w.log_views("val", 1, np.zeros((300, 0, 5))), "view outputs must be (batch, views, 5) for this run, got shape (300, 0, 5)"),
        (lambda w, p: (w.log("val", 1, p[0, 0]), w.end_epoch(1, info=[1])), "info must be a dict of JSON-able values, got list"),
        (lambda w, p: w.log("val", 1, [[0.5, 0.5], [1.0]]), None),  # "outputs is not an array: " and numpy's reason
    ],
)
def test_the_writers_refusals_word_for_word(run, call, message):
    """Each refusal of the member writer, exactly (a changed word is a changed contract), and
    the writer can go on after it: nothing was half-logged."""
    path, _, probs = run
    with Recorder.open(path).member(0) as writer:
        with pytest.raises((InputError, ValueError)) as caught:
            call(writer, probs)
        if message is None:
            assert str(caught.value).startswith("outputs is not an array: ")
        else:
            assert str(caught.value) == message
    with Recorder.open(path).member(0) as writer:  # a refused epoch was dropped with the writer
        start = writer.last_epoch + 1
        writer.log("val", start, probs[0, 0])
        assert writer.end_epoch(start) == []


def test_members_are_named_by_whole_numbers_in_range(run):
    path, _, probs = run
    recorder = Recorder.open(path)
    for member in (3, -1, True, 1.0, "0"):
        with pytest.raises(InputError) as caught:
            recorder.member(member)
        assert str(caught.value) == f"member must be an integer in 0..2, got {member!r}"
    with recorder.member(np.int64(2)) as writer:
        assert writer.member == 2 and type(writer.member) is int and writer.open_epoch is None
        writer.log("val", 4, probs[2, 0])
        assert writer.open_epoch == 4 and writer.ended_epochs == [] and writer.last_epoch == 0
        assert writer.end_epoch(4, info={"loss": np.float64(0.5), "per_class": np.array([1, 2]), "nested": {"k": (np.int32(1),)}}) == []
        assert writer.open_epoch is None and writer.ended_epochs == [4] and writer.last_epoch == 4
    assert RunStore.open(path).history(2)[0] == {"loss": 0.5, "per_class": [1, 2], "nested": {"k": [1]}, "epoch": 4}


def test_an_epoch_commits_when_the_last_member_ends_it_and_never_before(run):
    path, _, probs = run
    recorder = Recorder.open(path)
    for member in range(M):
        with recorder.member(member) as writer:
            for epoch in (1, 2):
                writer.log("val", epoch, probs[member, epoch - 1])
                committed = writer.end_epoch(epoch)
                assert committed == ([] if member < M - 1 else [epoch])
        store = RunStore.open(path)
        assert store.recorded_epochs == ([] if member < M - 1 else [1, 2])
        assert store.ended_epochs()[member] == [1, 2]
    with recorder.member(0) as writer:  # a member ahead of the others commits nothing
        writer.log("val", 3, probs[0, 2])
        assert writer.end_epoch(3) == [] and RunStore.open(path).recorded_epochs == [1, 2]
    scores = score_run(RunStore.open(path), "val")
    np.testing.assert_allclose(scores.confusion, by_hand(probs[:, :2]), atol=1e-6)


def test_rows_buffered_past_the_flush_size_are_written_in_place(run, monkeypatch):
    from confusion.store.commit import MemberWriter

    path, _, probs = run
    monkeypatch.setattr(MemberWriter, "FLUSH_BYTES", 64)  # a flush after every few rows
    order = np.random.default_rng(1).permutation(N)
    for member in range(M):
        with Recorder.open(path).member(member) as writer:
            for start in range(0, N, 7):
                part = order[start : start + 7]
                writer.log("val", 1, probs[member, 0, part], index=part)
            writer.end_epoch(1)
    np.testing.assert_allclose(score_run(RunStore.open(path), "val").confusion, by_hand(probs[:, :1]), atol=1e-6)


def test_views_are_logged_by_position_as_logits_and_in_the_epoch_being_logged(tmp_path):
    """log_views (issue 25): rows given with index land at their samples, logits go through a
    softmax, a refused call names the epoch, and views belong to the epoch being logged."""
    from confusion.scores import softmax

    rng = np.random.default_rng(20)
    plain = rng.dirichlet(np.ones(3), size=(2, 6))
    views = rng.normal(size=(2, 6, 2, 3))  # logits of 2 views
    recorder = Recorder.create(tmp_path / "run", n_classes=3, members=2, splits={"val": np.zeros(6, int)})
    order = np.array([4, 0, 5, 2, 1, 3])
    for member in range(2):
        with recorder.member(member) as writer:
            writer.log_views("val", 1, views[member, order[:3]], index=order[:3], logits=True)  # views may come first
            writer.log("val", 1, plain[member])
            writer.log_views("val", 1, views[member, order[3:]], index=order[3:], logits=True)
            writer.end_epoch(1)
    store = RunStore.open(tmp_path / "run")
    for member in range(2):
        np.testing.assert_allclose(store.views("val", member, 1), softmax(views[member]), rtol=0, atol=1e-3)  # stored as float16
    with recorder.member(0) as writer:
        writer.log("val", 2, plain[0])
        with pytest.raises(InputError) as caught:
            writer.log_views("val", 3, softmax(views[0]))
        assert str(caught.value) == "member 0 is still logging epoch 2; call end_epoch(2) before logging epoch 3"
        negative = softmax(views[0]).copy()
        negative[1, 0, 2] = -0.5
        with pytest.raises(InputError) as caught:
            writer.log_views("val", 2, negative)
        assert str(caught.value).startswith("negative probability -0.5 at member 0, epoch 2, sample ")
        with pytest.raises(InputError) as caught:
            writer.log_views("val", 2, [[[0.5, 0.5, 0.0]], [[1.0]]])
        assert str(caught.value).startswith("outputs is not an array: ")
        with pytest.raises(InputError) as caught:
            writer.log_views("val", 2, softmax(views[0, :2]), index=np.array([0, 6]))
        assert str(caught.value) == "index holds positions outside 0..5 of split 'val'"
        with pytest.raises(InputError) as caught:
            writer.log_views("val", 2, softmax(views[0, :2]), index=np.array([0]))
        assert str(caught.value) == "index must be (2,) integer sample positions, got int64 (1,)"


def test_a_reduced_run_commits_every_ready_epoch_at_once_with_its_record_and_drops_the_raw_chunks(tmp_path, monkeypatch):
    """The slots a killed process left ended but not committed are committed together by the
    next commit: the reduced record of each, from the raw rows every member wrote, then the raw
    chunk files of those slots deleted."""
    from confusion.reduced import FIELDS, summarize

    rng = np.random.default_rng(5)
    sizes = {"train": 30, "val": 20}
    probs = {split: rng.dirichlet(np.ones(C), size=(2, 3, n)).astype(np.float16) for split, n in sizes.items()}
    labels = {"train": rng.integers(0, C, 30), "val": rng.integers(-1, C, 20)}
    Recorder.create(tmp_path / "run", n_classes=C, members=2, splits=labels, keep="reduced")
    for member in (0, 1):
        if member == 1:  # its process dies after each member file, before it commits
            monkeypatch.setattr(RunStore, "commit_ready", lambda self: [])
        with Recorder.open(tmp_path / "run").member(member) as writer:
            for epoch in (1, 2, 3):
                for split in sizes:
                    writer.log(split, epoch, probs[split][member, epoch - 1])
                writer.end_epoch(epoch)
    monkeypatch.undo()
    store = RunStore.open(tmp_path / "run", mode="a")
    assert store.recorded_epochs == [] and store.commit_ready() == [1, 2, 3]
    store = RunStore.open(tmp_path / "run")
    assert store.recorded_epochs == [1, 2, 3]
    for split in sizes:
        expected = summarize(probs[split], labels[split])
        for name in FIELDS:
            stored = store._group[split][name]
            np.testing.assert_array_equal(stored[...], expected[name].astype(stored.dtype), err_msg=f"{split} {name}")
        raw = tmp_path / "run" / "predictions.zarr" / split / "probs"
        assert [p for p in raw.rglob("*") if p.is_file() and p.name != "zarr.json"] == [], split
    np.testing.assert_allclose(score_run(store, "val").confusion, by_hand(probs["val"]), rtol=0, atol=1e-6)


def test_embeddings_are_flattened_begin_their_epoch_and_are_named_in_a_refusal(run):
    path, _, probs = run
    wide = np.random.default_rng(2).normal(size=(N, 2, 3)).astype(np.float32)  # a feature map: 6 values a sample
    with Recorder.open(path).member(0) as writer:
        with pytest.raises(InputError) as caught:
            writer.log_embeddings("val", 1, [[0.5, 0.5], [1.0]])
        assert str(caught.value).startswith("embeddings is not an array: ")
        with pytest.raises(InputError) as caught:
            writer.log("val", 1, probs[0, 0, :2], index=[[0, 1], [2]])
        assert str(caught.value).startswith("index is not an array: ")
        writer.log("val", 1, probs[0, 0])
        with pytest.raises(InputError) as caught:  # embeddings belong to the epoch being logged
            writer.log_embeddings("val", 2, wide)
        assert str(caught.value) == "member 0 is still logging epoch 1; call end_epoch(1) before logging epoch 2"
        writer.log_embeddings("val", 1, wide)
        writer.end_epoch(1)
        writer.log_embeddings("val", 2, wide[:, :1])  # embeddings first: they begin epoch 2
        with pytest.raises(InputError) as caught:
            writer.log("val", 3, probs[0, 2])
        assert str(caught.value) == "member 0 is still logging epoch 2; call end_epoch(2) before logging epoch 3"
    for member in (1, 2):
        with Recorder.open(path).member(member) as writer:
            writer.log("val", 1, probs[member, 0])
            writer.log_embeddings("val", 1, wide)
            writer.end_epoch(1)
    store = RunStore.open(path)
    np.testing.assert_array_equal(store.embeddings("val", 0, 1), wide.reshape(N, 6).astype(np.float16))


def test_float16_rows_within_their_tolerance_pass_and_a_refusal_names_the_member_and_the_hint(run):
    path, _, probs = run
    off = probs[1, 0].astype(np.float16)
    off[:, 0] += np.float16(0.004)  # float16 rows may sum to 1 +- 1e-2; float32 ones to 1 +- 1e-3
    total = float(off[0].astype(np.float32).sum())
    with Recorder.open(path).member(1) as writer:
        writer.log("val", 1, off[:10], index=np.arange(10))
        with pytest.raises(InputError) as caught:
            writer.log("val", 1, off[10:20].astype(np.float32), index=np.arange(10, 20))
        assert str(caught.value) == (
            f"probabilities do not sum to 1 (sum {off[10].astype(np.float32).sum():.6g} at member 1, epoch 1, sample 10; "
            "tolerance 0.001 for float32); if these are logits, pass logits=True"
        )  # the sample by its position in the split, not in the batch
        with pytest.raises(InputError) as caught:
            writer.log("val", 1, probs[1, 0, 20:30] * 4 - 2, index=np.arange(20, 30))
        assert str(caught.value).startswith("negative probability ") and str(caught.value).endswith(
            "at member 1, epoch 1, sample 20, class 0 (are these logits? pass logits=True)"
        )
        with pytest.raises(InputError) as caught:
            writer.log("val", 1, probs[1, 0, 20:30], index=np.arange(20, 30), logits=True)
        assert str(caught.value) == "these are probabilities already (every row lies in [0, 1] and sums to 1), not logits; pass logits=False"
    assert total > 1.003


def test_empty_batches_logits_and_the_flush_size_as_counted(run, monkeypatch):
    """An empty batch leaves the in-order cursor where it was; logits are stored as their
    softmax; the buffer is flushed once the rows held reach FLUSH_BYTES (2 bytes a value)."""
    from confusion.store.commit import MemberWriter

    path, _, probs = run
    logits = np.log(probs[0, 0]) + 3.0  # the same softmax as probs
    monkeypatch.setattr(MemberWriter, "FLUSH_BYTES", 3 * 10 * C * 2)  # three batches of 10 rows
    with Recorder.open(path).member(0) as writer:
        writer.log("val", 1, logits[:0], logits=True)  # empty first (no "probabilities already"): the next batch is still row 0
        held = []
        for start in range(0, 50, 10):
            writer.log("val", 1, logits[start : start + 10], logits=True)
            held.append(writer._buffered)
        assert held == [100, 200, 0, 100, 200]
        writer.log("val", 1, logits[50:50], logits=True)  # empty in the middle: the cursor stays at 50
        writer.log("val", 1, logits[50:], logits=True)
        writer.end_epoch(1)
    stored = RunStore.open(path).probs_reader("val")[0:1, 0:1, :][0, 0]
    np.testing.assert_allclose(np.asarray(stored, dtype=np.float64), probs[0, 0], atol=1e-3)


def test_the_member_file_the_lock_and_refusals_of_an_end_word_for_word(tmp_path, run):
    path, _, probs = run
    other = tmp_path / "other"
    Recorder.create(other, n_classes=C, members=1, splits={"val": np.zeros(N, int), "train": np.zeros(4, int)})
    with Recorder.open(path).member(0) as writer, Recorder.open(other).member(0) as elsewhere:  # a lock per run, in the run
        writer.log("val", 1, probs[0, 0])
        writer.end_epoch(1, info={"loss": float("nan"), "acc": np.float32(0.5)})
        elsewhere.log("val", 1, probs[0, 0])
        with pytest.raises(InputError) as caught:
            elsewhere.end_epoch(1)
        assert str(caught.value) == "member 0, epoch 1: 4 of 4 rows of split 'train' were never logged; log every sample before end_epoch"
    member_file = json.loads((path / "members" / "member-0.json").read_text())
    assert member_file["member"] == 0 and member_file["ended"] == [1] and member_file["info"]["1"]["acc"] == 0.5
    assert member_file["info"]["1"]["loss"] != member_file["info"]["1"]["loss"]  # NaN kept
    assert not list(tmp_path.glob(".member-*")) and not list(path.parent.glob(".member-*"))
    with Recorder.open(path).member(1) as writer:
        writer.log("val", 1, probs[1, 0])
        (path / "members" / "member-1.json").write_text(json.dumps({"member": 1, "ended": [1], "info": {}}))  # edited meanwhile
        with pytest.raises(InputError) as caught:
            writer.end_epoch(1)
        assert str(caught.value) == "member 1 already ended epoch 1 (its member file says so)"
    with Recorder.open(path).member(2) as writer, pytest.raises(InputError) as caught:
        writer.log("val", 2, probs[2, 0])
    assert str(caught.value) == ("member 0 recorded epoch 1 in this place (recording 1); every member must record the same epochs, not epoch 2")


def test_info_takes_tensor_like_values_as_their_lists():
    from confusion.store.commit import json_info

    class Tensor:  # what json_info reads of a torch tensor
        def __init__(self, values):
            self.values = values

        def detach(self):
            return self

        def cpu(self):
            return self

        def tolist(self):
            return self.values

    assert json_info({"loss": Tensor(0.25), "per_class": Tensor([1.0, 2.0]), "nan": float("nan")})["per_class"] == [1.0, 2.0]
    assert json_info({"loss": Tensor(0.25)}) == {"loss": 0.25}
    assert json_info(None) is None


def test_a_top_k_run_has_no_member_writer(tmp_path):
    from confusion.importing import import_topk

    probs = np.random.default_rng(4).dirichlet(np.ones(6), size=(1, 2, 10))
    order = np.argsort(-probs, axis=-1)[..., :3]
    import_topk((np.take_along_axis(probs, order, axis=-1), order), tmp_path / "topk", n_classes=6)
    with pytest.raises(InputError) as caught:
        Recorder.open(tmp_path / "topk").member(0)
    assert str(caught.value) == f"{tmp_path / 'topk'} holds top-k logs; it is written by `confusion import --topk`, not by a member writer"


class _FakeTensor:
    """What to_numpy reads of a torch tensor: detach, cpu, numpy, is_floating_point, dtype, float."""

    class _Dtype:
        def __init__(self, itemsize):
            self.itemsize = itemsize

    def __init__(self, values, itemsize, floating=True):
        self.values, self.dtype, self.floating, self.calls = np.asarray(values), self._Dtype(itemsize), floating, []

    def detach(self):
        self.calls.append("detach")
        return self

    def is_floating_point(self):
        return self.floating

    def float(self):
        self.calls.append("float")
        return _FakeTensor(self.values.astype(np.float32), 4)

    def cpu(self):
        self.calls.append("cpu")
        return self

    def numpy(self):
        return self.values


def test_tensors_are_detached_moved_and_bf16_widened_and_other_arrays_taken_as_they_are():
    from confusion.store.commit import to_numpy

    bf16 = _FakeTensor([[0.5, 0.5]], itemsize=2)  # no numpy dtype: widened to float32 first
    assert to_numpy(bf16, "outputs").dtype == np.float32 and bf16.calls == ["detach", "float"]
    wide = _FakeTensor(np.array([[0.25, 0.75]], dtype=np.float64), itemsize=8)
    assert to_numpy(wide, "outputs").dtype == np.float64 and wide.calls == ["detach", "cpu"]
    full = _FakeTensor(np.array([[0.25, 0.75]], dtype=np.float32), itemsize=4)
    assert to_numpy(full, "outputs").dtype == np.float32 and full.calls == ["detach", "cpu"]
    counts = _FakeTensor(np.array([1, 2], dtype=np.int16), itemsize=2, floating=False)
    assert to_numpy(counts, "index").dtype == np.int16 and counts.calls == ["detach", "cpu"]

    class OnlyCpu(list):  # a cpu attribute alone does not make a tensor
        cpu = None

    assert to_numpy(OnlyCpu([1.0, 2.0]), "outputs").tolist() == [1.0, 2.0]


def test_wide_views_are_kept_whole_and_a_closed_writer_flushes_nothing(tmp_path):
    """Views are class probabilities, never projected like embeddings, however wide (5 views x
    20 classes = 100 values a sample, over the 64 axes embeddings keep)."""
    rng = np.random.default_rng(6)
    probs = rng.dirichlet(np.ones(20), size=12)
    views = rng.dirichlet(np.ones(20), size=(12, 5))
    Recorder.create(tmp_path / "run", n_classes=20, members=1, splits={"val": np.zeros(12, int)})
    writer = Recorder.open(tmp_path / "run").member(0)
    writer.log("val", 1, probs)
    writer.log_views("val", 1, views)
    writer.end_epoch(1)
    writer.close()
    assert writer.closed
    writer.flush()  # nothing held: nothing to write, no error
    writer.close()
    np.testing.assert_array_equal(RunStore.open(tmp_path / "run").views("val", 0, 1), views.astype(np.float16))


def test_a_refused_view_names_its_sample_with_or_without_index_and_a_committed_reduced_epoch_is_not_reduced_again(tmp_path, monkeypatch):
    from confusion.reduced import summarize

    rng = np.random.default_rng(8)
    views = rng.dirichlet(np.ones(4), size=(6, 3))  # 6 samples x 3 views x 4 classes
    views[4, 2] = [1.5, -0.5, 0.0, 0.0]
    Recorder.create(tmp_path / "run", n_classes=4, members=2, splits={"val": np.zeros(6, int)}, keep="reduced")
    with Recorder.open(tmp_path / "run").member(0) as writer:
        with pytest.raises(InputError) as caught:
            writer.log_views("val", 1, views)
        assert "at member 0, epoch 1, sample 4, class 1" in str(caught.value)
        with pytest.raises(InputError) as caught:
            writer.log_views("val", 1, views[[4, 0]], index=np.array([5, 1]))
        assert "at member 0, epoch 1, sample 5, class 1" in str(caught.value)
    probs = rng.dirichlet(np.ones(4), size=(2, 2, 6)).astype(np.float16)
    for member in (0, 1):  # member 1 ends epoch 1 (committed), then epoch 2 (committed on its own)
        with Recorder.open(tmp_path / "run").member(member) as writer:
            for epoch in (1, 2):
                writer.log("val", epoch, probs[member, epoch - 1])
                writer.end_epoch(epoch)
    store = RunStore.open(tmp_path / "run")
    assert store.recorded_epochs == [1, 2]
    expected = summarize(probs, np.zeros(6, int))
    np.testing.assert_array_equal(store._group["val"]["member_entropy"][...], expected["member_entropy"])
