"""The CUDA path, for a machine with a GPU (bench/gpu_check.sh runs these with -m cuda).

Without a GPU they skip, unless CONFUSION_TEST_DEVICE=cpu (what `gpu_check.sh --dry-run` sets)
runs the same checks on the CPU, so the script itself is exercised everywhere.
"""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from confusion import Recorder
from confusion.runscores import score_run
from confusion.store import RunStore
from confusion.training import TrainConfig, train

from .conftest import kill_after_first_commit

DEVICE = os.environ.get("CONFUSION_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device (or CONFUSION_TEST_DEVICE=cpu)"),
]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_on_the_device(tmp_path, precision):
    if precision == "bf16" and DEVICE == "cuda" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    store = train(TrainConfig(data="digits", arch="cnn-s", members=2, epochs=2, batch_size=64, device=DEVICE, precision=precision), tmp_path / "run")
    assert store.recorded_epochs == [1, 2]
    probs = store.probs("val")[:].astype(np.float64)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-2)
    assert np.isfinite(score_run(store, "val").confusion).all()


def test_resume_after_kill_on_the_device(tmp_path):
    command = [
        sys.executable,
        "-m",
        "confusion.cli",
        "train",
        "--data",
        "digits",
        "--arch",
        "cnn-s",
        "--members",
        "2",
        "--epochs",
        "4",
        "--batch-size",
        "32",
        "--device",
        DEVICE,
        "--out",
        str(tmp_path / "run"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_after_first_commit(process, tmp_path / "run", timeout=240)
    time.sleep(1.0)
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    store = RunStore.open(tmp_path / "run")
    assert store.recorded_epochs == [1, 2, 3, 4] and np.isfinite(score_run(store, "val").confusion).all()


def test_recorder_takes_device_tensors(tmp_path):
    logits = torch.randn(2, 50, 3, device=DEVICE)
    recorder = Recorder.create(tmp_path / "run", n_classes=3, members=2, splits={"val": torch.zeros(50, dtype=torch.long, device=DEVICE)})
    for member in range(2):
        with recorder.member(member) as writer:
            writer.log("val", 1, logits[member].to(torch.bfloat16), index=torch.arange(50, device=DEVICE), logits=True)
            writer.end_epoch(1)
    assert recorder.committed_epochs == [1]
