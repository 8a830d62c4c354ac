"""Framework callbacks: PyTorch Lightning (2 members; DDP with 2 ranks) and the HF Trainer."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from confusion.errors import InputError
from confusion.runscores import score_run
from confusion.store import RunStore

JOB = Path(__file__).parent / "lightning_job.py"


def lightning(tmp_path, *args):
    done = subprocess.run([sys.executable, str(JOB), *map(str, args)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def assert_same_scores(callback_run, plain_run):
    recorded, plain = RunStore.open(callback_run), RunStore.open(plain_run)
    assert recorded.recorded_epochs == plain.recorded_epochs == [1, 2, 3]
    np.testing.assert_array_equal(recorded.labels("val"), plain.labels("val"))
    # Both stores hold float16 of the same float32 probabilities: equal up to that rounding.
    np.testing.assert_allclose(recorded.probs("val")[:].astype(np.float64), plain.probs("val")[:].astype(np.float64), atol=1e-3)
    np.testing.assert_allclose(score_run(recorded, "val").confusion, score_run(plain, "val").confusion, atol=1e-3)


def test_lightning_callback_two_members_equals_the_plain_recorder(tmp_path):
    for member in (0, 1):
        lightning(tmp_path, "--out", "callback", "--compare", "plain", "--member", member, "--members", 2)
    assert_same_scores(tmp_path / "callback", tmp_path / "plain")
    recorded = RunStore.open(tmp_path / "callback")
    assert recorded.meta["framework"].startswith("pytorch-lightning")
    # At the last epoch, the input of the MLP's head (32 wide: kept as it is), for both members.
    assert recorded.embedding_epochs(["val"]) == [3]
    assert recorded.embeddings("val", 1, 3).shape == (597, 32)


def test_lightning_callback_keeps_a_reduced_record_when_asked(tmp_path):
    lightning(tmp_path, "--out", "callback", "--compare", "plain", "--member", 0, "--members", 1, "--keep", "reduced")
    recorded, plain = RunStore.open(tmp_path / "callback"), RunStore.open(tmp_path / "plain")
    assert recorded.keep == "reduced" and recorded.recorded_epochs == [1, 2, 3]
    np.testing.assert_allclose(score_run(recorded, "val").confusion, score_run(plain, "val").confusion, atol=1e-3)


def test_lightning_callback_under_ddp_records_every_rank_once(tmp_path):
    lightning(tmp_path, "--out", "callback", "--compare", "plain", "--member", 0, "--members", 1, "--devices", 2)
    assert_same_scores(tmp_path / "callback", tmp_path / "plain")
    recorded = RunStore.open(tmp_path / "callback")
    assert recorded.ended_epochs() == [[1, 2, 3]]
    assert recorded.embedding_epochs(["val"]) == [3]  # gathered from both ranks, in sample order


def test_callbacks_refuse_bad_arguments_at_once(tmp_path):
    from confusion.integrations.lightning import ConfusionCallback as LightningCallback
    from confusion.integrations.transformers import ConfusionCallback as HFCallback

    with pytest.raises(InputError, match="dataloaders must be a dict"):
        LightningCallback(tmp_path / "run", member=0)
    with pytest.raises(InputError, match="member must be in 0..members-1"):
        LightningCallback(tmp_path / "run", member=2, members=2, dataloaders={"val": []})
    with pytest.raises(InputError, match="member must be a non-negative integer"):
        HFCallback(tmp_path / "run", member=-1)
    with pytest.raises(InputError, match="^keep must be raw or reduced"):
        HFCallback(tmp_path / "run", member=0, keep="everything")
    with pytest.raises(InputError, match="needs the Trainer"):
        HFCallback(tmp_path / "run", member=0).on_train_begin(None, None, None)


@pytest.mark.parametrize(
    "module, missing, extra", [("lightning", "pytorch_lightning", "lightning"), ("transformers", "transformers", "transformers")]
)
def test_importing_an_integration_without_its_extra_names_the_extra(module, missing, extra):
    """Issue 27: a bare ModuleNotFoundError named no extra."""
    code = f"import sys; sys.modules[{missing!r}] = None\nimport confusion.integrations.{module}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and f"needs the {extra} extra: pip install 'ensemble-confusion[{extra}]'" in last, result.stderr
