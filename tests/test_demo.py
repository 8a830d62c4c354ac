"""`confusion demo --quick`: the paper end to end on a Fashion-MNIST slice, as a user runs it."""

import json

import pandas as pd
import pytest

from .conftest import FASHION_ROOT


@pytest.mark.skipif(not FASHION_ROOT.is_dir(), reason="needs the Debian package dataset-fashion-mnist")
def test_quick_demo_end_to_end(tmp_path, cli_process):
    result = cli_process("demo", "--quick", "--out", tmp_path / "demo", timeout=900)
    assert result.exit_code == 0, result.stderr[-3000:]
    out = tmp_path / "demo"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val"]["pearson_error_by_bin"] > 0.8
    assert 0 < summary["kendall_tau_small_vs_large"] <= 1
    evaluation = pd.read_csv(out / "hardset_evaluation.csv")
    assert len(evaluation) == 8  # seven zoo models and the larger ensemble
    assert (evaluation["hard_error"] > evaluation["rest_error"]).all()
    assert len(pd.read_csv(out / "hardset.csv")) == 200  # top 10% of 2,000 val images
    for name in (
        "fig1_gallery.png",
        "fig2_error_by_bin.png",
        "fig3_transfer_0.png",
        "fig4_models_error_by_bin.png",
        "fig5_epochs_seeds.png",
        "fig6_epochs_seeds_error.png",
        "fig7_mitigation.png",
        "aggregate.png",
        "index.html",
    ):
        assert (out / "report" / name).exists(), name
    assert set(summary["mitigation"]["methods"]) == {"erm", "groupdro", "upsample"}
    assert "report: " in result.stderr and "hard / rest" in result.stdout
    stages = summary["stage_seconds"]
    assert len(stages) == 6 and abs(sum(stages.values()) - summary["seconds"]) <= 3  # every second in a stage
    assert "where the time went" in result.stdout
