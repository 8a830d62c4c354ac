"""--keep reduced: a run that keeps only the reduced record reports what the raw run reports."""

import json
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from confusion import Recorder
from confusion.difficulty import difficulty_scores
from confusion.errors import InputError
from confusion.hardset import manifest
from confusion.reduced import FinalPredictions, bytes_per_prediction, summarize
from confusion.runscores import score_run
from confusion.store import RunStore
from confusion.training import TrainConfig, train

from .test_recorder import by_hand, start_job


def stored_bytes(run: Path) -> int:
    """Bytes of every file of a run (what the disk holds, directories aside)."""
    return sum(p.stat().st_size for p in Path(run).rglob("*") if p.is_file())


def numbers_close(a, b, where="metrics", tol=1e-4):
    """Every number of two JSON trees within `tol`; everything else equal."""
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            numbers_close(a[key], b[key], f"{where}.{key}", tol)
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            numbers_close(x, y, f"{where}[{i}]", tol)
    elif isinstance(a, float) or isinstance(b, float):
        assert (np.isnan(a) and np.isnan(b)) or abs(a - b) <= tol, (where, a, b)
    else:
        assert a == b, (where, a, b)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("keep")
    base = dict(data="digits", arch="mlp-s", members=3, epochs=4, batch_size=32, lr=3e-3, workers=0)
    train(TrainConfig(**base), root / "raw")
    train(TrainConfig(**base, keep="reduced"), root / "reduced")
    train(TrainConfig(**{**base, "arch": "mlp-m", "members": 2}), root / "large")
    return root


def test_a_reduced_run_has_no_raw_epochs_and_the_same_score_table(runs, cli):
    reduced = RunStore.open(runs / "reduced")
    assert reduced.keep == "reduced" and reduced.recorded_epochs == [1, 2, 3, 4]
    assert not [p for p in (runs / "reduced" / "predictions.zarr").rglob("*") if p.is_file() and "/probs/c/" in str(p)]
    for name in ("raw", "reduced"):
        assert cli("score", runs / name, "--out", runs / f"{name}.csv").exit_code == 0
    raw, red = pd.read_csv(runs / "raw.csv"), pd.read_csv(runs / "reduced.csv")
    assert list(raw.columns) == list(red.columns) and (raw["sample"] == red["sample"]).all()
    for column in ("confusion", "confusion_normalized", "expected_entropy", "disagreement"):
        assert np.abs(raw[column] - red[column]).max() < 1e-6, column  # 10 classes: README 'The score', 3e-7 x log2 C


def test_every_difficulty_score_final_prediction_and_hard_set_match(runs):
    raw, red = RunStore.open(runs / "raw"), RunStore.open(runs / "reduced")
    for split in raw.splits:
        a, b = difficulty_scores(raw, split), difficulty_scores(red, split)
        for column in a.columns[3:]:
            np.testing.assert_allclose(b[column], a[column], rtol=0, atol=1e-6, err_msg=column)
        fa, fb = raw.final_predictions(split), red.final_predictions(split)
        np.testing.assert_array_equal(fa.argmax, fb.argmax)
        np.testing.assert_array_equal(fa.ensemble_argmax, fb.ensemble_argmax)
        np.testing.assert_allclose(fb.top1, fa.top1, atol=0)
        np.testing.assert_allclose(fb.entropy, fa.entropy, rtol=0, atol=1e-6)
        np.testing.assert_allclose(score_run(red, split, members=[1]).confusion, score_run(raw, split, members=[1]).confusion, rtol=0, atol=1e-6)
        for options in ({"top": 0.1}, {"top": 0.2, "per_class": True}, {"threshold": 1.0}):
            ha, hb = manifest(raw, split, **options), manifest(red, split, **options)
            assert ha["sample"].tolist() == hb["sample"].tolist() and ha["predicted"].tolist() == hb["predicted"].tolist()


def test_report_metrics_are_the_same_within_1e_4(runs, cli):
    for name in ("raw", "reduced"):
        result = cli(
            "report", runs / name, "--out", runs / f"report-{name}", "--compare", runs / "large", "--models", runs / "large", "--min-count", "5"
        )
        assert result.exit_code == 0, result.stderr
    a = json.loads((runs / "report-raw" / "metrics.json").read_text())
    b = json.loads((runs / "report-reduced" / "metrics.json").read_text())
    for key in ("run", "path", "title", "runs", "created"):  # the run's own name and place differ
        a.pop(key, None), b.pop(key, None)
    numbers_close(a, b)


def test_what_needs_raw_is_refused_in_one_line(runs, cli):
    red = RunStore.open(runs / "reduced")
    with pytest.raises(InputError, match="--keep reduced"):
        score_run(red, "val", members=[0, 1])
    with pytest.raises(InputError, match="needs the raw class probabilities"):
        red.final_probs("val")
    result = cli("train", "--data", "digits", "--out", runs / "bad", "--keep", "some")
    assert result.exit_code == 2 and "--keep must be raw or reduced" in result.stderr and not (runs / "bad").exists()


def test_keep_reduced_is_over_100x_smaller_at_1000_classes(tmp_path, cli):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 10, 1000, 1000)).astype(np.float32) * 4
    np.save(tmp_path / "logits.npy", logits)
    for keep in ("raw", "reduced"):
        result = cli("import", "--probs", tmp_path / "logits.npy", "--logits", "--out", tmp_path / keep, "--keep", keep)
        assert result.exit_code == 0, result.stderr
    raw, red = stored_bytes(tmp_path / "raw"), stored_bytes(tmp_path / "reduced")
    print(f"raw {raw} bytes, reduced {red} bytes: {raw / red:.1f}x; record {bytes_per_prediction(3, 1000):.2f} B per prediction")
    assert raw / red > 100
    a, b = score_run(RunStore.open(tmp_path / "raw"), "val"), score_run(RunStore.open(tmp_path / "reduced"), "val")
    np.testing.assert_allclose(b.confusion, a.confusion, rtol=0, atol=3e-6)  # 1,000 classes: 3e-7 x log2 C bits
    np.testing.assert_allclose(b.disagreement, a.disagreement, rtol=0, atol=3e-6)


def test_a_split_added_to_a_reduced_run_is_reduced_too(tmp_path, cli):
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.full(6, 0.4), size=(2, 3, 50))
    extra = rng.dirichlet(np.full(6, 0.4), size=(2, 3, 30))
    np.save(tmp_path / "val.npy", probs), np.save(tmp_path / "extra.npy", extra), np.save(tmp_path / "labels.npy", rng.integers(0, 6, 50))
    assert (
        cli("import", "--probs", tmp_path / "val.npy", "--labels", tmp_path / "labels.npy", "--out", tmp_path / "run", "--keep", "reduced").exit_code
        == 0
    )
    assert cli("hardset", tmp_path / "run", "--top", "0.2", "--out", tmp_path / "hard.csv").exit_code == 0
    result = cli("evaluate", tmp_path / "run", "--hardset", tmp_path / "hard.csv", "--scores", tmp_path / "run")
    assert result.exit_code == 2 and "--keep reduced" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = cli("import", "--probs", tmp_path / "extra.npy", "--out", tmp_path / "run", "--split", "extra", "--keep", "raw")
    assert result.exit_code == 2 and "kept the same" in result.stderr
    assert cli("import", "--probs", tmp_path / "extra.npy", "--out", tmp_path / "run", "--split", "extra").exit_code == 0
    store = RunStore.open(tmp_path / "run")
    np.testing.assert_allclose(score_run(store, "extra").confusion, by_hand(extra), atol=1e-5)
    assert not [p for p in (tmp_path / "run").rglob("*") if p.is_file() and "/probs/c/" in str(p)]


def test_three_member_processes_at_once_one_killed_and_restarted(tmp_path):
    """The record is written by whichever process commits an epoch; a kill anywhere loses nothing."""
    rng = np.random.default_rng(0)
    n, c, m, t = 300, 5, 3, 4
    probs = rng.dirichlet(np.full(c, 0.5), size=(m, t, n))
    np.save(tmp_path / "probs.npy", probs)
    labels = rng.integers(-1, c, n)
    Recorder.create(tmp_path / "run", n_classes=c, members=m, splits={"val": labels}, keep="reduced")
    Recorder.create(tmp_path / "raw", n_classes=c, members=m, splits={"val": labels})
    jobs = [start_job(tmp_path / "run", tmp_path / "probs.npy", member, t, pause=0.05) for member in range(m)]
    deadline = time.time() + 60
    while not (tmp_path / "run" / "members" / "member-2.json").exists() and time.time() < deadline:
        time.sleep(0.01)  # member 2 has ended its first epoch: kill it at a seeded moment of its second
    time.sleep(float(rng.uniform(0.0, 0.4)))
    jobs[2].send_signal(signal.SIGKILL)
    jobs[2].wait()
    for job in jobs[:2]:
        assert job.wait(timeout=120) == 0, job.stderr.read()
    committed = RunStore.open(tmp_path / "run").recorded_epochs
    assert committed == list(range(1, len(committed) + 1)) and len(committed) < t
    before = {k: RunStore.open(tmp_path / "run")._group["val"][k][..., : len(committed), :] for k in ("member_entropy", "member_argmax")}
    assert start_job(tmp_path / "run", tmp_path / "probs.npy", 2, t).wait(timeout=120) == 0
    for member in range(m):
        assert start_job(tmp_path / "raw", tmp_path / "probs.npy", member, t).wait(timeout=120) == 0
    store, raw = RunStore.open(tmp_path / "run"), RunStore.open(tmp_path / "raw")
    assert store.recorded_epochs == [1, 2, 3, 4]
    for key, values in before.items():  # a committed epoch never changes
        np.testing.assert_array_equal(store._group["val"][key][..., : len(committed), :], values)
    np.testing.assert_allclose(score_run(store, "val").confusion, by_hand(probs), rtol=0, atol=1e-6)  # 5 classes, float16 record
    a, b = difficulty_scores(raw, "val"), difficulty_scores(store, "val")
    for column in a.columns[3:]:
        np.testing.assert_allclose(b[column], a[column], rtol=0, atol=1e-6, err_msg=column)


def test_summarize_by_hand():
    probs = np.array([[[[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]], [[[0.2, 0.2, 0.6], [0.4, 0.4, 0.2]]]], dtype=np.float16)  # (2, 1, 2, 3)
    record = summarize(probs, np.array([0, -1]))
    np.testing.assert_array_equal(record["member_argmax"][:, 0], [[0, 2], [2, 0]])
    np.testing.assert_allclose(record["member_label"][:, 0, 0], np.float16([0.5, 0.2]).astype(np.float32))
    assert np.isnan(record["member_label"][:, 0, 1]).all()
    # The largest class but the label; where the label is unknown, the largest of all.
    np.testing.assert_allclose(record["member_other"][:, 0], np.float16([[0.3, 0.8], [0.6, 0.4]]).astype(np.float32))
    np.testing.assert_allclose(record["member_sumsq"][0, 0, 0], float(np.sum(np.float16([0.5, 0.3, 0.2]).astype(np.float64) ** 2)), rtol=1e-6)
    np.testing.assert_array_equal(record["ensemble_argmax"][0], [2, 2])  # (0.35, 0.25, 0.4), (0.25, 0.25, 0.5)
    final = FinalPredictions.from_probs(probs[:, 0])
    np.testing.assert_array_equal(final.samples([1]).argmax, [[2], [0]])
    assert bytes_per_prediction(3, 1000) < 2000 / 100


def test_a_reduced_run_of_few_classes_says_it_saves_little(tmp_path, capsys):
    """Issue 27: at C = 10 a reduced record is 17.3 bytes per prediction against 20 raw."""
    from confusion import Recorder

    Recorder.create(tmp_path / "ten", n_classes=10, members=3, splits={"val": np.zeros(5, int)}, keep="reduced")
    assert "saves little at 10 classes: 17.3 bytes" in capsys.readouterr().err
    Recorder.create(tmp_path / "many", n_classes=100, members=3, splits={"val": np.zeros(5, int)}, keep="reduced")
    Recorder.create(tmp_path / "raw", n_classes=10, members=3, splits={"val": np.zeros(5, int)})
    assert capsys.readouterr().err == ""
