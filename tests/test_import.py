"""`confusion import` paper cuts: torch files, text and class-name labels, --overwrite, the split's name."""

import numpy as np
import pandas as pd
import pytest
import torch

from confusion.runscores import score_run
from confusion.store import RunStore


def test_torch_files_tensor_or_dict_of_tensors(cli, tmp_path, probs_file):
    path, labels_path, probs, labels = probs_file
    torch.save(torch.from_numpy(probs), tmp_path / "probs.pt")
    torch.save({"logits": torch.from_numpy(np.log(probs) + 2.0), "epoch": torch.tensor(3)}, tmp_path / "out.pth")
    torch.save(torch.from_numpy(labels), tmp_path / "labels.pt")
    assert cli("import", "--probs", path, "--labels", labels_path, "--out", tmp_path / "npy").exit_code == 0
    result = cli("import", "--probs", tmp_path / "probs.pt", "--labels", tmp_path / "labels.pt", "--out", tmp_path / "pt")
    assert result.exit_code == 0, result.stderr
    result = cli("import", "--probs", tmp_path / "out.pth", "--logits", "--out", tmp_path / "pth")
    assert result.exit_code == 0, result.stderr
    reference = score_run(RunStore.open(tmp_path / "npy"), "val").confusion
    np.testing.assert_allclose(score_run(RunStore.open(tmp_path / "pt"), "val").confusion, reference, atol=1e-6)
    np.testing.assert_allclose(score_run(RunStore.open(tmp_path / "pth"), "val").confusion, reference, atol=2e-3)
    np.testing.assert_array_equal(RunStore.open(tmp_path / "pt").labels("val"), labels)
    result = cli("score", "--probs", tmp_path / "probs.pt", "--out", tmp_path / "s.csv")
    assert result.exit_code == 0 and len(pd.read_csv(tmp_path / "s.csv")) == 200


def test_a_torch_file_that_is_not_tensors_is_refused_in_one_line(cli, tmp_path):
    torch.save({"model": "not a tensor", "note": [1, 2]}, tmp_path / "bad.pt")
    result = cli("import", "--probs", tmp_path / "bad.pt", "--out", tmp_path / "run")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_text_labels_as_indices_or_class_names(cli, tmp_path, probs_file):
    path, _, probs, labels = probs_file
    names = [f"c{i}" for i in range(10)]
    (tmp_path / "labels.txt").write_text("\n".join(str(v) for v in labels) + "\n")
    (tmp_path / "names.txt").write_text("\n".join(names[v] for v in labels) + "\n")
    result = cli("import", "--probs", path, "--labels", tmp_path / "labels.txt", "--out", tmp_path / "a")
    assert result.exit_code == 0, result.stderr
    np.testing.assert_array_equal(RunStore.open(tmp_path / "a").labels("val"), labels)
    result = cli("import", "--probs", path, "--labels", tmp_path / "names.txt", "--classes", ",".join(names), "--out", tmp_path / "b")
    assert result.exit_code == 0, result.stderr
    np.testing.assert_array_equal(RunStore.open(tmp_path / "b").labels("val"), labels)
    result = cli("import", "--probs", path, "--labels", tmp_path / "names.txt", "--out", tmp_path / "c")
    assert result.exit_code == 2 and "give the classes in order with --classes" in result.stderr
    result = cli("import", "--probs", path, "--labels", tmp_path / "names.txt", "--classes", ",".join(names[:9] + ["x"]), "--out", tmp_path / "d")
    assert result.exit_code == 2 and "not in --classes: ['c9']" in result.stderr


def test_overwrite_replaces_a_split_and_a_failed_one_keeps_the_old(cli, tmp_path, probs_file):
    path, labels_path, probs, _ = probs_file
    assert cli("import", "--probs", path, "--labels", labels_path, "--out", tmp_path / "run").exit_code == 0
    np.save(tmp_path / "pool.npy", probs[:, :, :40])
    assert cli("import", "--probs", tmp_path / "pool.npy", "--split", "pool", "--out", tmp_path / "run").exit_code == 0
    before = score_run(RunStore.open(tmp_path / "run"), "pool").confusion
    np.save(tmp_path / "new.npy", probs[:, :, 100:140])  # as many samples as the old: only "written" tells them apart
    result = cli("import", "--probs", tmp_path / "new.npy", "--split", "pool", "--out", tmp_path / "run")
    assert result.exit_code == 2 and "pass --overwrite to replace it" in result.stderr
    bad = probs[:, :, 100:140].copy()
    bad[2, 3, 39, 0] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    result = cli("import", "--probs", tmp_path / "bad.npy", "--split", "pool", "--overwrite", "--out", tmp_path / "run")
    assert result.exit_code == 2
    np.testing.assert_array_equal(score_run(RunStore.open(tmp_path / "run"), "pool").confusion, before)  # the old split, whole
    result = cli("import", "--probs", tmp_path / "new.npy", "--split", "pool", "--overwrite", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    store = RunStore.open(tmp_path / "run")
    assert store.splits == ["val", "pool"] and store.n_samples("pool") == 40
    np.testing.assert_allclose(score_run(store, "pool").confusion, score_run(store, "val").confusion[100:140], atol=1e-9)  # not the cached old one


@pytest.mark.parametrize(
    "name, split, why",
    [("train_probs.npy", "train", "from the file name"), ("val-preds.npy", "val", "from the file name"), ("probs.npy", "val", "the default")],
)
def test_the_split_comes_from_the_option_the_file_name_or_the_default_and_says_which(cli, tmp_path, probs_file, name, split, why):
    _, _, probs, _ = probs_file
    np.save(tmp_path / name, probs)
    result = cli("import", "--probs", tmp_path / name, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    assert RunStore.open(tmp_path / "run").splits == [split]
    assert f"imported split {split!r} ({why}" in result.stderr + result.stdout


class _Crash(BaseException):
    """A process dying at this point: nothing after it runs, no cleanup of the swap."""


@pytest.mark.parametrize("crash_at", range(7))
def test_import_overwrite_is_crash_safe_between_every_pair_of_filesystem_steps(tmp_path, monkeypatch, crash_at):
    """Issue 28: the swap of `import --overwrite --split X` staged under names a split can have
    (an existing split `val.old` was deleted), a crash between its renames left every command
    refusing the run, and one after them served the old split's cached scores for the new data.
    The swap's steps: clear a stale staging group, clear a stale old group, rename X to its old
    name, rename the new arrays to X, write run.json, remove the old arrays. Dying before any
    one of them (or after all), the run opens, holds the old split or the new one whole, and
    scores what it holds; the replacement can then be run again."""
    import os
    import shutil

    import confusion.store.splits as split_changes  # where a split is replaced
    from confusion.importing import import_predictions
    from confusion.scores import confusion_scores
    from confusion.store.format import SplitData

    rng = np.random.default_rng(crash_at)
    old, new = (rng.dirichlet(np.ones(4), size=(2, 3, n)).astype(np.float32) for n in (30, 40))
    run = tmp_path / "run"
    import_predictions(old, run)
    store = RunStore.open(run, mode="a")
    store.add_split("val.old", SplitData(ids=[f"o{i}" for i in range(30)], labels=np.full(30, -1)), lambda: _fill(store, "val.old", old))
    expected = {30: confusion_scores(old).confusion, 40: confusion_scores(new).confusion}
    assert score_run(store, "val").confusion == pytest.approx(expected[30], abs=1e-3)  # its scores are cached now
    steps = []

    def step(real):
        def call(*args, **kwargs):
            if len(steps) == crash_at:
                raise _Crash
            steps.append(real.__name__)
            return real(*args, **kwargs)

        return call

    fake_os = type("os", (), {name: staticmethod(getattr(os, name)) for name in ("path", "getpid")})
    fake_os.rename = staticmethod(step(os.rename))
    monkeypatch.setattr(split_changes, "os", fake_os)
    monkeypatch.setattr(split_changes, "shutil", type("shutil", (), {"rmtree": staticmethod(step(shutil.rmtree))}))
    monkeypatch.setattr(RunStore, "save_meta", step(RunStore.save_meta))
    try:
        import_predictions(new, run, split="val", overwrite=True)
        finished = True
    except _Crash:
        finished = False
    monkeypatch.undo()
    assert finished == (crash_at == 6) and len(steps) == min(crash_at, 6)
    store = RunStore.open(run)
    n = store.n_samples("val")
    assert n in (30, 40) and (n == 40) == (crash_at >= 4)  # the new split once its arrays took the name
    assert len(store.sample_ids("val")) == n and score_run(store, "val").confusion == pytest.approx(expected[n], abs=1e-3)
    assert store.n_samples("val.old") == 30  # a split named like the old staging name is untouched
    assert not (run / "predictions.zarr" / ".val.old").exists()
    import_predictions(new, run, split="val", overwrite=True)  # and it can be run again
    store = RunStore.open(run)
    assert store.n_samples("val") == 40 and score_run(store, "val").confusion == pytest.approx(expected[40], abs=1e-3)
    assert sorted(p.name for p in (run / "predictions.zarr").iterdir() if p.is_dir()) == ["val", "val.old"]


def _fill(store, split, probs):
    for member in range(probs.shape[0]):
        for slot in range(probs.shape[1]):
            store.write(split, member, slot, probs[member, slot])


def test_a_per_file_pattern_in_a_folder_whose_name_looks_like_a_wildcard(cli, tmp_path):
    """Issue 28: a glob metacharacter in the pattern's folder ("runs[1]", "a*b") found no files."""
    folder = tmp_path / "runs[1]*"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for member in range(2):
        for epoch in range(3):
            np.save(folder / f"m{member}_e{epoch}.npy", rng.dirichlet(np.ones(3), size=12).astype(np.float32))
    result = cli("import", "--probs", str(folder / "m{member}_e{epoch}.npy"), "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    store = RunStore.open(tmp_path / "run")
    assert store.n_members == 2 and len(store.recorded_epochs) == 3
