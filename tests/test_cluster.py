"""--dask: scoring and training on a dask.distributed cluster give what the local paths give."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from confusion.importing import import_predictions, import_topk
from confusion.runscores import score_run
from confusion.store import RunStore

pytest.importorskip("distributed")

TRAIN = ["--data", "digits", "--arch", "mlp-s", "--members", "3", "--epochs", "4", "--lr", "0.01", "--batch-size", "32", "--limit-train", "400"]


def scored(cli, run, out, *extra):
    for cache in run.glob("cache/*"):  # scored afresh, not read from the run's cache
        cache.unlink()
    result = cli("score", run, "--out", out, *extra)
    assert result.exit_code == 0, result.stderr
    return pd.read_csv(out)


def test_dask_local_2_scores_raw_reduced_and_top_k_runs_as_the_local_scorer_does(tmp_path, cli):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(7, 0.4), size=(3, 3, 5000)).astype(np.float32)
    import_predictions(probs, tmp_path / "raw", labels=rng.integers(0, 7, 5000))
    import_predictions(probs, tmp_path / "reduced", labels=rng.integers(0, 7, 5000), keep="reduced")
    order = np.argsort(-probs, axis=-1)[..., :3]
    import_topk((np.take_along_axis(probs, order, axis=-1), order), tmp_path / "topk", n_classes=7)
    for name in ("raw", "reduced", "topk"):
        local = scored(cli, tmp_path / name, tmp_path / f"{name}-local.csv")
        remote = scored(cli, tmp_path / name, tmp_path / f"{name}-dask.csv", "--dask", "local:2")
        pd.testing.assert_frame_equal(local, remote, check_exact=True)


@pytest.mark.parametrize(
    "spec, message",
    [("local:0", "N >= 1"), ("local:x", "N >= 1"), ("not an address", "scheduler address"), ("127.0.0.1:9", "no Dask scheduler answers")],
)
def test_bad_or_unreachable_schedulers_get_one_line(tmp_path, cli, spec, message):
    import_predictions(np.full((1, 1, 4, 2), 0.5), tmp_path / "run")
    commands = [["score", tmp_path / "run"], ["train", *TRAIN, "--out", tmp_path / "new"]]
    for command in commands[:1] if "answers" in message else commands:  # (an unreachable scheduler takes its 5 s once)
        result = cli(*command, "--dask", spec)
        assert result.exit_code == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "new").exists()


def test_train_on_local_3_matches_a_local_run_even_when_a_worker_is_killed(tmp_path, cli):
    assert cli("train", *TRAIN, "--out", tmp_path / "local").exit_code == 0
    job = subprocess.Popen(
        [sys.executable, "-m", "confusion.cli", "train", *TRAIN, "--out", str(tmp_path / "cluster"), "--dask", "local:3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = tmp_path / "cluster" / ".member-1.lock"
    killed = None
    deadline = time.time() + 240
    while killed is None and time.time() < deadline and job.poll() is None:
        held = lock.read_text() if lock.exists() else ""
        found = re.match(r"process (\d+)", held)
        store_ready = (tmp_path / "cluster" / "members" / "member-1.json").exists()
        if found and store_ready:  # member 1 has ended an epoch and is training the next: kill its worker
            killed = int(found.group(1))
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    out, err = job.communicate(timeout=300)
    assert killed is not None, "member 1 was never seen training"
    assert job.returncode == 0, err
    cluster, local = RunStore.open(tmp_path / "cluster"), RunStore.open(tmp_path / "local")
    assert cluster.recorded_epochs == local.recorded_epochs == [1, 2, 3, 4]
    np.testing.assert_array_equal(score_run(cluster, "val", cache=False).confusion, score_run(local, "val", cache=False).confusion)


@pytest.mark.timeout(120)  # before the fix it could also hang
def test_one_client_scores_a_run_again_and_again(tmp_path):
    # The same job scattered under its content key by consecutive calls was released by one
    # call while the next still needed it: "lost dependencies" in 2 of 3 tries before the fix.
    from confusion.cluster import dask_client

    rng = np.random.default_rng(1)
    import_predictions(rng.dirichlet(np.full(5, 0.5), size=(3, 2, 3000)).astype(np.float16), tmp_path / "run")
    store = RunStore.open(tmp_path / "run")
    local = score_run(store, "val", cache=False).confusion
    with dask_client("local:2") as client:
        for _ in range(4):
            np.testing.assert_array_equal(score_run(store, "val", cache=False, client=client).confusion, local)


def test_a_local_cluster_that_fails_to_start_is_one_line(tmp_path, cli, monkeypatch):
    """Issue 28: `score --dask local:2` when a worker died while the cluster started printed 79
    lines; it is one, naming what happened."""
    import distributed

    def dies(*args, **kwargs):
        raise RuntimeError("Worker failed to start: killed")

    monkeypatch.setattr(distributed, "LocalCluster", dies)
    probs = np.random.default_rng(1).dirichlet(np.ones(3), size=(2, 2, 20)).astype(np.float32)
    np.save(tmp_path / "p.npy", probs)
    assert cli("import", "--probs", tmp_path / "p.npy", "--out", tmp_path / "run").exit_code == 0
    result = cli("score", tmp_path / "run", "--dask", "local:2", "--out", tmp_path / "s.csv")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "the local Dask cluster did not start" in result.stderr
    assert not (tmp_path / "s.csv").exists()
