"""The ensemble trainer on tiny slices of real data: store contents, resume after kill -9, errors."""

import json
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from confusion.engine import shift_and_flip
from confusion.runscores import score_run
from confusion.store import RunStore
from confusion.training import TrainConfig, train

from .conftest import FASHION_ROOT, kill_after_first_commit

TINY = dict(data="digits", arch="mlp-s", members=2, epochs=3, batch_size=64)


def test_a_run_writes_the_store_and_score_reads_it(tmp_path, cli):
    result = cli(
        "train",
        "--out",
        tmp_path / "run",
        "--data",
        "digits",
        "--arch",
        "cnn-s",
        "--members",
        "2",
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--lr",
        "0.005",
    )
    assert result.exit_code == 0, result.stderr
    store = RunStore.open(tmp_path / "run")
    assert store.recorded_epochs == [1, 2, 3] and store.splits == ["train", "val"]
    assert store.meta["config"]["arch"] == "cnn-s" and [m["seed"] for m in store.meta["members"]] == [0, 1]
    probs = store.probs("val")[:].astype(np.float64)
    assert probs.shape == (2, 3, 359, 10)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-2)
    assert not np.array_equal(probs[0], probs[1])  # members differ by seed
    assert len(store.history(0)) == 3 and store.history(1)[-1]["epoch"] == 3
    assert (tmp_path / "run" / "checkpoints" / "member-1.pt").exists()
    result = cli("score", tmp_path / "run", "--out", tmp_path / "s.csv")
    assert result.exit_code == 0, result.stderr
    table = pd.read_csv(tmp_path / "s.csv")
    assert len(table) == 1438 + 359 and set(table["split"]) == {"train", "val"}
    # training helps: the ensemble is far better than chance at the last epoch
    assert (probs[:, -1].mean(0).argmax(1) == store.labels("val")).mean() > 0.5


def test_record_every_and_in_loop_train_predictions(tmp_path):
    store = train(TrainConfig(**{**TINY, "epochs": 5}, record_every=2, record_train="in-loop", workers=0), tmp_path / "run")
    assert store.recorded_epochs == [2, 4, 5]
    train_probs = store.probs("train")[:].astype(np.float64)
    np.testing.assert_allclose(train_probs.sum(-1), 1.0, atol=1e-2)  # every training sample recorded


def test_same_seed_same_predictions_in_process_and_in_workers(tmp_path):
    spawned = train(TrainConfig(**TINY), tmp_path / "spawned")
    # Again from a user's script without `if __name__ == "__main__":`: the worker processes
    # must not run it again (each would try to train the run itself).
    script = tmp_path / "script.py"
    script.write_text(f"from confusion.training import TrainConfig, train\ntrain(TrainConfig(**{TINY!r}), 'again')\n")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    again = RunStore.open(tmp_path / "again")
    np.testing.assert_array_equal(spawned.probs("val")[:], again.probs("val")[:])
    # In this process the members train with every core, which changes float summation order
    # (not the result beyond float16 storage precision).
    threads = torch.get_num_threads()
    inline = train(TrainConfig(**TINY, workers=0), tmp_path / "inline")
    assert torch.get_num_threads() == threads
    np.testing.assert_allclose(inline.probs("val")[:], spawned.probs("val")[:], atol=2e-3)


def test_changed_settings_are_refused_and_finished_runs_return(tmp_path, cli):
    train(TrainConfig(**TINY, workers=0), tmp_path / "run")
    result = cli(
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
        "64",
        "--lr",
        "0.01",
    )
    assert result.exit_code == 2 and "other settings (lr: 0.001 there, 0.01 now)" in result.stderr
    before = (tmp_path / "run" / "run.json").read_text()
    result = cli("train", "--out", tmp_path / "run", "--data", "digits", "--arch", "mlp-s", "--members", "2", "--epochs", "3", "--batch-size", "64")
    assert result.exit_code == 0 and json.loads(before)["recorded_epochs"] == [1, 2, 3]


@pytest.mark.skipif(not FASHION_ROOT.is_dir(), reason="needs the Debian package dataset-fashion-mnist")
def test_kill_9_then_rerun_ends_with_the_same_scores(tmp_path):
    args = ["train", "--data", "fashion-mnist", "--arch", "cnn-s", "--members", "2", "--epochs", "4", "--limit-train", "3000", "--limit-val", "1000"]
    command = [sys.executable, "-m", "confusion.cli", *args]
    reference = subprocess.run([*command, "--out", str(tmp_path / "whole")], capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr

    run = tmp_path / "killed"
    process = subprocess.Popen([*command, "--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    interrupted = kill_after_first_commit(process, run)
    assert 1 <= len(interrupted) < 4, interrupted
    time.sleep(1.0)  # the workers die with their parent (PR_SET_PDEATHSIG)
    rerun = subprocess.run([*command, "--out", str(run)], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr

    whole, resumed = RunStore.open(tmp_path / "whole"), RunStore.open(run)
    assert resumed.recorded_epochs == whole.recorded_epochs == [1, 2, 3, 4]
    for split in ("train", "val"):
        np.testing.assert_array_equal(resumed.probs(split)[:], whole.probs(split)[:])  # bitwise, fp32 on the CPU
        np.testing.assert_array_equal(score_run(resumed, split).confusion, score_run(whole, split).confusion)


def test_a_second_writer_is_refused(tmp_path, cli, lock_holder):
    pid = lock_holder(tmp_path / "run")
    result = cli("train", "--out", tmp_path / "run", "--data", "digits", "--arch", "mlp-s", "--members", "1", "--epochs", "1")
    assert result.exit_code == 2 and f"in use by process {pid}" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "cifar-11"], "unknown dataset 'cifar-11'"),
        (["--data", "digits", "--arch", "transformer-xxl"], "unknown architecture 'transformer-xxl'"),
        (["--root", "/no/such/dir"], "--root /no/such/dir does not exist"),
        (["--data", "digits", "--members", "0"], "at least 1"),
        (["--data", "digits", "--device", "cuda"] if not torch.cuda.is_available() else ["--data", "digits", "--device", "tpu"], "cuda"),
    ],
)
def test_bad_training_input(tmp_path, cli, args, message):
    result = cli("train", "--out", tmp_path / "run", "--epochs", "1", *args)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "run.json").exists()


def test_imagefolder_errors_from_the_command(tmp_path, cli):
    (tmp_path / "one" / "cats").mkdir(parents=True)
    result = cli("train", "--out", tmp_path / "run", "--data", f"imagefolder:{tmp_path / 'one'}")
    assert result.exit_code == 2 and "at least two class folders" in result.stderr
    (tmp_path / "one" / "dogs").mkdir()
    result = cli("train", "--out", tmp_path / "run", "--data", f"imagefolder:{tmp_path / 'one'}")
    assert result.exit_code == 2 and "holds no images" in result.stderr


def test_shift_and_flip_is_seeded_and_moves_pixels():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5)
    a = shift_and_flip(x, torch.Generator().manual_seed(3), flip=True, pad=1)
    b = shift_and_flip(x, torch.Generator().manual_seed(3), flip=True, pad=1)
    assert torch.equal(a, b) and a.shape == x.shape
    no_shift = shift_and_flip(x, torch.Generator().manual_seed(0), flip=False, pad=0)
    assert torch.equal(no_shift, x)
    shifted_values = set(a.unique().tolist()) - {0.0}
    assert shifted_values <= set(x.unique().tolist())


def test_one_job_per_member_equals_one_command(tmp_path, cli_process, cli):
    settings = ["--data", "digits", "--arch", "mlp-s", "--members", "3", "--epochs", "3", "--batch-size", "64"]
    command = [sys.executable, "-m", "confusion.cli", "train", *settings, "--out", str(tmp_path / "jobs")]
    jobs = [subprocess.Popen([*command, "--member", str(m)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for m in range(3)]
    for job in jobs:
        _, err = job.communicate(timeout=600)
        assert job.returncode == 0, err
    whole = cli_process("train", *settings, "--out", tmp_path / "whole")
    assert whole.exit_code == 0, whole.stderr
    jobs_run, whole_run = RunStore.open(tmp_path / "jobs"), RunStore.open(tmp_path / "whole")
    assert jobs_run.recorded_epochs == whole_run.recorded_epochs == [1, 2, 3]
    for split in ("train", "val"):
        np.testing.assert_array_equal(jobs_run.probs(split)[:], whole_run.probs(split)[:])  # same threads per member
        np.testing.assert_array_equal(score_run(jobs_run, split).confusion, score_run(whole_run, split).confusion)
    result = cli("status", tmp_path / "jobs")
    assert result.exit_code == 0 and "committed epochs (3): 1-3" in result.stderr + result.stdout
    result = cli("train", *settings, "--out", tmp_path / "jobs", "--member", "3")
    assert result.exit_code == 2 and "--member must be in 0..2" in result.stderr


@pytest.mark.parametrize(
    "cap, allowed", [(None, True), ("AVX2", False), ("avx512_core", False), ("AVX512_CORE_BF16", True), ("AVX512_CORE_AMX", True)]
)
def test_auto_precision_picks_bf16_only_where_onednn_may_compute_in_it(monkeypatch, cap, allowed):
    from confusion import _runtime
    from confusion.engine import resolve_precision

    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    flags = "flags\t\t: fpu avx2 avx512f avx512_bf16\n"
    monkeypatch.setattr(_runtime.Path, "read_text", lambda self, errors=None: flags)
    assert resolve_precision(TrainConfig()) == ("bf16" if allowed else "fp32")
    assert resolve_precision(TrainConfig(precision="fp32")) == "fp32"
    assert ("capped at" in _runtime.cpu_description()) == (cap is not None)


@pytest.mark.parametrize(
    "name, features, says",
    [(None, None, None), ("haswell", None, "numba targets haswell, host features"), ("haswell", "+avx2", "numba targets haswell)")],
)
def test_the_bench_cpu_line_names_a_numba_target(monkeypatch, name, features, says):
    from confusion import _runtime

    for variable, value in (("NUMBA_CPU_NAME", name), ("NUMBA_CPU_FEATURES", features)):
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, value)
    line = _runtime.cpu_description()
    assert ("numba" not in line) if says is None else (says in line)


def test_a_feature_run_records_that_it_was_not_augmented(tmp_path):
    """Shifts and flips are for images: run.json of a feature-vector run says augment false (it
    said true, although nothing was augmented), and resuming it is not refused over that."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "f.npz", x=rng.normal(size=(120, 6)).astype(np.float32), y=np.arange(120) % 3)
    config = TrainConfig(data=f"features:{tmp_path / 'f.npz'}", arch="mlp-s", members=1, epochs=1, workers=0)
    assert config.augment
    store = train(config, tmp_path / "run")
    assert store.meta["config"]["augment"] is False
    assert train(replace(config, epochs=1), tmp_path / "run").recorded_epochs == [1]


def test_a_python_caller_reads_the_parameter_and_the_command_line_the_flag(tmp_path):
    """One check, declared once at TrainConfig: Python reads `lr`, the command line `--lr`."""
    from confusion.errors import ParameterError

    with pytest.raises(ParameterError, match=r"^lr must be a positive number and batch_size at least 2$"):
        TrainConfig(lr=-1)
    with pytest.raises(ParameterError, match=r"^limit_train must be at least 1, got 0$"):
        TrainConfig(limit_train=0)
    result = subprocess.run(
        [sys.executable, "-m", "confusion.cli", "train", "--lr", "-1", "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and result.stderr == "confusion: error: --lr must be a positive number and --batch-size at least 2\n"
    assert not (tmp_path / "run").exists()
