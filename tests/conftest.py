"""Shared fixtures: small arrays, the CLI runner, and the data the tests may use."""

import json
import os
import signal
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from confusion.cli import app

# Tests that train a run need the train extra. Everywhere the suite runs it is installed; the
# lowest-versions job (tests/test_packaging.py) installs the scoring side only and skips them.
needs_torch = pytest.mark.skipif(find_spec("torch") is None, reason="trains a run: needs the train extra")


@pytest.fixture(autouse=True, scope="session")
def embedding_cache(tmp_path_factory):
    """Documents' embeddings are cached per user (`confusion.text.default_cache`): in the suite,
    one folder of its own, shared by every test (each text is embedded once)."""
    folder = tmp_path_factory.mktemp("confusion-cache")
    previous = os.environ.get("CONFUSION_CACHE")
    os.environ["CONFUSION_CACHE"] = str(folder)
    yield folder / "embeddings"
    if previous is None:
        os.environ.pop("CONFUSION_CACHE", None)
    else:
        os.environ["CONFUSION_CACHE"] = previous


FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def probs_file(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(10, 0.3), size=(3, 4, 200)).astype(np.float32)
    labels = rng.integers(0, 10, 200)
    np.save(tmp_path / "probs.npy", probs)
    np.save(tmp_path / "labels.npy", labels)
    return tmp_path / "probs.npy", tmp_path / "labels.npy", probs, labels


class Result:
    def __init__(self, exit_code, stdout, stderr):
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr


@pytest.fixture
def cli():
    """Run `confusion ARGS...` in-process; returns exit_code, stdout, stderr."""
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        return Result(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture
def cli_process():
    """Run the installed `confusion` command in a real subprocess."""

    def run(*args, timeout=600, env=None):
        command = [sys.executable, "-m", "confusion.cli", *[str(a) for a in args]]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
        return Result(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture
def lock_holder():
    """Start a process that holds a run directory's writer lock; yields its pid."""
    started = []

    def hold(path):
        code = (
            "import sys, time\nfrom confusion.store import hold_lock\n"
            "with hold_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n"
        )
        process = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout.readline().strip() == "held"
        return process.pid

    yield hold
    for process in started:
        process.kill()
        process.wait()


def kill_after_first_commit(process: subprocess.Popen, run: Path, timeout: float = 300) -> list[int]:
    """SIGKILL `process` as soon as run.json lists a committed epoch; returns the committed epochs."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if json.loads((Path(run) / "run.json").read_text())["recorded_epochs"]:
                break
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return json.loads((Path(run) / "run.json").read_text())["recorded_epochs"]
