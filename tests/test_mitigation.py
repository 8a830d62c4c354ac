"""GroupDRO's update by hand, bands, upsampling counts, and a tiny end-to-end run of each method."""

import json
import math

import numpy as np
import pytest
import torch

from confusion.engine import upsampled_indices
from confusion.mitigation import GroupDRO, MitigationConfig, assign_bands, band_edges, band_names, groups_from_bands


def test_groupdro_raises_the_worse_groups_weight_by_exp_eta_loss():
    dro = GroupDRO(np.array([10, 10]), eta=0.1)
    per_sample = torch.tensor([1.0, 1.0, 3.0, 3.0], dtype=torch.float64)  # group 0 loss 1, group 1 loss 3
    groups = torch.tensor([0, 0, 1, 1])
    loss = dro.loss(per_sample, groups)
    q0, q1 = 0.5 * math.exp(0.1 * 1.0), 0.5 * math.exp(0.1 * 3.0)
    expected = torch.tensor([q0, q1]) / (q0 + q1)
    torch.testing.assert_close(dro.q, expected.double())
    assert dro.q[1] / dro.q[0] == pytest.approx(math.exp(0.1 * 2.0))
    assert loss.item() == pytest.approx(float(expected[0] * 1.0 + expected[1] * 3.0))


def test_groupdro_absent_group_and_adjustment():
    dro = GroupDRO(np.array([100, 4]), eta=1.0, adjustment=2.0)
    dro.loss(torch.tensor([0.5, 0.5]), torch.tensor([0, 0]))  # group 1 absent: its loss counts as 0
    q0 = 0.5 * math.exp(0.5 + 2.0 / 10.0)
    q1 = 0.5
    assert dro.q[0].item() == pytest.approx(q0 / (q0 + q1))


def test_bands_from_scores():
    edges = band_edges(np.array([0.1, 2.0]), 10, None, None)
    assert edges.tolist() == [pytest.approx(math.log2(10) / 2)]
    assert assign_bands(np.array([0.0, 1.66, 1.67, 3.3]), edges).tolist() == [0, 0, 1, 1]
    assert band_names(edges) == ["< 1.66 bits", ">= 1.66 bits"]
    quantile_edges = band_edges(np.arange(100.0) / 50, 10, None, [0.5, 0.9])
    assert assign_bands(np.arange(100.0) / 50, quantile_edges).tolist().count(2) == 10
    assert groups_from_bands(np.array([0, 1, 1]), np.array([3, 3, 0]), 10, True).tolist() == [3, 13, 10]
    with pytest.raises(Exception, match="inside"):
        band_edges(np.array([0.1]), 10, [5.0], None)


def test_upsampling_counts():
    bands = np.array([0, 1, 0, 1, 0])
    index = upsampled_indices(bands, 4)
    assert np.bincount(index).tolist() == [1, 4, 1, 4, 1]
    assert len(upsampled_indices(np.zeros(3, int), 4)) == 3


def test_mitigate_end_to_end_with_each_method(tmp_path, cli):
    assert (
        cli(
            "train",
            "--out",
            tmp_path / "run",
            "--data",
            "digits",
            "--arch",
            "mlp-s",
            "--members",
            "2",
            "--epochs",
            "3",
            "--batch-size",
            "32",
            "--lr",
            "0.003",
        ).exit_code
        == 0
    )
    (tmp_path / "mit").mkdir()
    (tmp_path / "mit" / "notes.txt").write_text("keep me")  # issue 28: nothing of the user's is deleted
    result = cli(
        "mitigate",
        tmp_path / "run",
        "--out",
        tmp_path / "mit",
        "--arch",
        "mlp-s",
        "--epochs",
        "2",
        "--members",
        "2",
        "--quantiles",
        "0.8",
        "--upsample-factor",
        "3",
        "--eta",
        "0.05",
    )
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((tmp_path / "mit" / "metrics.json").read_text())
    assert list(metrics["methods"]) == ["erm", "groupdro", "upsample"] and metrics["seeds"] == 2
    assert sum(metrics["val_band_counts"]) == 359 and len(metrics["bands"]) == 2
    for table in metrics["methods"].values():
        for band in [*metrics["bands"], "overall"]:
            assert set(table[band]) >= {"error_mean", "error_std", "n"}
            assert 0 <= table[band]["error_mean"] <= 1
    assert "groupdro" in result.stdout and "overall" in result.stdout
    before = (tmp_path / "mit" / "jobs" / "erm-seed100.json").stat().st_mtime
    assert (
        cli(
            "mitigate",
            tmp_path / "run",
            "--out",
            tmp_path / "mit",
            "--arch",
            "mlp-s",
            "--epochs",
            "2",
            "--members",
            "2",
            "--quantiles",
            "0.8",
            "--upsample-factor",
            "3",
            "--eta",
            "0.05",
        ).exit_code
        == 0
    )
    assert (tmp_path / "mit" / "jobs" / "erm-seed100.json").stat().st_mtime == before  # finished jobs are kept
    # Issue 28: a corrupt job result was a traceback. It is a job to train again.
    kept = json.loads((tmp_path / "mit" / "metrics.json").read_text())
    (tmp_path / "mit" / "jobs" / "upsample-seed101.json").write_text('{"bands": ')
    again = [
        "mitigate", tmp_path / "run", "--out", tmp_path / "mit", "--arch", "mlp-s", "--epochs", "2", "--members", "2",
        "--quantiles", "0.8", "--upsample-factor", "3", "--eta", "0.05",
    ]  # fmt: skip
    result = cli(*again)
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "mit" / "metrics.json").read_text())["methods"] == kept["methods"]  # the same job, the same numbers
    assert (tmp_path / "mit" / "notes.txt").read_text() == "keep me"
    report = cli("report", tmp_path / "run", "--out", tmp_path / "rep", "--mitigation", tmp_path / "mit", "--min-count", "5")
    assert report.exit_code == 0 and (tmp_path / "rep" / "fig7_mitigation.png").exists()


def test_bad_mitigation_input(tmp_path, cli):
    result = cli("mitigate", tmp_path, "--out", tmp_path / "m")
    assert result.exit_code == 2 and "not a run store" in result.stderr
    with pytest.raises(Exception, match="^methods must be among"):
        MitigationConfig(methods=["jtt"]).check()
    with pytest.raises(Exception, match="not both"):
        MitigationConfig(band_edges=[1.0], quantiles=[0.5]).check()
    with pytest.raises(Exception, match="label-free score in bits"):
        MitigationConfig(score="ensemble_msp").check()
