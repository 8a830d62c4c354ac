"""`hardset --export hf:DIR`: a hard set as a Hugging Face datasets folder, loaded back row by row."""

import json

import numpy as np
import pandas as pd
import pytest

datasets = pytest.importorskip("datasets")


def check_round_trip(folder, manifest_csv, classes):
    hard = datasets.load_from_disk(str(folder))
    manifest = pd.read_csv(manifest_csv)
    assert len(hard) == len(manifest) > 0
    for row, expected in zip(hard, manifest.itertuples(index=False)):
        assert row["sample"] == str(expected.sample) and row["rank"] == expected.rank and row["split"] == expected.split
        assert row["label"] == expected.label and row["label_name"] == classes[expected.label]
        assert row["predicted"] == expected.predicted and row["confusion"] == pytest.approx(expected.confusion)
    card = (folder / "README.md").read_text()
    assert "## How it was built" in card and "Score: `confusion` (bits" in card
    facts = json.loads((folder / "hardset.json").read_text())
    assert facts["split"] == "val" and facts["errors"]  # every label known: the scoring ensemble's error on it
    return hard


def test_an_image_hard_set_round_trips(cli, tmp_path):
    run = tmp_path / "run"
    assert (
        cli("train", "--data", "digits", "--members", "2", "--epochs", "1", "--limit-train", "300", "--embeddings", "none", "--out", run).exit_code
        == 0
    )
    result = cli("hardset", run, "--top", "0.1", "--out", tmp_path / "hard.csv", "--export", f"hf:{tmp_path / 'hf'}")
    assert result.exit_code == 0, result.stderr
    hard = check_round_trip(tmp_path / "hf", tmp_path / "hard.csv", [str(k) for k in range(10)])
    from confusion.datasets import load_dataset

    digits = load_dataset("digits", seed=0)
    position = {sample: i for i, sample in enumerate(digits.splits["val"].ids)}
    for row in hard:
        np.testing.assert_array_equal(np.asarray(row["image"]), digits.splits["val"].images[position[row["sample"]]][0])
    # Again into the same folder: replaced (it is ours); a user's folder is never replaced.
    assert cli("hardset", run, "--top", "0.2", "--out", tmp_path / "hard.csv", "--export", f"hf:{tmp_path / 'hf'}").exit_code == 0
    assert len(datasets.load_from_disk(str(tmp_path / "hf"))) > len(hard)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    result = cli("hardset", run, "--top", "0.1", "--out", tmp_path / "h2.csv", "--export", f"hf:{tmp_path / 'mine'}")
    assert result.exit_code == 2 and "was not written by" in result.stderr and not (tmp_path / "h2.csv").exists()
    result = cli("hardset", run, "--top", "0.1", "--out", tmp_path / "h3.csv", "--export", str(tmp_path / "plain"))
    assert result.exit_code == 2 and "--export must be hf:DIR" in result.stderr


def test_a_feature_hard_set_round_trips(cli, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    np.savez(tmp_path / "table.npz", x=x, y=y)
    run = tmp_path / "run"
    result = cli(
        "train", "--data", f"features:{tmp_path / 'table.npz'}", "--arch", "mlp-s", "--members", "2", "--epochs", "2", "--workers", "0", "--out", run
    )
    assert result.exit_code == 0, result.stderr
    result = cli("hardset", run, "--top", "0.2", "--out", tmp_path / "hard.csv", "--export", f"hf:{tmp_path / 'hf'}")
    assert result.exit_code == 0, result.stderr
    hard = check_round_trip(tmp_path / "hf", tmp_path / "hard.csv", ["0", "1"])
    from confusion.datasets import load_for_run
    from confusion.store import RunStore

    data = load_for_run(RunStore.open(run).meta["config"], run=run).splits["val"]
    position = {sample: i for i, sample in enumerate(data.ids)}
    for row in hard:  # each sample's own feature vector, as the table had it
        np.testing.assert_allclose(row["features"], data.images[position[row["sample"]]].ravel(), rtol=1e-6)
        assert any(np.allclose(row["features"], v) for v in x[:, :])


def test_a_text_hard_set_round_trips(cli, tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 80)
    np.save(tmp_path / "probs.npy", rng.dirichlet([0.5, 0.5], size=(2, 2, 80)).astype(np.float32))
    np.save(tmp_path / "labels.npy", labels)
    pd.DataFrame({"sample": [str(i) for i in range(80)], "text": [f"document number {i}, a <b>tweet</b>" for i in range(80)]}).to_csv(
        tmp_path / "meta.csv", index=False
    )
    run = tmp_path / "run"
    args = ["import", "--probs", tmp_path / "probs.npy", "--labels", tmp_path / "labels.npy", "--classes", "neg,pos", "--meta", tmp_path / "meta.csv"]
    assert cli(*args, "--out", run).exit_code == 0
    result = cli("hardset", run, "--top", "0.25", "--out", tmp_path / "hard.csv", "--export", f"hf:{tmp_path / 'hf'}")
    assert result.exit_code == 0, result.stderr
    hard = check_round_trip(tmp_path / "hf", tmp_path / "hard.csv", ["neg", "pos"])
    assert all(row["text"] == f"document number {row['sample']}, a <b>tweet</b>" for row in hard)
    assert hard.features["label"].names == ["neg", "pos"]
