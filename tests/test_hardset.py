"""Hard-set selection, manifests (labelled and unlabeled splits), materialisation round trips."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from confusion.errors import InputError
from confusion.hardset import manifest, materialize, read_manifest, select
from confusion.importing import import_predictions
from confusion.runscores import score_run
from confusion.store import RunStore

from .conftest import needs_torch


def test_top_fraction_threshold_and_ties():
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.2, 0.7])
    assert select(scores, top=0.5).tolist() == [1, 3, 5]  # ties kept in sample order
    assert select(scores, top=0.1).tolist() == [1]  # ceil(0.6) = 1
    assert select(scores, threshold=0.5).tolist() == [1, 3, 5, 2]
    assert select(scores, top=1.0).tolist() == [1, 3, 5, 2, 4, 0]


def test_per_class_keeps_every_class_share():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.2, 0.3, 0.05])
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert select(scores, top=0.25).tolist() == [0, 1]
    chosen = select(scores, top=0.25, groups=groups)
    assert sorted(chosen.tolist()) == [0, 6] and chosen.tolist() == [0, 6]


@pytest.mark.parametrize(
    "kwargs, message", [({}, "exactly one"), ({"top": 0.1, "threshold": 1.0}, "exactly one"), ({"top": 1.5}, "fraction"), ({"top": 0.0}, "fraction")]
)
def test_bad_selection(kwargs, message):
    with pytest.raises(InputError, match=message):
        select(np.array([0.1, 0.2]), **kwargs)


def test_manifest_on_an_unlabeled_split(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(4, 0.4), size=(2, 3, 100))
    import_predictions(probs, tmp_path / "run", labels=rng.integers(0, 4, 100), split="val")
    import_predictions(probs[:, :, :40], tmp_path / "run", split="pool")
    store = RunStore.open(tmp_path / "run")
    table = manifest(store, "pool", top=0.25, per_class=True)
    assert (table["label"] == -1).all() and table["rank"].tolist() == list(range(1, len(table) + 1))
    predicted = probs[:, -1, :40].astype(np.float16).astype(np.float32).mean(0).argmax(1)
    counts = np.bincount(predicted, minlength=4)
    assert len(table) == sum(int(np.ceil(0.25 * c)) for c in counts if c)  # a share of every predicted class
    assert table["confusion"].is_monotonic_decreasing
    scores = score_run(store, "pool").confusion
    assert set(table["sample"]) <= set(store.sample_ids("pool")) and table["confusion"].iloc[0] == pytest.approx(scores.max())


def test_materialize_round_trips(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (3, 1, 6, 5)).astype(np.uint8)
    table = pd.DataFrame(
        {
            "sample": ["a/x.png", "b", "c"],
            "split": "val",
            "confusion": [2.0, 1.5, 1.0],
            "confusion_normalized": [0.9, 0.7, 0.5],
            "rank": [1, 2, 3],
            "label": [1, -1, 0],
            "predicted": [1, 0, 0],
            "source": "",
        }
    )
    written = materialize(table, images, ["T-shirt/top", "cat<1>"], tmp_path / "folders")
    assert (tmp_path / "folders" / "cat_1" / "00001_a_x.png.png").exists()
    assert (tmp_path / "folders" / "unlabeled" / "00002_b.png").exists()
    back = np.asarray(Image.open(tmp_path / "folders" / "T-shirt_top" / "00003_c.png"))
    np.testing.assert_array_equal(back, images[2, 0])
    assert read_manifest(tmp_path / "folders" / "manifest.csv")["sample"].tolist() == ["a/x.png", "b", "c"]
    assert len(written) == 4
    materialize(table, images, ["x", "y"], tmp_path / "npz", format="npz")
    with np.load(tmp_path / "npz" / "hardset.npz") as archive:
        np.testing.assert_array_equal(archive["x"], images)
        assert archive["ids"].tolist() == ["a/x.png", "b", "c"] and archive["y"].tolist() == [1, -1, 0]


@needs_torch
def test_hardset_command_on_a_trained_run(tmp_path, cli):
    assert (
        cli("train", "--out", tmp_path / "run", "--data", "digits", "--arch", "mlp-s", "--members", "2", "--epochs", "2", "--workers", "0").exit_code
        == 0
    )
    result = cli("hardset", tmp_path / "run", "--top", "0.1", "--per-class", "--out", tmp_path / "hard.csv", "--materialize", tmp_path / "images")
    assert result.exit_code == 0, result.stderr
    table = read_manifest(tmp_path / "hard.csv")
    assert 36 <= len(table) <= 46 and set(table["split"]) == {"val"}
    assert sum(1 for _ in (tmp_path / "images").rglob("*.png")) == len(table)
    result = cli("hardset", tmp_path / "run", "--threshold", "99", "--out", tmp_path / "none.csv")
    assert result.exit_code == 0 and len(read_manifest(tmp_path / "none.csv")) == 0
    result = cli("hardset", tmp_path / "run", "--out", tmp_path / "x.csv")
    assert result.exit_code == 2 and "exactly one of --top" in result.stderr
    result = cli("hardset", tmp_path / "run", "--top", "0.1", "--split", "test", "--out", tmp_path / "x.csv")
    assert result.exit_code == 2 and "no split 'test'" in result.stderr


def test_another_label_free_score_can_rank_the_hard_set(tmp_path, cli):
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.full(4, 0.4), size=(3, 5, 200))
    import_predictions(probs, tmp_path / "run", labels=rng.integers(0, 4, 200))
    store = RunStore.open(tmp_path / "run")
    by_confusion = manifest(store, "val", top=0.1)
    by_last = manifest(store, "val", top=0.1, score="last_epoch_entropy")
    assert (by_confusion["score"] == "confusion").all() and np.allclose(by_confusion["score_value"], by_confusion["confusion"])
    expected = score_run(store, "val").per_epoch[-1]
    assert np.allclose(by_last["score_value"], np.sort(expected)[::-1][:20])
    assert set(by_last["sample"]) != set(by_confusion["sample"])
    result = cli("hardset", tmp_path / "run", "--out", tmp_path / "hard.csv", "--top", "0.1", "--score", "margin")
    assert result.exit_code == 2 and "label-free score" in result.stderr and not (tmp_path / "hard.csv").exists()
