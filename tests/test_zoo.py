"""The zoo on a tiny slice: trained, scikit-learn and pre-trained-probe models become runs."""

import json

import numpy as np

from confusion.store import RunStore


def test_zoo_on_a_slice(tmp_path, cli):
    result = cli(
        "zoo",
        "--out",
        tmp_path / "zoo",
        "--data",
        "digits",
        "--archs",
        "mlp-s,resnet-s,sklearn:logreg,pretrained:efficientnet-lite0",
        "--epochs",
        "2",
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads((tmp_path / "zoo" / "zoo.json").read_text())
    assert list(summary["models"]) == ["mlp-s", "resnet-s", "sklearn:logreg", "pretrained:efficientnet-lite0"]
    logreg = RunStore.open(tmp_path / "zoo" / "sklearn-logreg")
    assert logreg.recorded_epochs == [1] and logreg.n_members == 1
    np.testing.assert_allclose(logreg.probs("val")[:].astype(np.float64).sum(-1), 1.0, atol=1e-2)
    assert summary["models"]["sklearn:logreg"]["val_accuracy"] > 0.8
    probe = RunStore.open(tmp_path / "zoo" / "pretrained-efficientnet-lite0")
    assert probe.recorded_epochs == [1, 2] and list((tmp_path / "zoo" / "features").glob("*.npz"))
    assert summary["models"]["pretrained:efficientnet-lite0"]["val_accuracy"] > 0.5
    # finished models are kept on a rerun
    stamp = (tmp_path / "zoo" / "sklearn-logreg" / "run.json").stat().st_mtime
    assert cli("zoo", "--out", tmp_path / "zoo", "--data", "digits", "--archs", "sklearn:logreg", "--epochs", "2").exit_code == 0
    assert (tmp_path / "zoo" / "sklearn-logreg" / "run.json").stat().st_mtime == stamp
    report = cli("report", tmp_path / "zoo" / "mlp-s", "--out", tmp_path / "rep", "--models", tmp_path / "zoo" / "sklearn-logreg", "--min-count", "5")
    assert report.exit_code == 0, report.stderr


def test_unknown_zoo_model(tmp_path, cli):
    result = cli("zoo", "--out", tmp_path / "zoo", "--data", "digits", "--archs", "mlp-s,sklearn:svm")
    assert result.exit_code == 2 and "unknown zoo architecture 'sklearn:svm'" in result.stderr


def test_a_zoo_written_into_a_users_folder_deletes_nothing_of_theirs(tmp_path, cli):
    """Issue 28: no command deletes a folder's foreign content. The zoo adds its runs and
    zoo.json beside what is there; what was there stays."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (mine / "index.html").write_text("<h1>mine</h1>")
    result = cli("zoo", "--out", mine, "--data", "digits", "--archs", "mlp-s", "--epochs", "1")
    assert result.exit_code == 0, result.stderr
    assert (mine / "notes.txt").read_text() == "keep me" and (mine / "index.html").read_text() == "<h1>mine</h1>"
    assert (mine / "zoo.json").exists()
