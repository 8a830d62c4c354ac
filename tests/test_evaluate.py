"""`confusion evaluate`: a trained run, a torchvision model with a weights file, and bad input."""

import numpy as np
import pandas as pd
import pytest
import torch

from confusion.datasets import load_dataset
from confusion.evaluate import evaluate_on_hardset, load_predictors
from confusion.hardset import manifest
from confusion.runscores import score_table
from confusion.training import TrainConfig, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    # fp32: the weights are read back in fp32, and bf16 recording (precision auto on bf16 CPUs) differs by ~2e-3
    store = train(TrainConfig(data="digits", arch="mlp-s", members=2, epochs=3, batch_size=32, lr=3e-3, workers=0, precision="fp32"), root / "run")
    table = manifest(store, "val", top=0.2)
    table.to_csv(root / "hard.csv", index=False)
    return root, store, table


def test_a_run_from_its_weights_matches_its_recorded_predictions(trained):
    root, store, hard = trained
    dataset = load_dataset("digits")
    from_weights = load_predictors(str(root / "run"), dataset)[0]
    ids = dataset.splits["val"].ids
    recorded = store.probs("val")[:, -1].astype(np.float32).mean(0)
    np.testing.assert_allclose(from_weights.probabilities("val", ids), recorded, atol=2e-3)
    results, bands = evaluate_on_hardset([from_weights], dataset, hard, scores=score_table(store, ["val"]), bins=5)
    row = results.iloc[0]
    wrong = recorded.argmax(1) != dataset.splits["val"].labels
    in_hard = np.isin(ids, hard["sample"])
    assert row.hard_n == in_hard.sum() and row.hard_error == pytest.approx(wrong[in_hard].mean(), abs=0.01)
    assert row.rest_error == pytest.approx(wrong[~in_hard].mean(), abs=0.01)
    assert bands["n"].sum() == len(ids)


def test_command_on_a_run_and_per_member(trained, cli):
    root, _, _ = trained
    result = cli("evaluate", root / "run", "--hardset", root / "hard.csv", "--per-member", "--scores", root / "run", "--out", root / "res.csv")
    assert result.exit_code == 0, result.stderr
    table = pd.read_csv(root / "res.csv")
    assert table["model"].tolist() == ["run member 0", "run member 1"]
    assert (root / "res_bands.csv").exists() and "hard / rest" in result.stdout
    for column in ("auroc_confusion", "auroc_own_msp", "auroc_own_entropy"):
        assert table[column].between(0, 1).all(), column


def test_a_torchvision_model_with_a_weights_file(trained, cli, tmp_path):
    root, _, _ = trained
    from confusion.models import build_model

    torch.manual_seed(0)
    model = build_model("torchvision:resnet18", 1, 8, 10)
    torch.save(model.state_dict(), tmp_path / "resnet18.pt")
    result = cli(
        "evaluate",
        "torchvision:resnet18",
        "--weights",
        tmp_path / "resnet18.pt",
        "--data",
        "digits",
        "--hardset",
        root / "hard.csv",
        "--out",
        tmp_path / "r.csv",
    )
    assert result.exit_code == 0, result.stderr
    row = pd.read_csv(tmp_path / "r.csv").iloc[0]
    assert row.hard_n == 72 and 0 <= row.hard_error <= 1 and row.rest_n == 359 - 72
    # a pickle that weights_only refuses is reported, never executed
    torch.save({"model": model.state_dict(), "evil": object()}, tmp_path / "pickled.pt")
    result = cli("evaluate", "torchvision:resnet18", "--weights", tmp_path / "pickled.pt", "--data", "digits", "--hardset", root / "hard.csv")
    assert result.exit_code == 2 and "weights_only=True" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["torchvision:resnet18", "--data", "digits"], "--weights FILE"),
        (["cnn-s", "--data", "digits", "--weights", "missing.pt"], "does not exist"),
        (["torchvision:resnet18", "--data", "digits", "--weights", "WRONG"], "does not fit"),
    ],
)
def test_bad_evaluate_input(trained, cli, tmp_path, args, message):
    root, _, _ = trained
    from confusion.models import build_model

    torch.save(build_model("cnn-s", 1, 8, 10).state_dict(), tmp_path / "cnn.pt")
    args = [str(tmp_path / "cnn.pt") if a == "WRONG" else a for a in args]
    result = cli("evaluate", *args, "--hardset", root / "hard.csv")
    assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_a_nats_score_table_is_converted_and_one_without_a_unit_refused(trained, cli, tmp_path):
    root, _, _ = trained
    assert cli("score", root / "run", "--base", "e", "--out", tmp_path / "nats.csv").exit_code == 0
    assert cli("score", root / "run", "--out", tmp_path / "bits.csv").exit_code == 0
    results = {}
    for unit in ("nats", "bits"):
        result = cli(
            "evaluate", root / "run", "--hardset", root / "hard.csv", "--scores", tmp_path / f"{unit}.csv", "--out", tmp_path / f"{unit}-res.csv"
        )
        assert result.exit_code == 0, result.stderr
        results[unit] = pd.read_csv(tmp_path / f"{unit}-res_bands.csv")
    pd.testing.assert_frame_equal(results["nats"], results["bits"])  # the same bands: nats were converted
    pd.read_csv(tmp_path / "bits.csv").drop(columns="unit").to_csv(tmp_path / "no-unit.csv", index=False)
    result = cli("evaluate", root / "run", "--hardset", root / "hard.csv", "--scores", tmp_path / "no-unit.csv")
    assert result.exit_code == 2 and "lacks the columns ['unit']" in result.stderr


def test_any_predictions_evaluated_by_id_without_a_dataset(cli, tmp_path, probs_file):
    path, labels_path, probs, labels = probs_file
    assert cli("import", "--probs", path, "--labels", labels_path, "--out", tmp_path / "scoring").exit_code == 0
    assert cli("hardset", tmp_path / "scoring", "--top", "0.1", "--out", tmp_path / "hard.csv").exit_code == 0
    other = np.random.default_rng(9).dirichlet(np.full(10, 0.3), size=200)
    np.save(tmp_path / "other.npy", other)
    assert cli("import", "--probs", tmp_path / "other.npy", "--out", tmp_path / "other").exit_code == 0  # no labels, no dataset
    result = cli("evaluate", tmp_path / "other", "--hardset", tmp_path / "hard.csv", "--scores", tmp_path / "scoring", "--out", tmp_path / "r.csv")
    assert result.exit_code == 0, result.stderr
    row = pd.read_csv(tmp_path / "r.csv").iloc[0]
    hard = pd.read_csv(tmp_path / "hard.csv", dtype={"sample": str})
    wrong = other.argmax(1) != labels
    in_hard = np.isin(np.arange(200).astype(str), hard["sample"])
    assert row["hard_n"] == 20 and row["hard_error"] == pytest.approx(wrong[in_hard].mean())
    assert row["rest_error"] == pytest.approx(wrong[~in_hard].mean())
    pd.DataFrame({"sample": np.arange(200).astype(str), "predicted": other.argmax(1)}).to_csv(tmp_path / "preds.csv", index=False)
    result = cli(
        "evaluate", tmp_path / "preds.csv", "--hardset", tmp_path / "hard.csv", "--scores", tmp_path / "scoring", "--out", tmp_path / "t.csv"
    )
    assert result.exit_code == 0, result.stderr
    assert pd.read_csv(tmp_path / "t.csv").iloc[0]["hard_error"] == pytest.approx(row["hard_error"])
    result = cli("evaluate", tmp_path / "other", "--hardset", tmp_path / "hard.csv")
    assert result.exit_code == 2 and "--scores RUN" in result.stderr


def test_predictions_by_id_are_joined_by_class_name_and_refused_where_they_cannot_be(cli, tmp_path, probs_file):
    """Issue 28: a run imported with its classes in reverse order scored 0% error instead of
    ~100%, a 5-class run was accepted against a 10-class scoring run, a table naming a sample
    twice was accepted, and a table of predicted labels got own-confidence AUROCs of 0.5."""
    path, labels_path, probs, labels = probs_file
    names = [f"c{k}" for k in range(10)]
    assert cli("import", "--probs", path, "--labels", labels_path, "--classes", ",".join(names), "--out", tmp_path / "scoring").exit_code == 0
    assert cli("hardset", tmp_path / "scoring", "--top", "0.1", "--out", tmp_path / "hard.csv").exit_code == 0
    perfect = np.eye(10)[labels] * 0.9 + 0.01  # right on every sample, as probabilities
    np.save(tmp_path / "perfect.npy", perfect[:, ::-1])  # its classes listed the other way round
    assert cli("import", "--probs", tmp_path / "perfect.npy", "--classes", ",".join(names[::-1]), "--out", tmp_path / "reversed").exit_code == 0
    evaluate = ("--hardset", tmp_path / "hard.csv", "--scores", tmp_path / "scoring")
    result = cli("evaluate", tmp_path / "reversed", *evaluate, "--out", tmp_path / "r.csv")
    assert result.exit_code == 0, result.stderr
    row = pd.read_csv(tmp_path / "r.csv").iloc[0]
    assert row["hard_error"] == 0 and row["rest_error"] == 0  # joined by name: right everywhere
    np.save(tmp_path / "five.npy", np.full((200, 5), 0.2))
    assert cli("import", "--probs", tmp_path / "five.npy", "--out", tmp_path / "five").exit_code == 0
    result = cli("evaluate", tmp_path / "five", *evaluate)
    assert result.exit_code == 2 and "a model is evaluated on the classes it predicts" in result.stderr
    ids = np.arange(200).astype(str)
    pd.DataFrame({"sample": [*ids, "3"], "predicted": [*labels, 0]}).to_csv(tmp_path / "twice.csv", index=False)
    result = cli("evaluate", tmp_path / "twice.csv", *evaluate)
    assert result.exit_code == 2 and "names a sample twice ('3')" in result.stderr
    pd.DataFrame({"sample": ids, "predicted": labels}).to_csv(tmp_path / "labels.csv", index=False)
    assert cli("evaluate", tmp_path / "labels.csv", *evaluate, "--out", tmp_path / "l.csv").exit_code == 0
    row = pd.read_csv(tmp_path / "l.csv").iloc[0]
    assert np.isnan(row["auroc_own_msp"]) and np.isnan(row["auroc_own_entropy"])  # predicted labels: no confidence to rank by
