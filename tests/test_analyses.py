"""The analyses on synthetic arrays whose answers are known."""

import math

import numpy as np
import pytest

from confusion import analyses
from confusion.scores import confusion_scores


def test_auroc_known_answers():
    positives = np.array([False, False, True, True])
    assert analyses.auroc(np.array([0.1, 0.2, 0.8, 0.9]), positives) == 1.0
    assert analyses.auroc(np.array([0.9, 0.8, 0.2, 0.1]), positives) == 0.0
    assert analyses.auroc(np.array([0.5, 0.5, 0.5, 0.5]), positives) == 0.5
    assert analyses.auroc(np.array([0.1, 0.6, 0.5, 0.9]), positives) == 0.75
    assert math.isnan(analyses.auroc(np.array([0.1, 0.2]), np.array([True, True])))
    rng = np.random.default_rng(0)
    scores, labels = rng.random(500), rng.random(500) < 0.3
    from sklearn.metrics import roc_auc_score

    assert analyses.auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))


def test_aurc_perfect_and_worst_orderings():
    errors = np.array([0, 0, 1, 1.0])
    best = analyses.aurc(np.array([0.1, 0.2, 0.8, 0.9]), errors)
    worst = analyses.aurc(np.array([0.9, 0.8, 0.2, 0.1]), errors)
    assert best == pytest.approx((0 + 0 + 1 / 3 + 2 / 4) / 4)
    assert worst == pytest.approx((1 + 1 + 2 / 3 + 2 / 4) / 4)


def test_kendall_tau_identical_and_reversed():
    a = np.arange(50, dtype=float)
    assert analyses.kendall_tau(a, a * 3 + 1) == pytest.approx(1.0)
    assert analyses.kendall_tau(a, -a) == pytest.approx(-1.0)


def test_error_by_bin_counts_means_and_skips_small_bins():
    scores = np.array([0.05] * 30 + [0.55] * 30 + [0.95] * 30 + [0.45] * 5)
    errors = np.array([0.0] * 30 + [0.5] * 30 + [1.0] * 30 + [1.0] * 5)
    binned = analyses.error_by_bin(scores, errors, max_score=1.0, bins=10, min_count=20)
    assert binned.counts.tolist() == [30, 0, 0, 0, 5, 30, 0, 0, 0, 30]
    assert binned.used.tolist() == [True, False, False, False, False, True, False, False, False, True]
    np.testing.assert_allclose(binned.error[binned.used], [0.0, 0.5, 1.0])
    assert binned.pearson == pytest.approx(0.99795, abs=1e-4) and binned.spearman == pytest.approx(1.0)
    # the top edge belongs to the last bin
    assert analyses.error_by_bin(np.array([1.0]), np.array([1.0]), max_score=1.0, bins=4, min_count=1).counts[-1] == 1


def test_detection_report_with_a_perfect_detector():
    # two members; samples 0-1 easy and right, samples 2-3 confused and wrong for both
    final = np.array([[[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.45, 0.55]]] * 2)
    labels = np.array([0, 0, 0, 0])
    confusion = np.array([0.1, 0.2, 0.9, 0.95])
    report = analyses.detection_report(confusion, final, labels)
    assert report["error_rate"] == 0.5 and report["auroc_error"] == 1.0
    assert report["baselines"]["auroc_msp"] == 1.0 and "auroc_single_entropy" in report["baselines"]


def test_epoch_subsets_match_the_papers_spacing():
    subsets = analyses.epoch_subsets(100)
    assert (subsets["5"] + 1).tolist() == [20, 40, 60, 80, 100]
    assert (subsets["10"] + 1).tolist()[:3] == [10, 20, 30]
    assert len(subsets["33"]) == 33 and subsets["33"][-1] == 99
    assert set(analyses.epoch_subsets(20)) == {"5", "10", "all"}


def test_robustness_on_a_run_like_array():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(4, 0.5), size=(3, 20, 300))
    full, one = confusion_scores(probs), confusion_scores(probs, members=[0])
    result = analyses.robustness(full, one, rng.random(300), max_score=2.0, min_count=5)
    assert result["epochs"]["all"]["all"]["kendall_tau_with_full"] == pytest.approx(1.0)
    assert result["epochs"]["all"]["5"]["epochs_used"] == [4, 8, 12, 16, 20]  # training epochs, 1-based
    every_other = analyses.robustness(full, one, None, max_score=2.0, epoch_numbers=list(range(2, 41, 2)))
    assert every_other["epochs"]["1"]["5"]["epochs_used"] == [8, 16, 24, 32, 40]
    assert -1 <= result["seeds"]["1"]["kendall_tau_with_full"] < 1


def test_align_and_gallery():
    a, b = analyses.align(np.array(["x", "y", "z"]), np.array(["z", "q", "x"]))
    assert a.tolist() == [0, 2] and b.tolist() == [2, 0]
    picks = analyses.gallery(np.array([0.5, 0.1, 0.9, 0.3, 0.7]), np.array([0, 0, 0, 1, 1]), per_class=2)
    assert picks[0]["easiest"].tolist() == [1, 0] and picks[0]["hardest"].tolist() == [2, 0]
    assert picks[1]["hardest"].tolist() == [4, 3]


def test_aggregate_correlation():
    result = analyses.aggregate(np.array([0.2, 0.4, 0.6, 0.8]), np.array([0.95, 0.9, 0.8, 0.7]))
    assert result["pearson"] < -0.95 and result["n_runs"] == 4


def test_ensemble_and_mean_member_accuracy_are_different_things():
    # Two members, three samples: each member is right on 2 of 3, their average on all 3.
    final = np.array(
        [
            [[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]],
            [[0.4, 0.6], [0.9, 0.1], [0.3, 0.7]],
        ]
    )
    labels = np.array([0, 0, 1])
    assert analyses.ensemble_accuracy(final, labels) == pytest.approx(1.0)
    assert analyses.mean_member_accuracy(final, labels) == pytest.approx(2 / 3)
    assert analyses.ensemble_accuracy(final, np.array([-1, 0, -1])) == pytest.approx(1.0)  # unknown labels left out
    assert np.isnan(analyses.mean_member_accuracy(final, np.full(3, -1)))


def test_positions_and_align_join_by_id_and_name_what_is_missing():
    from confusion.errors import InputError

    ids = np.array(["a", "b", "c", "d"])
    assert analyses.positions(ids, ["c", "a"], "the run").tolist() == [2, 0]
    assert analyses.positions(np.array([10, 11]), np.array([11]), "the run").tolist() == [1]  # ids compared as text
    with pytest.raises(InputError) as caught:
        analyses.positions(ids, np.array(["b", "x", "y"]), "the run")
    assert str(caught.value) == "2 of these samples are not in the run (e.g. 'x')"
    in_a, in_b = analyses.align(np.array(["d", "a", "z", "b"]), ids)
    assert in_a.tolist() == [0, 1, 3] and in_b.tolist() == [3, 0, 1]
    assert in_a.dtype == np.intp and analyses.align(np.array(["q"]), ids)[0].tolist() == []
