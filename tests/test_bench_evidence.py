"""bench/evidence.py (the evidence table's arithmetic) and bench/peers.py (cleanlab on a recording)."""

import sys
from pathlib import Path

import numpy as np
import pytest

from confusion import Recorder
from confusion.analyses import auroc
from confusion.store import RunStore

from .conftest import needs_torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from evidence import Model, evidence, rank_average, weighted_auroc


def test_weighted_auroc_is_the_auroc_of_the_events_drawn():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, 300).astype(float)  # ties included
    positives = rng.random(300) < 0.3
    assert weighted_auroc(scores, positives, np.ones(300)) == pytest.approx(auroc(scores, positives))
    counts = rng.integers(0, 4, 300).astype(float)  # a bootstrap draw: each event 0..3 times
    repeated = np.repeat(np.arange(300), counts.astype(int))
    assert weighted_auroc(scores, positives, counts) == pytest.approx(auroc(scores[repeated], positives[repeated]))


def test_evidence_against_hand_numbers():
    errors = np.array([[True, False, False, True]])
    model = Model("m", errors, own_msp=np.array([[0.4, 0.1, 0.3, 0.2]]))
    found = evidence({"perfect": np.array([1.0, 0.0, 0.0, 1.0]), "reversed": np.array([0.0, 1.0, 1.0, 0.0])}, [model], boot=20, top=0.5)
    assert found["perfect"]["mean_auroc"] == 1.0 and found["reversed"]["mean_auroc"] == 0.0
    assert found["own_msp"]["mean_auroc"] == 0.75  # 0.4 beats both negatives, 0.2 beats 0.1 only
    assert found["perfect"]["beats_own_msp"] == 1 and found["reversed"]["beats_own_msp"] == 0
    assert found["perfect"]["ci95"][0] <= 1.0 <= found["perfect"]["ci95"][1] + 1e-12
    np.testing.assert_allclose(rank_average(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])), [2 / 3] * 3)


def test_cleanlab_flags_the_sample_whose_label_the_ensemble_confidently_contradicts(tmp_path):
    pytest.importorskip("cleanlab")
    from peers import peer_scores

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 60)
    probs = np.full((60, 3), 0.05)
    probs[np.arange(60), labels] = 0.9
    labels_given = labels.copy()
    labels_given[7] = (labels[7] + 1) % 3  # a wrong label the model confidently contradicts
    Recorder.create(tmp_path / "run", n_classes=3, members=1, splits={"val": labels_given})
    with Recorder.open(tmp_path / "run").member(0) as writer:
        writer.log("val", 1, probs)
        writer.end_epoch(1)
    found = peer_scores(RunStore.open(tmp_path / "run"))
    assert found["cleanlab find_label_issues"][7] == 1 and found["cleanlab find_label_issues"].sum() == 1
    for method in ("self_confidence", "normalized_margin", "confidence_weighted_entropy"):
        assert np.argmax(found[f"cleanlab {method}"]) == 7


def test_datagnosis_plugins_train_on_the_split_and_find_its_flipped_label(tmp_path):
    """bench/peers.py --datagnosis: each plugin trains through datagnosis' own loop on the
    labelled samples, and its scores come back aligned with the split (the flipped label is
    among the hardest), higher = harder, NaN where the label is unknown."""
    pytest.importorskip("datagnosis")
    import argparse

    import torch
    from peers import DATAGNOSIS, check_plugins, datagnosis_scores

    from confusion.datasets import load_dataset

    torch.set_num_threads(1)
    split = load_dataset("fashion-mnist").splits["val"].subset(np.arange(200))
    split.labels[5] = (split.labels[5] + 1) % 10  # a wrong label
    split.labels[9] = -1
    found = datagnosis_scores(split, 10, arch="cnn-s", epochs=5, workspace=tmp_path, plugins=("data_maps", "aum", "el2n"), lr=3e-3)
    assert list(found) == ["datagnosis data_maps", "datagnosis aum", "datagnosis el2n"]
    for name, values in found.items():
        assert np.isnan(values[9]) and np.isfinite(np.delete(values, 9)).all(), name
        assert (values > values[5]).sum() < 10, name  # the flipped label within the hardest 5%
    assert check_plugins("all") == DATAGNOSIS and check_plugins("el2n, aum") == ("el2n", "aum")
    with pytest.raises(argparse.ArgumentTypeError, match="got 'grand'"):
        check_plugins("grand")


@needs_torch
def test_the_probes_extra_views_move_pixels_as_named():
    import torch
    from signal_probes import EXTRA_VIEWS, shifted, warped

    x = torch.arange(1, 26, dtype=torch.float32).reshape(1, 1, 5, 5)
    right = shifted(x, 1, 0)  # one pixel to the right, the left column zero
    assert right[0, 0, :, 0].eq(0).all() and torch.equal(right[0, 0, :, 1:], x[0, 0, :, :-1])
    up_left = EXTRA_VIEWS["up-left"](x)  # two up and two left, the last two rows and columns zero
    assert torch.equal(up_left[0, 0, :3, :3], x[0, 0, 2:, 2:]) and up_left[0, 0, 3:].eq(0).all() and up_left[0, 0, :, 3:].eq(0).all()
    flip_down = EXTRA_VIEWS["flip-down"](x)  # mirrored, then two down
    assert torch.equal(flip_down[0, 0, 2:], x.flip(-1)[0, 0, :-2]) and flip_down[0, 0, :2].eq(0).all()
    torch.testing.assert_close(warped(x), x)  # no rotation, no zoom: the image itself
    torch.testing.assert_close(warped(x, 90.0)[0, 0, 2, 2], x[0, 0, 2, 2])  # the centre stays where it is
    assert not torch.allclose(warped(x, 10.0), x) and not torch.allclose(warped(x, scale=1.1), x)
