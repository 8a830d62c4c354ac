"""Difficulty scores from one recording, computed by hand on a tiny run, and their transfer."""

import numpy as np
import pandas as pd
import pytest

from confusion.analyses import auroc, transfer_report
from confusion.difficulty import NEIGHBOURHOOD, SCORES, VIEW_SCORES, WITH_LABELS, difficulty_scores, early_epoch_position, hardness
from confusion.errors import InputError
from confusion.importing import import_predictions
from confusion.store import RunStore

# 2 members x 3 epochs x 3 samples x 2 classes; sample 2 has no label.
PROBS = np.array(
    [
        [[[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]], [[0.8, 0.2], [0.6, 0.4], [0.5, 0.5]], [[1.0, 0.0], [0.3, 0.7], [0.5, 0.5]]],
        [[[0.7, 0.3], [0.4, 0.6], [0.5, 0.5]], [[0.6, 0.4], [0.2, 0.8], [0.5, 0.5]], [[1.0, 0.0], [0.1, 0.9], [0.5, 0.5]]],
    ]
)
LABELS = np.array([0, 0, -1])


@pytest.fixture
def table(tmp_path):
    import_predictions(PROBS, tmp_path / "run", labels=LABELS)
    return difficulty_scores(RunStore.open(tmp_path / "run"), "val")


def test_each_score_by_hand(table):
    one = table.iloc[1]  # label 0; ensemble averages (0.3, 0.7), (0.4, 0.6), (0.2, 0.8): always class 1
    assert one["ensemble_msp"] == pytest.approx((0.3 + 0.4 + 0.2) / 3, abs=1e-3)
    assert one["flips"] == 0 and one["stable_epoch"] == 1
    assert one["cartography_confidence"] == pytest.approx((0.2 + 0.6 + 0.3 + 0.4 + 0.2 + 0.1) / 6, abs=1e-3)
    assert one["cartography_variability"] == pytest.approx((np.std([0.2, 0.6, 0.3]) + np.std([0.4, 0.2, 0.1])) / 2, abs=1e-3)
    assert one["forgetting_events"] == pytest.approx(0.5)  # member 0: wrong, right, wrong; member 1 never right
    assert one["margin"] == pytest.approx((-0.6 + 0.2 - 0.4 - 0.2 - 0.6 - 0.8) / 6, abs=1e-3)
    assert one["el2n"] == pytest.approx((np.hypot(0.8, 0.8) + np.hypot(0.6, 0.6)) / 2, abs=1e-3)  # first epoch
    # Entropies in bits: the last epoch's average (0.2, 0.8); member 0 alone at its last epoch (0.3, 0.7).
    h = lambda p: -(p * np.log2(p)).sum()  # noqa: E731
    assert one["last_epoch_entropy"] == pytest.approx(h(np.array([0.2, 0.8])), abs=1e-3)
    assert one["single_model_entropy"] == pytest.approx(h(np.array([0.3, 0.7])), abs=1e-3)
    assert one["member_entropy"] == pytest.approx(np.mean([h(np.array(p)) for p in ([0.2, 0.8], [0.6, 0.4], [0.3, 0.7])]), abs=1e-3)
    uniform = table.iloc[2]
    assert uniform["confusion"] == pytest.approx(1.0) and uniform["disagreement"] == pytest.approx(0.0, abs=1e-9)


def test_label_scores_are_empty_not_zero_where_the_label_is_unknown(table):
    assert table.loc[2, WITH_LABELS].isna().all()
    assert table.loc[:1, WITH_LABELS].notna().all().all()
    assert list(table.columns) == ["sample", "split", "label", *SCORES]


def test_flips_and_the_epoch_the_prediction_settles(tmp_path):
    flipping = np.array([[[[0.9, 0.1]], [[0.2, 0.8]], [[0.7, 0.3]], [[0.6, 0.4]]]])  # classes 0, 1, 0, 0
    import_predictions(flipping, tmp_path / "run")
    row = difficulty_scores(RunStore.open(tmp_path / "run"), "val").iloc[0]
    assert row["flips"] == 2 and row["stable_epoch"] == 3


def test_hardness_orients_every_score_higher_is_harder():
    assert hardness(np.array([0.9, 0.1]), "cartography_confidence").tolist() == [-0.9, -0.1]
    assert hardness(np.array([0.9, 0.1]), "confusion").tolist() == [0.9, 0.1]
    with pytest.raises(InputError, match="unknown difficulty score"):
        hardness(np.zeros(2), "vibes")
    assert early_epoch_position(20) == 1 and early_epoch_position(3) == 0


def test_transfer_report_against_hand_counts():
    labels = np.array([0, 1, 0, 1])
    final = np.array([[[0.9, 0.1], [0.6, 0.4], [0.4, 0.6], [0.2, 0.8]]])  # wrong on samples 1 and 2
    found = transfer_report({"good": np.array([0.0, 1.0, 0.9, 0.1]), "bad": np.array([1.0, 0.0, 0.1, 0.9])}, final, labels, top=0.5)
    assert found["scores"]["good"]["auroc_error"] == 1.0 and found["scores"]["bad"]["auroc_error"] == 0.0
    assert found["scores"]["good"]["hard_error"] == 1.0 and found["scores"]["good"]["rest_error"] == 0.0
    own_msp = 1 - final[0].max(axis=1)
    assert found["own_baselines"]["auroc_msp"] == auroc(own_msp, np.array([False, True, True, False]))
    with pytest.raises(InputError, match="every label known"):
        transfer_report({}, final, np.array([0, 1, 0, -1]))


def test_difficulty_command_writes_every_score(tmp_path, cli, probs_file):
    path, labels_path, _, _ = probs_file
    assert cli("import", "--probs", path, "--labels", labels_path, "--out", tmp_path / "run").exit_code == 0
    result = cli("difficulty", tmp_path / "run", "--out", tmp_path / "d.parquet")
    assert result.exit_code == 0, result.stderr
    table = pd.read_parquet(tmp_path / "d.parquet")
    assert len(table) == 200 and set(SCORES) <= set(table.columns)
    # An imported run keeps no embeddings or views: those columns are empty and the command says why.
    empty = NEIGHBOURHOOD + VIEW_SCORES
    assert table[[n for n in SCORES if n not in empty]].notna().all().all() and table[empty].isna().all().all()
    assert "keeps no embeddings" in result.stderr and "no test-time views" in result.stderr
    result = cli("difficulty", tmp_path / "run", "--out", tmp_path / "d.txt")
    assert result.exit_code == 2 and ".csv or .parquet" in result.stderr
    result = cli("difficulty", tmp_path / "run", "--out", tmp_path / "d.csv", "--split", "test")
    assert result.exit_code == 2 and "no split 'test'" in result.stderr and not (tmp_path / "d.csv").exists()


def test_a_one_epoch_run_has_every_score_defined(tmp_path):
    """A run with one recorded epoch is valid input: no flips, and the prediction is stable from
    that epoch on (this was a traceback: argmax of an empty sequence)."""
    import_predictions(PROBS[:, -1:], tmp_path / "run", labels=LABELS)
    table = difficulty_scores(RunStore.open(tmp_path / "run"), "val")
    assert (table["flips"] == 0).all() and (table["stable_epoch"] == 1).all()
    assert table.loc[:1, WITH_LABELS].notna().all().all() and (table.loc[:1, "forgetting_events"] == 0).all()


def test_only_the_scores_asked_for_are_computed_and_they_equal_the_full_table(table, tmp_path):
    store = RunStore.open(tmp_path / "run")
    some = difficulty_scores(store, "val", names=["margin", "flips", "member_entropy"])
    assert list(some.columns) == ["sample", "split", "label", "member_entropy", "flips", "margin"]
    for name in ("member_entropy", "flips", "margin"):
        np.testing.assert_array_equal(some[name].to_numpy(), table[name].to_numpy())
    with pytest.raises(InputError, match="names must name difficulty scores"):
        difficulty_scores(store, "val", names=["nope"])


def test_a_score_is_one_registered_class():
    from confusion.difficulty import REGISTRY, FromFit, FromNeighbourhood, FromRecord, FromScores, FromViews

    assert list(REGISTRY) == list(SCORES)
    for name, score in REGISTRY.items():
        assert score.info is SCORES[name] and isinstance(score, (FromScores, FromRecord, FromNeighbourhood, FromViews, FromFit))
        assert score.info.needs_labels == (name in WITH_LABELS)
        if isinstance(score, FromRecord):
            assert score.fields, f"{name} declares the record fields it reads"


@pytest.mark.parametrize(
    "right, events",
    [
        ([1, 1, 0], 1),  # learned, then forgotten
        ([0, 0, 1], 0),  # learned late: no forgetting
        ([0, 1, 1], 0),
        ([1, 0, 1, 0], 2),
        ([0, 1, 0, 1], 1),
        ([1, 1, 1], 0),
        ([0, 0, 0], 0),
    ],
)
def test_forgetting_counts_right_to_wrong_not_wrong_to_right(tmp_path, right, events):
    """Issue 29: counting learning (wrong -> right) instead of forgetting gave the same answer on
    the only case there was (wrong, right, wrong)."""
    probs = np.array([[[[0.8, 0.2]] if r else [[0.3, 0.7]] for r in right]])  # one member, label 0
    import_predictions(probs, tmp_path / "run", labels=np.array([0]))
    assert difficulty_scores(RunStore.open(tmp_path / "run"), "val")["forgetting_events"].iloc[0] == events


def _reference(probs: np.ndarray, labels: np.ndarray, epochs: np.ndarray) -> dict[str, np.ndarray]:
    """Every difficulty column in a few lines of plain float64 numpy, from the probabilities as
    stored (float16): independent of the library's helpers (issue 29)."""
    p = probs.astype(np.float64)  # (members, epochs, samples, classes)

    def bits(q):
        return -(np.where(q > 0, q * np.log2(np.where(q > 0, q, 1)), 0)).sum(axis=-1)

    average = p.mean(axis=0)  # eq. 1: (epochs, samples, classes)
    predicted = average.argmax(axis=-1)
    changed = predicted[1:] != predicted[:-1]
    last = np.array([max([0] + [t + 1 for t in range(len(changed)) if changed[t, x]]) for x in range(p.shape[2])])
    n = p.shape[2]
    rows = np.arange(n)
    label_p = p[:, :, rows, np.maximum(labels, 0)]  # (members, epochs, samples)
    others = p.copy()
    others[:, :, rows, np.maximum(labels, 0)] = -1
    right = p.argmax(axis=-1) == labels
    early = max(0, int(np.ceil(0.1 * p.shape[1])) - 1)
    onehot = np.eye(p.shape[3])[np.maximum(labels, 0)]
    known = labels >= 0
    columns = {
        "confusion": bits(average).mean(axis=0),  # eqs. 2-3
        "expected_entropy": bits(p).mean(axis=(0, 1)),
        "last_epoch_entropy": bits(average[-1]),
        "member_entropy": bits(p[0]).mean(axis=0),
        "single_model_entropy": bits(p[0, -1]),
        "ensemble_msp": (1 - average.max(axis=-1)).mean(axis=0),
        "flips": changed.sum(axis=0).astype(float),
        "stable_epoch": epochs[last].astype(float),
        "cartography_confidence": label_p.mean(axis=(0, 1)),
        "cartography_variability": label_p.std(axis=1).mean(axis=0),
        "forgetting_events": (right[:, :-1] & ~right[:, 1:]).sum(axis=1).mean(axis=0).astype(float),
        "margin": (label_p - others.max(axis=-1)).mean(axis=(0, 1)),
        "el2n": np.sqrt(((p[:, early] - onehot) ** 2).sum(axis=-1)).mean(axis=0),
    }
    columns["disagreement"] = np.maximum(columns["confusion"] - columns["expected_entropy"], 0)
    for name in WITH_LABELS:
        columns[name] = np.where(known, columns[name], np.nan)
    return columns


@pytest.mark.parametrize("keep", ["raw", "reduced"])
def test_every_column_matches_an_independent_float64_reference(tmp_path, keep):
    """Issue 29: every difficulty column of a raw and of a reduced run against plain float64
    numpy over the stored probabilities, within the documented precision: 1e-6 bits for the
    entropies (float32 kernels; README 'The score'), 1e-6 for probabilities (the reduced record
    keeps float16 and float32 values exactly), exact for counts and epochs."""
    rng = np.random.default_rng(29)
    probs = rng.dirichlet(np.full(6, 0.4), size=(3, 7, 300)).astype(np.float16)
    labels = rng.integers(-1, 6, 300)
    import_predictions(probs, tmp_path / "run", labels=labels, keep=keep)
    store = RunStore.open(tmp_path / "run")
    table = difficulty_scores(store, "val")
    reference = _reference(probs, labels, np.array(store.recorded_epochs))
    # The scores of embeddings, views and the fit have their references in tests/test_signals.py.
    assert set(reference) == set(SCORES) - set(NEIGHBOURHOOD) - set(VIEW_SCORES) - {"combined"}
    for name, expected in reference.items():
        np.testing.assert_allclose(table[name].to_numpy(), expected, atol=1e-6, rtol=0, err_msg=name)


def test_every_score_documents_its_range_unit_direction_reads_and_source():
    """README: 19 scores, each with its range, unit, which way is harder, what it reads and the
    paper it comes from (`confusion.difficulty.SCORES`)."""
    assert len(SCORES) == 19
    for name, info in SCORES.items():
        assert info.name == name and info.harder in ("higher", "lower"), name
        for field in ("range", "unit", "reads", "source", "description"):
            assert getattr(info, field).strip(), f"{name} has no {field}"


def test_label_free_scores_are_checked_by_name_and_computed_as_the_table(tmp_path):
    """`check_label_free` and `label_free_score` (what hardset and mitigate rank by)."""
    from confusion.difficulty import LABEL_FREE, check_label_free, label_free_score
    from confusion.errors import ParameterError
    from confusion.runscores import score_run

    for name in LABEL_FREE:
        check_label_free(name)
    for name in ("margin", "no such score"):
        with pytest.raises(ParameterError) as caught:
            check_label_free(name)
        assert str(caught.value) == f"score must be a label-free score ({', '.join(LABEL_FREE)}), got {name!r}"
    assert "confusion" in LABEL_FREE and not set(WITH_LABELS) & set(LABEL_FREE)
    probs = np.random.default_rng(4).dirichlet(np.ones(4), size=(2, 3, 30))
    import_predictions(probs, tmp_path / "run", labels=np.random.default_rng(5).integers(0, 4, 30))
    store = RunStore.open(tmp_path / "run")
    np.testing.assert_array_equal(label_free_score(store, "val"), score_run(store, "val", decomposition=False).confusion)
    table = difficulty_scores(store, "val")
    for name in ("disagreement", "last_epoch_entropy", "ensemble_msp"):
        got = label_free_score(store, "val", name)
        assert got.dtype == np.float64 and got.shape == (30,)
        np.testing.assert_allclose(got, table[name].to_numpy(np.float64), rtol=0, atol=1e-12)
    with pytest.raises(ParameterError, match="got 'margin'"):
        label_free_score(store, "val", "margin")


def test_combined_is_refused_in_one_line_without_a_usable_calibration_split_or_target(tmp_path):
    from confusion.difficulty import fit_combined_run
    from confusion.errors import ParameterError

    rng = np.random.default_rng(6)
    probs = rng.dirichlet(np.ones(3), size=(2, 2, 60))
    import_predictions(probs, tmp_path / "run", labels=rng.integers(0, 3, 60))
    store = RunStore.open(tmp_path / "run")
    with pytest.raises(ParameterError) as caught:
        fit_combined_run(store, calibration="test")
    assert str(caught.value) == f"calibration must be a split of {store.path} (val), got 'test'"
    import_predictions(probs, tmp_path / "other", split="test")
    with pytest.raises(ParameterError) as caught:
        fit_combined_run(store, target=tmp_path / "other")
    assert str(caught.value) == f"target {tmp_path / 'other'} has no split 'val'"
    import_predictions(probs[:, :, :50], tmp_path / "fewer", labels=rng.integers(0, 3, 50))
    with pytest.raises(ParameterError) as caught:
        fit_combined_run(store, target=tmp_path / "fewer")
    assert str(caught.value) == f"target {tmp_path / 'fewer'} lacks 10 samples of split 'val' (first: '50')"
    import_predictions(probs[:, :, ::-1], tmp_path / "same", labels=rng.integers(0, 3, 60), sample_ids=[str(i) for i in range(59, -1, -1)])
    fit = fit_combined_run(store, target=tmp_path / "same", folds=2)
    assert fit.target == str((tmp_path / "same").resolve())
    unlabeled = tmp_path / "unlabeled"
    import_predictions(probs, unlabeled)
    with pytest.raises(InputError) as caught:
        fit_combined_run(RunStore.open(unlabeled))
    assert str(caught.value) == "combined is fitted on the labels of split 'val', and it has 0 labelled samples"


def test_the_documented_table_of_scores_is_the_catalogue():
    """docs/scores.md lists every score with its range, unit, direction, cost and source, word
    for word as `SCORES` holds them (a changed word in one is a changed contract)."""
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "scores.md").read_text(encoding="utf-8")
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    documented = {}
    for line in rows:
        cells = [cell.strip().replace("\\|", "|") for cell in line.strip("|").split(" | ")]
        documented[cells[0].strip("`")] = cells[1:]
    assert list(documented) == list(SCORES)
    for name, info in SCORES.items():
        expected = ["yes" if info.needs_labels else "no", info.harder, info.range, info.unit, info.reads, info.source, info.description]
        assert documented[name] == expected, name
    assert {name for name, info in SCORES.items() if info.needs_labels} == set(WITH_LABELS)
    assert {name: info.harder for name, info in SCORES.items() if info.harder == "lower"} == {"cartography_confidence": "lower", "margin": "lower"}


def test_every_column_is_float64_and_hardness_casts_what_it_is_given(table):
    """The table's score columns, `hardness` and a plug-in score's `values` are float64 whatever
    the inputs' dtype (a float16 record, integer counts, an empty column)."""
    from confusion.difficulty import Block, FromRecord, LabelScore

    for name in SCORES:
        assert table[name].dtype == np.float64, name
    got = hardness(np.array([1, 2]), "margin")
    assert got.dtype == np.float64 and got.tolist() == [-1.0, -2.0]
    assert hardness(np.array([1, 2]), "flips").dtype == np.float64
    with pytest.raises(InputError) as caught:
        hardness(np.zeros(2), "vibes")
    assert str(caught.value) == f"unknown difficulty score 'vibes'; choose from {', '.join(SCORES)}"

    class Counted(FromRecord):
        def compute(self, block):
            return np.arange(len(block.labels))  # integers

    class Labelled(LabelScore):
        def compute(self, block):
            return np.arange(len(block.labels))

    block = Block({}, np.array([0, -1, 2]), np.array([1]))
    assert Counted().values(block).dtype == np.float64
    got = Labelled().values(block)
    assert got.dtype == np.float64 and np.isnan(got[1]) and got[[0, 2]].tolist() == [0.0, 1.0]


def test_a_sample_that_never_changes_is_stable_from_the_first_epoch_beside_one_that_does(tmp_path):
    steady_then_moving = np.array([[[[0.9, 0.1], [0.9, 0.1]], [[0.8, 0.2], [0.2, 0.8]], [[0.7, 0.3], [0.3, 0.7]]]])
    import_predictions(steady_then_moving, tmp_path / "run")
    table = difficulty_scores(RunStore.open(tmp_path / "run"), "val")
    assert table["stable_epoch"].tolist() == [1.0, 2.0] and table["flips"].tolist() == [0.0, 1.0]


def test_names_are_refused_word_for_word_and_an_empty_list_is_not_all(table, tmp_path):
    from confusion.errors import ParameterError

    store = RunStore.open(tmp_path / "run")
    for names, shown in ((["nope", "margin"], "['nope']"), ([], "[]")):
        with pytest.raises(ParameterError) as caught:
            difficulty_scores(store, "val", names=names)
        assert str(caught.value) == f"names must name difficulty scores ({', '.join(SCORES)}), got {shown}"


def test_a_run_with_no_committed_epoch_is_one_line(tmp_path):
    from confusion import Recorder

    Recorder.create(tmp_path / "run", n_classes=2, members=1, splits={"val": np.array([0, 1])})
    store = RunStore.open(tmp_path / "run")
    with pytest.raises(InputError) as caught:
        difficulty_scores(store, "val")
    assert str(caught.value) == f"{store.path} has no committed epoch yet; nothing to score"


@pytest.mark.parametrize("keep", ["raw", "reduced"])
def test_the_record_is_read_block_by_block_with_progress_and_only_the_fields_asked_for(tmp_path, monkeypatch, keep):
    """`progress` gets each block's sample count; a reduced run reads only the fields of the
    scores asked for; block by block gives the numbers of one block."""
    import confusion.difficulty as difficulty
    from confusion.difficulty import REGISTRY

    rng = np.random.default_rng(8)
    probs = rng.dirichlet(np.ones(3), size=(2, 3, 50)).astype(np.float16)
    import_predictions(probs, tmp_path / "run", labels=rng.integers(0, 3, 50), keep=keep)
    store = RunStore.open(tmp_path / "run")
    whole = difficulty_scores(store, "val", names=["flips", "margin"])
    asked = []
    reading = RunStore.record_blocks

    def spy(self, split, block_bytes, fields=None):
        asked.append(None if fields is None else list(fields))
        return reading(self, split, block_bytes, fields)

    monkeypatch.setattr(RunStore, "record_blocks", spy)
    monkeypatch.setattr(difficulty, "BLOCK_BYTES", 200)  # several blocks of a few samples
    seen = []
    blocks = difficulty_scores(store, "val", names=["flips", "margin"], progress=seen.append)
    assert asked == [sorted(set(REGISTRY["flips"].fields) | set(REGISTRY["margin"].fields))]
    assert len(seen) > 2 and sum(seen) == 50 and all(count > 0 for count in seen)
    pd.testing.assert_frame_equal(blocks, whole)


def test_what_a_run_cannot_give_is_an_empty_column_and_a_note_word_for_word(table):
    assert table.attrs["notes"] == [
        "knn_disagreement, untrust: empty, the run keeps no embeddings (train with --embeddings last)",
        "view_disagreement, view_confusion: empty, the run keeps no test-time views at its last epoch (train images with --views auto)",
        "combined: empty, combined is fitted on the labels of split 'val', and it has 2 labelled samples",
    ]
    assert table[["knn_disagreement", "untrust", "view_disagreement", "view_confusion", "combined"]].isna().all().all()
