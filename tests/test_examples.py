"""Every file in examples/ runs exactly as written, from a scratch folder, and does what it says."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from confusion.store import RunStore

EXAMPLES = Path(__file__).parent.parent / "examples"


def check_loop(folder):
    assert RunStore.open(folder / "runs/digits-loop").recorded_epochs == list(range(1, 9))


def check_lightning(folder):
    store = RunStore.open(folder / "runs/digits-lightning")
    assert store.recorded_epochs == [1, 2, 3, 4, 5] and store.embedding_epochs(store.splits) == [5]
    assert len(pd.read_csv(folder / "runs/digits-lightning.csv")) == 597


def check_ddp(folder):
    assert RunStore.open(folder / "runs/digits-ddp").recorded_epochs == [1, 2, 3]


def check_jobs(folder):
    store = RunStore.open(folder / "runs/digits-jobs")
    assert store.recorded_epochs == list(range(1, 7)) and store.ended_epochs() == [list(range(1, 7))] * 3


def check_huggingface(folder):
    store = RunStore.open(folder / "runs/bbc-minilm")
    assert store.recorded_epochs == [1, 2] and store.n_members == 2 and store.n_classes == 5
    assert store.embedding_epochs(["val"]) == [2] and store.embeddings("val", 1, 2).shape == (100, 64)  # MiniLM's 384 on 64 axes
    assert store.classes == ["business", "entertainment", "politics", "sports", "tech"]
    scores = pd.read_csv(folder / "runs/bbc-minilm-scores.csv")
    assert len(scores) == 100 and scores["confusion"].notna().all()  # every eval document scored
    assert (scores["label"] >= 0).all()
    page = (folder / "runs/bbc-minilm-report/index.html").read_text()
    assert "<img" in page and "bbc-minilm" in page


CHECKS = {
    "pytorch_loop.py": check_loop,
    "lightning_members.py": check_lightning,
    "lightning_ddp.py": check_ddp,
    "member_jobs.sh": check_jobs,
    "huggingface_trainer.py": check_huggingface,
}


@pytest.mark.slow
@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.iterdir() if p.suffix in (".py", ".sh")))
def test_example_runs_as_written(example, tmp_path):
    runner = [sys.executable] if example.endswith(".py") else ["bash"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([*runner, str(EXAMPLES / example)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert example in CHECKS, f"add a check of what {example} should produce"
    if example.startswith("lightning"):  # Lightning's banners are quieted: what is printed is the example's own
        assert len((done.stdout + done.stderr).splitlines()) < 12, done.stdout + done.stderr
    CHECKS[example](tmp_path)
