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


# ----------------------------------------------------------------------------- references
def pairwise_auroc(scores, positives):
    """AUROC by counting every (positive, negative) pair, ties half: the definition."""
    scores, positives = np.ravel(scores), np.ravel(positives)
    high = [s for s, p in zip(scores, positives) if p]
    low = [s for s, p in zip(scores, positives) if not p]
    wins = sum((h > n) + 0.5 * (h == n) for h in high for n in low)
    return wins / (len(high) * len(low))


def risk_coverage_area(scores, errors):
    """AURC by a loop: keep samples from the lowest score up (ties in the order given)."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    risks, wrong = [], 0.0
    for kept, i in enumerate(order, start=1):
        wrong += errors[i]
        risks.append(wrong / kept)
    return sum(risks) / len(risks)


# Two members, five samples, two classes; labels 0 0 0 0 1.
# member 0 predicts 0 0 1 1 0 -> wrong on 2 3 4; member 1 predicts 0 1 1 0 0 -> wrong on 1 2 4.
FINAL = np.array(
    [
        [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.6, 0.4]],
        [[0.7, 0.3], [0.45, 0.55], [0.2, 0.8], [0.65, 0.35], [0.95, 0.05]],
    ]
)
LABELS = np.array([0, 0, 0, 0, 1])
WRONG = np.array([[0, 0, 1, 1, 1], [0, 1, 1, 0, 1]], dtype=bool)


def single_model_baselines(entropy_name):
    """What each member's own final prediction gives as a detector of its errors: 1 - its top
    probability and its entropy (bits), by AUROC and AURC, as plain references."""
    errors = WRONG.ravel().astype(float)
    own = {"msp": 1 - FINAL.max(axis=-1), entropy_name: -(FINAL * np.log2(FINAL)).sum(axis=-1)}
    return {
        **{f"auroc_{name}": pytest.approx(pairwise_auroc(values, WRONG)) for name, values in own.items()},
        **{f"aurc_{name}": pytest.approx(risk_coverage_area(values.ravel(), errors)) for name, values in own.items()},
    }


def test_member_errors_are_each_members_top1_errors():
    found = analyses.member_errors(FINAL, LABELS)
    assert found.dtype == np.float64 and found.tolist() == WRONG.astype(float).tolist()


def test_transfer_report_by_hand():
    score = np.array([0.1, 0.2, 0.3, 0.4, np.nan])  # the last sample has no value: left out
    found = analyses.transfer_report({"s": score, "none": np.full(5, np.nan)}, FINAL, LABELS, top=0.25)
    assert found["n"] == 5 and found["error_rate"] == pytest.approx(6 / 10)
    assert set(found["scores"]) == {"s"}  # a score with no value anywhere is skipped
    row = found["scores"]["s"]
    assert row["n"] == 4
    # top 25% of the 4 kept samples: ceil(1.0) = 1 sample, the highest (3), wrong for 1 of 2 members
    assert row["hard_error"] == 0.5
    assert row["rest_error"] == pytest.approx((0 + 0.5 + 1.0) / 3) and row["hard_to_rest"] == pytest.approx(1.0)
    events = np.broadcast_to(score[:4], (2, 4))
    assert row["auroc_error"] == pytest.approx(pairwise_auroc(events, WRONG[:, :4]))
    assert row["aurc_error"] == pytest.approx(risk_coverage_area(events.ravel(), WRONG[:, :4].ravel().astype(float)))
    assert found["own_baselines"] == single_model_baselines("entropy")


def test_transfer_report_hard_set_size_rounds_up_and_keeps_at_least_one():
    score = np.array([0.5, 0.1, 0.9, 0.3, 0.7])  # order from hardest: 2, 4, 0, 3, 1
    per_sample = WRONG.mean(axis=0)  # 0, 0.5, 1, 0.5, 1
    row = analyses.transfer_report({"s": score}, FINAL, LABELS, top=0.3)["scores"]["s"]  # ceil(1.5) = 2
    assert row["hard_error"] == pytest.approx(per_sample[[2, 4]].mean())
    assert row["rest_error"] == pytest.approx(per_sample[[0, 3, 1]].mean())
    row = analyses.transfer_report({"s": score}, FINAL, LABELS, top=0.01)["scores"]["s"]  # at least one
    assert row["hard_error"] == 1.0 and row["rest_error"] == pytest.approx(per_sample[[4, 0, 3, 1]].mean())
    # a rest with no error: the ratio is undefined, not infinite
    right = np.array([[[0.9, 0.1]] * 4 + [[0.1, 0.9]]] * 2)
    row = analyses.transfer_report({"s": np.array([0.0, 0, 0, 0, 1])}, right, np.array([0, 0, 0, 0, 0]), top=0.2)["scores"]["s"]
    assert row["hard_error"] == 1.0 and row["rest_error"] == 0.0 and math.isnan(row["hard_to_rest"])
    # one kept sample: no rest
    row = analyses.transfer_report({"s": np.array([np.nan, np.nan, 1.0, np.nan, np.nan])}, FINAL, LABELS)["scores"]["s"]
    assert row["hard_error"] == 1.0 and math.isnan(row["rest_error"]) and row["n"] == 1


def test_transfer_report_refuses_what_it_cannot_compare():
    from confusion.errors import InputError

    with pytest.raises(InputError) as caught:
        analyses.transfer_report({}, FINAL, LABELS[:4])
    assert str(caught.value) == "final_probs must be (members, 4, classes) with every label known"
    with pytest.raises(InputError) as caught:
        analyses.transfer_report({}, FINAL, np.array([0, 0, -1, 0, 1]))
    assert "every label known" in str(caught.value)
    for top in (0.0, 1.0, -0.1):
        with pytest.raises(InputError) as caught:
            analyses.transfer_report({}, FINAL, LABELS, top=top)
        assert str(caught.value) == f"top must be a fraction in (0, 1), got {top}"
    with pytest.raises(InputError) as caught:
        analyses.transfer_report({"s": np.zeros(4)}, FINAL, LABELS)
    assert str(caught.value) == "score 's' has shape (4,), expected (5,)"


def test_detection_report_by_hand():
    confusion = np.array([0.0, 0.5, 2.0, 1.0, 1.5])
    found = analyses.detection_report(confusion, FINAL, LABELS)
    events = np.broadcast_to(confusion, (2, 5))
    assert found["error_rate"] == pytest.approx(0.6)
    assert found["auroc_error"] == pytest.approx(pairwise_auroc(events, WRONG))
    assert found["aurc_error"] == pytest.approx(risk_coverage_area(events.ravel(), WRONG.ravel().astype(float)))
    assert found["baselines"] == single_model_baselines("single_entropy")
    assert found["error_definition"].startswith("top-1 error of each ensemble member at its last recorded epoch")


def test_error_ceiling_by_hand_against_its_definition():
    from confusion.reduced import FinalPredictions

    # The reference ensemble: confidently class 1 on samples 2 and 4 (0.95), unsure elsewhere.
    reference = FinalPredictions.from_probs(np.array([[[0.6, 0.4], [0.5, 0.5], [0.05, 0.95], [0.55, 0.45], [0.95, 0.05]]]))
    confusion = np.array([0.3, 0.1, 0.2, 0.4, 0.5])
    found = analyses.error_ceiling(confusion, reference, FINAL, LABELS, threshold=0.9)
    # Errors: member 0 on 2 (says 1: shared, confident), 3 (says 1, reference 0), 4 (says 0 =
    # reference's 0 at 0.95: shared); member 1 on 1, 2 (shared), 4 (shared). 4 of 6 shared.
    assert found["n_errors"] == 6 and found["threshold"] == 0.9
    assert found["shared_confident_error_share"] == pytest.approx(4 / 6)
    ceiling = np.broadcast_to(confusion, (2, 5)).copy()
    ceiling[0, 3] = ceiling[1, 1] = 1.5  # the unshared errors first: above every confusion
    assert found["auroc_ceiling"] == pytest.approx(pairwise_auroc(ceiling, WRONG))
    assert analyses.error_ceiling(confusion, reference, FINAL, LABELS, threshold=0.96)["shared_confident_error_share"] == 0.0
    at_threshold = analyses.error_ceiling(confusion, reference, FINAL, LABELS, threshold=0.95)  # above, not at
    assert at_threshold["shared_confident_error_share"] == 0.0
    no_top = FinalPredictions(reference.argmax, reference.entropy, reference.top1, reference.ensemble_argmax, None)
    unseen = analyses.error_ceiling(confusion, no_top, FINAL, LABELS)
    assert unseen["n_errors"] == 6 and math.isnan(unseen["auroc_ceiling"]) and math.isnan(unseen["shared_confident_error_share"])
    right = analyses.error_ceiling(confusion, reference, FINAL, FINAL[0].argmax(axis=-1))  # member 0 right everywhere
    assert right["n_errors"] == 2 and right["threshold"] == 0.9  # member 1 differs on 1 and 3
    for threshold in (0.0, 1.0):
        with pytest.raises(Exception) as caught:
            analyses.error_ceiling(confusion, reference, FINAL, LABELS, threshold=threshold)
        assert str(caught.value) == f"the ceiling's threshold must be a probability in (0, 1), got {threshold}"


def test_error_ceiling_of_a_score_missing_somewhere_has_a_share_but_no_ceiling():
    from confusion.reduced import FinalPredictions

    reference = FinalPredictions.from_probs(FINAL[:1])  # member 0 alone, as sure as it is
    found = analyses.error_ceiling(np.array([0.1, 0.2, np.nan, 0.3, 0.4]), reference, FINAL, LABELS, threshold=0.5)
    # shared: member 0's own errors (2, 3, 4, each above 0.5) and member 1's 2 and 4; not its 1
    assert found["n_errors"] == 6 and found["shared_confident_error_share"] == pytest.approx(5 / 6)
    assert math.isnan(found["auroc_ceiling"])


def test_auroc_and_aurc_match_their_definitions_on_ties_and_shapes():
    from confusion.errors import InputError

    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, size=60).astype(float)  # many ties
    errors = rng.random(60) < 0.4
    assert analyses.auroc(scores, errors) == pytest.approx(pairwise_auroc(scores, errors))
    assert analyses.auroc(scores.reshape(6, 10), errors.reshape(6, 10)) == pytest.approx(pairwise_auroc(scores, errors))
    assert analyses.aurc(scores, errors) == pytest.approx(risk_coverage_area(scores, errors.astype(float)))
    assert math.isnan(analyses.aurc(np.array([]), np.array([])))
    assert math.isnan(analyses.auroc(np.array([0.1, 0.2]), np.array([False, False])))
    with pytest.raises(InputError) as caught:
        analyses.auroc(np.zeros(3), np.zeros(4, dtype=bool))
    assert str(caught.value) == "scores (3,) and positives (4,) differ in length"


def test_bins_edges_rows_and_their_refusals():
    from confusion.errors import InputError

    assert analyses.bin_index(np.array([-1.0, 0.0, 0.5, 0.99, 1.0, 2.0]), np.array([0.5, 1.0])).tolist() == [0, 0, 1, 1, 2, 2]
    binned = analyses.error_by_bin(np.array([0.1, 0.1, 0.6, 0.9]), np.array([0.0, 1.0, 1.0, 1.0]), max_score=1.0, bins=2, min_count=2)
    np.testing.assert_allclose(binned.edges, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(binned.centers, [0.25, 0.75])
    assert binned.to_rows() == [
        {"bin_low": 0.0, "bin_high": 0.5, "count": 2, "error": 0.5},
        {"bin_low": 0.5, "bin_high": 1.0, "count": 2, "error": 1.0},
    ]
    assert math.isnan(binned.pearson) and math.isnan(binned.spearman)  # two bins: too few for a correlation
    sparse = analyses.error_by_bin(np.array([0.1, 0.6, 0.6]), np.array([1.0, 0.0, 1.0]), max_score=1.0, bins=2, min_count=2)
    assert sparse.to_rows()[0]["error"] is None and sparse.used.tolist() == [False, True] and math.isnan(sparse.error[0])
    everywhere = analyses.error_by_bin(np.array([0.1, 0.6]), np.array([1.0, 0.0]), max_score=1.0, bins=2, min_count=0)
    assert everywhere.used.tolist() == [True, True]  # min_count below 1 still needs a sample
    assert analyses.error_by_bin(np.array([0.1]), np.array([1.0]), max_score=1.0, bins=2, min_count=0).used.tolist() == [True, False]
    flat = analyses.error_by_bin(np.repeat([0.1, 0.4, 0.8], 3), np.full(9, 0.5), max_score=1.0, bins=3, min_count=1)
    assert flat.used.sum() == 3 and math.isnan(flat.pearson) and math.isnan(flat.spearman)  # no spread in error
    three = analyses.error_by_bin(np.array([0.1, 0.4, 0.8]), np.array([0.0, 0.5, 0.75]), max_score=1.0, bins=3, min_count=1)
    assert three.spearman == pytest.approx(1.0) and three.pearson == pytest.approx(np.corrcoef([1 / 6, 0.5, 5 / 6], [0, 0.5, 0.75])[0, 1])
    with pytest.raises(InputError) as caught:
        analyses.error_by_bin(np.zeros(3), np.zeros(2), max_score=1.0)
    assert str(caught.value) == "scores (3,) and errors (2,) differ in shape"


def test_kendall_joint_histogram_and_aggregate_edges():
    from confusion.errors import InputError

    assert math.isnan(analyses.kendall_tau(np.array([1.0]), np.array([2.0])))
    assert analyses.kendall_tau(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == pytest.approx(1.0)
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0])
    assert analyses.kendall_tau(a, b) == pytest.approx((5 - 1) / 6)  # 5 concordant pairs, 1 discordant
    with pytest.raises(InputError) as caught:
        analyses.kendall_tau(np.zeros(3), np.zeros(2))
    assert str(caught.value) == "score vectors differ in length: (3,) vs (2,)"
    counts, edges = analyses.joint_histogram(np.array([0.1, 0.9, 5.0, -1.0]), np.array([0.1, 0.1, 0.9, 0.6]), max_score=1.0, bins=2)
    np.testing.assert_allclose(edges, [0.0, 0.5, 1.0])
    assert counts.tolist() == [[1, 1], [1, 1]]  # 5.0 is clipped into the top bin, -1.0 into the bottom
    counts, edges = analyses.joint_histogram(np.zeros(3), np.zeros(3), max_score=2.0)
    assert counts.shape == (40, 40) and counts[0, 0] == 3 and edges[-1] == 2.0
    result = analyses.aggregate(np.array([0.1, 0.2, 0.4]), np.array([0.9, 0.8, 0.6]))
    assert result == {"n_runs": 3, "pearson": pytest.approx(-1.0), "spearman": pytest.approx(-1.0)}
    two = analyses.aggregate(np.array([0.1, 0.2]), np.array([0.9, 0.8]))
    assert two["n_runs"] == 2 and math.isnan(two["pearson"]) and math.isnan(two["spearman"])
    for confusion, accuracy in (([0.1, 0.2, 0.3], [0.9, 0.9, 0.9]), ([0.2, 0.2, 0.2], [0.9, 0.8, 0.7])):
        flat = analyses.aggregate(np.array(confusion), np.array(accuracy))
        assert math.isnan(flat["pearson"]) and math.isnan(flat["spearman"]) and flat["n_runs"] == 3
    spearman_only = analyses.aggregate(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.9, 0.8, 0.7, 0.0]))
    assert spearman_only["spearman"] == pytest.approx(-1.0) and -1 < spearman_only["pearson"] < -0.7


def test_epoch_subsets_exactly():
    assert {k: v.tolist() for k, v in analyses.epoch_subsets(6, counts=(2, 3, 4, 6)).items()} == {
        "2": [2, 5],
        "3": [1, 3, 5],
        "4": [1, 2, 3, 5],  # round(1.5) = 2, round(3) = 3, round(4.5) = 4 (half to even), 6; minus 1
        "all": [0, 1, 2, 3, 4, 5],
    }
    assert {k: v.tolist() for k, v in analyses.epoch_subsets(5).items()} == {"all": [0, 1, 2, 3, 4]}  # 5 is not below 5
    assert analyses.epoch_subsets(6)["5"].tolist() == [0, 1, 3, 4, 5]
    assert list(analyses.epoch_subsets(40)) == ["5", "10", "20", "33", "all"]


def test_robustness_entries_by_hand():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.full(3, 0.7), size=(2, 6, 40))
    full, one = confusion_scores(probs), confusion_scores(probs, members=[0])
    errors = (rng.random(40) < 0.5).astype(float)
    found = analyses.robustness(full, one, errors, max_score=1.6, bins=4, min_count=1)
    assert set(found["epochs"]) == {"all", "1"} and set(found["epochs"]["all"]) == {"5", "all"}
    for seeds, scores in (("all", full), ("1", one)):
        for name, picked in (("5", [0, 1, 3, 4, 5]), ("all", list(range(6)))):
            entry = found["epochs"][seeds][name]
            subset = scores.for_epochs(np.array(picked)).confusion
            assert entry["epochs_used"] == [p + 1 for p in picked]
            assert entry["mean_confusion"] == pytest.approx(subset.mean())
            assert entry["kendall_tau_with_full"] == pytest.approx(analyses.kendall_tau(subset, full.confusion))
            expected = analyses.error_by_bin(subset, errors, max_score=1.6, bins=4, min_count=1).pearson
            assert entry["pearson_reference_error_by_bin"] == pytest.approx(expected, nan_ok=True)
    assert found["seeds"]["all"]["kendall_tau_with_full"] == pytest.approx(1.0)
    assert found["seeds"]["1"]["kendall_tau_with_full"] == pytest.approx(analyses.kendall_tau(one.confusion, full.confusion))
    plain = analyses.robustness(full, one, None, max_score=1.6, epoch_numbers=[10, 20, 30, 40, 50, 60])
    assert "pearson_reference_error_by_bin" not in plain["epochs"]["all"]["all"]
    assert plain["epochs"]["1"]["5"]["epochs_used"] == [10, 20, 40, 50, 60]
    # the default bins and min_count: 20 bins of at least 20 samples, so 40 samples use at most 2
    default = analyses.robustness(full, one, errors, max_score=1.6)
    assert math.isnan(default["epochs"]["all"]["all"]["pearson_reference_error_by_bin"])


def test_gallery_picks_per_class_by_score_and_keeps_ties_in_order():
    scores = np.array([0.2, 0.2, 0.9, 0.1, 0.5, 0.5, 0.3])
    classes = np.array([1, 1, 1, 1, 2, 2, 2])
    picks = analyses.gallery(scores, classes, per_class=3)
    assert set(picks) == {1, 2} and all(isinstance(k, int) for k in picks)
    assert picks[1]["easiest"].tolist() == [3, 0, 1] and picks[1]["hardest"].tolist() == [2, 1, 0]
    assert picks[2]["easiest"].tolist() == [6, 4, 5] and picks[2]["hardest"].tolist() == [5, 4, 6]
    assert len(analyses.gallery(np.arange(20.0), np.zeros(20, dtype=int))[0]["hardest"]) == 6  # six by default


def test_accuracies_by_hand():
    assert analyses.ensemble_accuracy(FINAL, LABELS) == pytest.approx(3 / 5)  # average says 0 0 1 0 0
    assert analyses.mean_member_accuracy(FINAL, LABELS) == pytest.approx(1 - 6 / 10)
    assert analyses.mean_member_accuracy(FINAL, np.array([0, -1, -1, -1, 1])) == pytest.approx(0.5)  # sample 0 right, 4 wrong
    assert math.isnan(analyses.ensemble_accuracy(FINAL, np.full(5, -1)))


def test_edge_cases_give_their_answer_without_a_warning():
    """One positive and one negative is enough for an AUROC; errors given as 0/1 floats are
    events; one class only, constant inputs and empty rests are NaN by decision, not by a 0/0."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert analyses.auroc(np.array([0.2, 0.7]), np.array([0.0, 1.0])) == 1.0
        assert analyses.auroc(np.array([0.9, 0.1, 0.5, 0.3]), np.array([1, 0, 0, 0])) == 1.0  # one positive
        assert analyses.auroc(np.array([0.9, 0.1, 0.5, 0.3]), np.array([1, 1, 0, 1])) == pytest.approx(1 / 3)  # one negative
        assert math.isnan(analyses.auroc(np.array([0.1, 0.2, 0.3]), np.array([True, True, True])))
        assert math.isnan(analyses.auroc(np.array([0.1, 0.2, 0.3]), np.zeros(3)))
        assert math.isnan(analyses.aurc(np.array([]), np.array([])))
        row = analyses.transfer_report({"s": np.array([np.nan, np.nan, 1.0, np.nan, np.nan])}, FINAL, LABELS)["scores"]["s"]
        assert math.isnan(row["rest_error"])
        flat = analyses.error_by_bin(np.repeat([0.1, 0.4, 0.8], 3), np.full(9, 0.5), max_score=1.0, bins=3, min_count=1)
        assert math.isnan(flat.pearson)
        for confusion, accuracy in (([0.1, 0.2, 0.3], [0.9, 0.9, 0.9]), ([0.2, 0.2, 0.2], [0.9, 0.8, 0.7])):
            assert math.isnan(analyses.aggregate(np.array(confusion), np.array(accuracy))["pearson"])


def test_scores_of_any_dtype_and_scores_without_values_in_any_order():
    flag = np.array([False, True, True, False, True])  # a boolean score: flagged = harder
    found = analyses.transfer_report({"none": np.full(5, np.nan), "flag": flag, "count": np.array([0, 2, 3, 1, 4])}, FINAL, LABELS, top=0.4)
    assert list(found["scores"]) == ["flag", "count"]  # a score without values is skipped, not the end
    per_sample = WRONG.mean(axis=0)
    assert found["scores"]["flag"]["hard_error"] == pytest.approx(per_sample[[1, 2]].mean())  # the first two flagged
    assert found["scores"]["count"]["hard_error"] == pytest.approx(per_sample[[4, 2]].mean())


def test_ties_keep_the_sample_order_wherever_a_ranking_is_cut():
    """The hard set, the gallery and the risk-coverage curve cut a ranking; samples that tie
    keep their order (a stable sort), so the same scores always give the same set."""
    rng = np.random.default_rng(7)
    n = 200
    score = rng.integers(0, 3, n).astype(float)  # three values: long runs of ties
    labels = np.zeros(n, dtype=int)
    predicted = rng.integers(0, 2, n)
    final = np.stack([np.eye(2)[predicted] * 0.8 + 0.1])  # one member, right where it predicts 0
    wrong = predicted != labels
    row = analyses.transfer_report({"s": score}, final, labels, top=0.1)["scores"]["s"]
    hardest_first = sorted(range(n), key=lambda i: -score[i])  # Python's sort is stable
    assert row["hard_error"] == pytest.approx(wrong[hardest_first[:20]].mean())
    assert row["aurc_error"] == pytest.approx(risk_coverage_area(score, wrong.astype(float)))
    picks = analyses.gallery(score, np.zeros(n, dtype=int), per_class=30)[0]
    assert picks["easiest"].tolist() == sorted(range(n), key=lambda i: score[i])[:30]
    assert picks["hardest"].tolist() == sorted(range(n), key=lambda i: score[i])[::-1][:30]


def test_the_default_bins_are_twenty_of_at_least_twenty_samples(monkeypatch):
    scores = np.repeat(np.arange(20) / 20 + 0.025, 20)[:-1]  # 20 samples in every bin, 19 in the last
    errors = np.tile([0.0, 1.0], 200)[: len(scores)]
    binned = analyses.error_by_bin(scores, errors, max_score=1.0)
    assert len(binned.counts) == 20 and binned.used.tolist() == [True] * 19 + [False]
    one = analyses.error_by_bin(np.array([0.1, 0.6]), np.array([1.0, 1.0]), max_score=1.0, bins=2, min_count=1)
    assert one.error.tolist() == [1.0, 1.0]  # a bin of one sample holds its error
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.full(3, 0.6), size=(2, 4, 300))
    full, single = confusion_scores(probs), confusion_scores(probs, members=[0])
    calls = []

    def spy(scores, errors, **options):
        calls.append(options)
        return real(scores, errors, **options)

    real = analyses.error_by_bin
    monkeypatch.setattr(analyses, "error_by_bin", spy)
    analyses.robustness(full, single, rng.random(300), max_score=math.log2(3))
    assert calls and all(options == {"max_score": math.log2(3), "bins": 20, "min_count": 20} for options in calls)


def test_empty_joins_are_positions_and_both_scores_are_clipped():
    ids = np.array(["a", "b"])
    in_a, in_b = analyses.align(np.array(["q"]), ids)
    assert in_a.dtype == np.intp and in_b.dtype == np.intp and len(in_a) == len(in_b) == 0
    assert analyses.positions(ids, [], "the run").dtype == np.intp
    counts, _ = analyses.joint_histogram(np.array([0.1, 0.1, 0.9]), np.array([-2.0, 7.0, 0.1]), max_score=1.0, bins=2)
    assert counts.tolist() == [[1, 1], [1, 0]]  # b below 0 and above the top are clipped into the edge bins
