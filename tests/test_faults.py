"""Bad input, as an adversarial user gives it: one `confusion: error:` line, exit code 2,
nothing left behind, no silently wrong result (issue 15's cases, table-driven)."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from confusion.runscores import score_run


@pytest.fixture
def run(cli, tmp_path, probs_file):
    probs, labels, _, _ = probs_file
    assert cli("import", "--probs", probs, "--labels", labels, "--out", tmp_path / "run").exit_code == 0
    return tmp_path / "run"


BAD_OPTIONS = [
    (["train", "--data", "nope"], "unknown dataset 'nope'"),
    (["train", "--data", "digits", "--image-size", "0"], "--image-size must be 4 to 4096"),
    (["train", "--data", "digits", "--split-seed", "-1"], "--seed and --split-seed"),
    (["train", "--data", "digits", "--seed", str(2**64)], "--seed and --split-seed"),
    (["train", "--data", "digits", "--limit-train", "0"], "--limit-train must be at least 1"),
    (["train", "--data", "npz:/no/such.npz"], "does not exist"),
    (["train", "--data", "digits", "--keep", "everything"], "--keep must be raw or reduced"),
    (["train", "--data", "digits", "--dask", "local:0"], "N >= 1"),
    (["train", "--data", "digits", "--dask", "local:2", "--member", "0"], "drop --member and --workers"),
    (["import", "--topk", "/no/such.npz", "--n-classes", "5"], "does not exist"),
    (["import", "--probs", "/no/such.npy", "--keep", "everything"], "--keep must be raw or reduced"),
    (["zoo", "--data", "nope"], "unknown dataset"),
    (["demo", "--top", "0"], "--top must be a fraction"),
    (["demo", "--data", "text:/no/such.csv"], "does not exist"),
]


@pytest.mark.parametrize("args, message", BAD_OPTIONS)
def test_bad_options_are_refused_before_any_work_and_leave_no_folder(cli_process, tmp_path, args, message):
    result = cli_process(*args, "--out", tmp_path / "out", timeout=120)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("confusion: error:") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "0"], "--batch-size at least 2"),
        (["--lr", "-1"], "--lr must be a positive number"),
        (["--lr", "nan"], "--lr must be a positive number"),
        (["--device", "tpu"], "--device must be cpu or cuda"),
    ],
)
def test_bad_mitigation_settings(cli, run, tmp_path, args, message):
    result = cli("mitigate", run, "--out", tmp_path / "m", *args)
    assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "m").exists()


# Found by bench/fault_cases.py (the adversarial sweep): each was accepted, ran out of memory,
# or ended in a traceback. In-process (fast); `out` is what must not exist afterwards.
SWEEP_REFUSALS = [
    (["train", "--data", "digits", "--members", str(2**70), "--out", "{tmp}/out"], "--members must be at least 1 and at most 1,000"),
    (["train", "--data", "digits", "--epochs", "100001", "--out", "{tmp}/out"], "--epochs must be at least 1 and at most 100,000"),
    (["train", "--data", "digits", "--root", "{tmp}/nowhere", "--out", "{tmp}/out"], "nowhere does not exist"),
    (["zoo", "--data", "digits", "--archs", "", "--out", "{tmp}/out"], "--archs lists no model"),
    (["zoo", "--data", "digits", "--epochs", str(2**70), "--out", "{tmp}/out"], "--epochs must be at least 1 and at most 100,000"),
    (["report", "{run}", "--bins", "1000000000", "--out", "{tmp}/out"], "--bins must be 2 to 10,000"),
    (["hardset", "{run}", "--threshold", "-1", "--out", "{tmp}/out.csv"], "--threshold must be a number >= 0"),
    (["hardset", "{run}", "--top", "0", "--score", "nope", "--out", "{tmp}/out.csv"], "--top must be a fraction"),
    (["hardset", "{run}", "--top", "0.1", "--score", "nope", "--out", "{tmp}/out.csv"], "--score must be a label-free score"),
    (["score", "{run}", "--with-meta"], "goes with RUN and --out"),
    (["import", "--probs", "{probs}", "--classes", "a,a,b,c,d,e,f,g,h,i", "--out", "{tmp}/out"], "class name 'a' is given twice"),
    (["import", "--probs", "{probs}", "--classes", ",,,,,,,,,", "--out", "{tmp}/out"], "a class name is empty"),
    (["import", "--probs", "{probs}", "--n-classes", "0", "--out", "{tmp}/out"], "--n-classes goes with --topk"),
    (["import", "--probs", "{probs}", "--ids", "{tmp}/binary.txt", "--out", "{tmp}/out"], "is not UTF-8 text"),
    (["score", "--probs", "{tmp}/one_class.npy", "--out", "{tmp}/out.csv"], "confusion needs at least 2"),
    (["import", "--probs", "{tmp}/with_names.npz", "--out", "{tmp}/out"], "labels are class names"),
    (["score", "--probs", "{tmp}/with_names.npz", "--out", "{tmp}/out.csv"], "labels are class names"),
    # Issue 28: tracebacks, accepted input that was silently off, and messages that misled.
    (["train", "--data", "features:{tmp}/objects.npz", "--arch", "mlp-s", "--out", "{tmp}/out"], "holds an array of Python objects"),
    (["train", "--data", "features:{tmp}/twice.npz", "--arch", "mlp-s", "--out", "{tmp}/out"], "sample ids must be unique"),
    (["train", "--data", "digits", "--arch", "torchvision:alexnet", "--members", "1", "--out", "{tmp}/out"], "cannot take 1x8x8 inputs"),
    (
        ["import", "--topk", "{tmp}/top.npz", "--n-classes", str(10**12), "--out", "{tmp}/out"],
        "--n-classes must be a whole number from 2 to 1,000,000",
    ),
    (["train", "--data", "features:{tmp}/one_class.npz", "--arch", "mlp-s", "--out", "{tmp}/out"], "at least two classes"),
    (["report", "{run}", "--mitigation", "{tmp}/empty", "--out", "{tmp}/out"], "has no metrics.json"),
    (["report", "{run}", "--mitigation", "{tmp}/notjson", "--out", "{tmp}/out"], "is not readable JSON"),
    (["report", "{run}", "--mitigation", "{tmp}/bandless", "--out", "{tmp}/out"], "is not a `confusion mitigate` result"),
    (["import", "--probs", "{probs}", "--split", "val\nx", "--out", "{tmp}/out"], "holds a control character"),
    (["import", "--probs", "{probs}", "--split", "v\u202eal", "--out", "{tmp}/out"], "holds a control character"),
    (["score", "--probs", "{probs}", "--logits", "--out", "{tmp}/out.csv"], "these are probabilities already"),
    (["score", "--probs", "{tmp}/passwd", "--out", "{tmp}/out.csv"], "it is not a numpy file"),
    (["score", "--probs", "{tmp}/objects.npy", "--out", "{tmp}/out.csv"], "Python objects"),
    # Issue 25: the new signals' options and files.
    (["train", "--data", "digits", "--embeddings", "first", "--out", "{tmp}/out"], "--embeddings must be last, all or none"),
    (["train", "--data", "digits", "--arch", "torchvision:squeezenet1_0", "--members", "1", "--out", "{tmp}/out"], "has no linear classifier head"),
    (["difficulty", "{run}", "--k", "0", "--out", "{tmp}/out.csv"], "--k must be a whole number of neighbours"),
    (["difficulty", "{run}", "--split", "val", "--out", "{tmp}/out.csv", "--k", "1001"], "--k must be a whole number of neighbours"),
    (["combine", "{run}", "--folds", "51"], "--folds must be a whole number from 2 to 50"),
    (["combine", "{run}", "--calibration", "test"], "--calibration must be a split of"),
    (["combine", "{run}", "--target", "{tmp}/nowhere"], "nowhere"),
    (["report", "{run}", "--ceiling-threshold", "1", "--out", "{tmp}/out"], "--ceiling-threshold must be a probability in (0, 1)"),
    (["hardset", "{run}", "--top", "0.1", "--score", "untrust", "--out", "{tmp}/out.csv"], "keeps no embeddings"),
    (["hardset", "{run}", "--top", "0.1", "--export", "{tmp}/plain", "--out", "{tmp}/out.csv"], "--export must be hf:DIR"),
    (["hardset", "{run}", "--top", "0.1", "--export", "hf:{tmp}/hf", "--out", "{tmp}/out.csv"], "--export needs a run made by"),
]


@pytest.mark.parametrize(
    "args, message", SWEEP_REFUSALS, ids=[" ".join(a[:1] + a[2:4])[:40].encode("unicode_escape").decode() for a, _ in SWEEP_REFUSALS]
)
def test_what_the_sweep_found_is_refused_in_one_line(cli, run, tmp_path, probs_file, args, message):
    probs, _, array, _ = probs_file
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00" * 200)
    np.save(tmp_path / "one_class.npy", np.ones((2, 2, 20, 1), np.float32))
    np.savez(tmp_path / "with_names.npz", probs=array, labels=np.array(["cat"] * array.shape[2]))
    np.savez(tmp_path / "objects.npz", x=np.array([[1.0], [2.0]] * 20, dtype=object), y=np.arange(40) % 2)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    np.savez(tmp_path / "twice.npz", x=np.ones((40, 3), np.float32), y=np.arange(40) % 2, ids=np.array(["a"] * 40))
    np.savez(tmp_path / "one_class.npz", x=np.ones((40, 3), np.float32), y=np.zeros(40, int))
    top = np.sort(array[0, 0], axis=-1)[:, ::-1][:, :2]
    np.savez(tmp_path / "top.npz", values=top, indices=np.tile([0, 1], (len(top), 1)))
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    for name, text in (("empty", None), ("notjson", "{nope"), ("bandless", '{"methods": {}}')):
        (tmp_path / name).mkdir()
        if text is not None:
            (tmp_path / name / "metrics.json").write_text(text)
    args = [a.format(tmp=tmp_path, run=run, probs=probs) for a in args]
    result = cli(*args)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.stderr.startswith("confusion: error:") and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.csv").exists()


def test_an_npz_of_predictions_and_labels_brings_its_labels(cli, tmp_path, probs_file):
    _, _, array, labels = probs_file
    np.savez(tmp_path / "both.npz", probs=array, labels=labels)
    assert cli("import", "--probs", tmp_path / "both.npz", "--out", tmp_path / "run").exit_code == 0
    from confusion.store import RunStore

    assert np.array_equal(RunStore.open(tmp_path / "run").labels("val"), labels)
    assert cli("score", "--probs", tmp_path / "both.npz", "--out", tmp_path / "s.csv").exit_code == 0
    assert np.array_equal(pd.read_csv(tmp_path / "s.csv")["label"], labels)


def test_evaluate_checks_its_options_first(cli, digits_run, tmp_path):
    hard = tmp_path / "hard.csv"
    assert cli("hardset", digits_run, "--top", "0.2", "--out", hard).exit_code == 0
    for args, message in (
        (["--device", "tpu"], "--device must be cpu or cuda"),
        (["--bins", "0"], "--bins must be 1 to"),
        (["--root", tmp_path / "nowhere"], "does not exist"),
    ):
        result = cli("evaluate", digits_run, "--hardset", hard, "--out", tmp_path / "e.csv", *args)
        assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not (tmp_path / "e.csv").exists()


def test_usage_errors_are_one_line_too(cli_process, run):
    for args, message in (
        (["score", "--split"], "requires an argument"),
        (["hardset"], "Missing argument"),
        (["score", str(run), "--base", "3"], "--base"),
        (["nonsense"], "No such command"),
    ):
        result = cli_process(*args, timeout=60)
        assert result.exit_code == 2 and result.stderr.startswith("confusion: error:") and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_output_paths_that_cannot_be_written(cli, run, tmp_path):
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "file").write_text("x")
    for out, message in ((tmp_path / "folder.csv", "is a folder"), (tmp_path / "file" / "s.csv", "is a file, not a folder")):
        result = cli("score", run, "--out", out)
        assert result.exit_code == 2 and message in result.stderr
    result = cli("report", run, "--out", tmp_path / "file")
    assert result.exit_code == 2 and "not a folder" in result.stderr


def test_a_split_named_twice_is_scored_once(cli, run, tmp_path):
    assert cli("score", run, "--split", "val", "--split", "val", "--out", tmp_path / "s.csv").exit_code == 0
    table = pd.read_csv(tmp_path / "s.csv")
    assert len(table) == 200 and table["sample"].is_unique
    result = cli("score", run, "--split", "test")
    assert result.exit_code == 2 and "no split 'test'" in result.stderr


def test_labels_beyond_int64_do_not_wrap_and_pattern_files_do_not_collide(cli, tmp_path, probs_file):
    probs, _, array, labels = probs_file
    huge = labels.astype(np.uint64)
    huge[0] = 2**63 + 1  # would wrap to a negative (unknown) label
    np.save(tmp_path / "huge.npy", huge)
    result = cli("import", "--probs", probs, "--labels", tmp_path / "huge.npy", "--out", tmp_path / "r1")
    assert result.exit_code == 2 and "labels must lie in 0..9" in result.stderr and not (tmp_path / "r1").exists()
    (tmp_path / "preds").mkdir()
    for name in ("m0_e0", "m00_e0", "m1_e0"):
        np.save(tmp_path / "preds" / f"{name}.npy", array[0, 0])
    result = cli("import", "--probs", str(tmp_path / "preds" / "m{member}_e{epoch}.npy"), "--out", tmp_path / "r2")
    assert result.exit_code == 2 and "both name member 0, epoch 0" in result.stderr


def test_a_report_replaces_its_folder_whole_and_never_a_users_folder(cli, run, tmp_path):
    assert cli("report", run, "--out", tmp_path / "report", "--min-count", "1").exit_code == 0
    (tmp_path / "report" / "stale.png").write_text("old")
    assert cli("report", run, "--out", tmp_path / "report", "--min-count", "1").exit_code == 0
    assert not (tmp_path / "report" / "stale.png").exists()  # the new report, not a mix of two
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]  # no temporary folder left
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    result = cli("report", run, "--out", tmp_path / "mine")
    assert result.exit_code == 2 and "was not written by `confusion report`" in result.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_users_folder_that_merely_holds_an_index_html_or_a_manifest_is_never_replaced(cli, run, digits_run, tmp_path):
    """Issue 28: `report --out www` deleted a web folder holding an index.html, and `hardset
    --materialize DIR` a folder holding a manifest.csv (both exit 0). Only a folder this toolkit
    wrote, with its own marker naming the command, is replaced."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("<h1>my site</h1>")
    (www / "about.html").write_text("me")
    result = cli("report", run, "--out", www, "--min-count", "1")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "was not written by `confusion report`" in result.stderr
    assert sorted(p.name for p in www.iterdir()) == ["about.html", "index.html"]
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.csv").write_text("sample,split\nmine,val\n")
    (data / "photo.png").write_bytes(b"png")
    result = cli("hardset", digits_run, "--out", tmp_path / "h.csv", "--top", "0.2", "--materialize", data)
    assert result.exit_code == 2 and "was not written by `confusion hardset`" in result.stderr
    assert sorted(p.name for p in data.iterdir()) == ["manifest.csv", "photo.png"] and not (tmp_path / "h.csv").exists()
    # a report folder is not a hard set's: each command replaces only its own output
    assert cli("report", run, "--out", tmp_path / "rep", "--min-count", "1").exit_code == 0
    marker = json.loads((tmp_path / "rep" / ".confusion-output.json").read_text())
    assert marker["command"] == "report" and marker["run"] == str(run)
    result = cli("hardset", digits_run, "--out", tmp_path / "h.csv", "--top", "0.2", "--materialize", tmp_path / "rep")
    assert result.exit_code == 2 and (tmp_path / "rep" / "index.html").exists()


def test_an_output_named_by_a_link_leaves_no_link_behind(cli, run, tmp_path):
    """Issue 28: `report --out L`, L a link, left `.L.PID.old.partial` behind for ever."""
    assert cli("report", run, "--out", tmp_path / "first", "--min-count", "1").exit_code == 0
    (tmp_path / "link").symlink_to(tmp_path / "first")
    assert cli("report", run, "--out", tmp_path / "link", "--min-count", "1").exit_code == 0
    assert (tmp_path / "link").is_dir() and not (tmp_path / "link").is_symlink()
    assert (tmp_path / "first" / "index.html").exists()  # what the link pointed to is untouched
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder, no old link


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_array_meta(run, split, name, chunk_shape):
    import json

    path = run / "predictions.zarr" / split / name / "zarr.json"
    meta = json.loads(path.read_text())
    meta["chunk_grid"]["configuration"]["chunk_shape"] = chunk_shape
    path.write_text(json.dumps(meta))


def _chunk_files(run, split, name):
    return sorted(p for p in (run / "predictions.zarr" / split / name / "c").rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda run: _chunk_files(run, "val", "ids")[0].unlink(), "sample ids of split 'val' are missing"),
        (lambda run: _chunk_files(run, "val", "labels")[0].unlink(), "labels of split 'val' are missing"),
        (lambda run: _chunk_files(run, "val", "probs")[0].unlink(), "of a committed epoch is missing"),
        (lambda run: _truncate(_chunk_files(run, "val", "probs")[0]), "is truncated"),
        (lambda run: _chunk_files(run, "val", "probs")[0].write_bytes(b""), "split 'val' is damaged: probabilities do not sum to 1"),
        (lambda run: (run / "predictions.zarr" / "val" / "probs" / "zarr.json").write_text("{"), "val/probs is missing or damaged"),
        (lambda run: (run / "predictions.zarr" / "val" / "ids" / "zarr.json").unlink(), "val/ids is missing or damaged"),
        (lambda run: _chunk_files(run, "val", "ids")[0].write_bytes(b"\x00garbage"), "val/ids is damaged"),
        (lambda run: _chunk_files(run, "val", "labels")[0].write_bytes(b""), "val/labels is damaged"),
        (lambda run: (run / "predictions.zarr" / "val" / "zarr.json").unlink(), "val/zarr.json is missing or damaged"),
        (lambda run: _flip(_chunk_files(run, "val", "probs")[0], 1), "split 'val' is damaged: probabilities do not sum to 1"),
        (lambda run: (run / "run.json").write_text("[1, 2]"), "has format 'list'"),
        (lambda run: (run / "run.json").write_bytes(b"\xff\xfe{"), "run.json is unreadable"),
        (lambda run: _edit_meta(run, n_classes="ten"), "'n_classes' is missing or not a int"),
        (lambda run: _edit_meta(run, recorded_epochs=[0, 1]), "'recorded_epochs' must be"),
        (lambda run: _edit_meta(run, splits={"val": []}), "split 'val' has no sample count"),
        (lambda run: _edit_meta(run, splits={"val": {"n": 5, "labelled": True}}), "but run.json gives split 'val' 5 samples"),
        (lambda run: _edit_array_meta(run, "val", "probs", [0, 0, 0, 0]), "val/probs has chunk shape (0, 0, 0, 0)"),
    ],
)
def test_a_damaged_store_is_told_from_real_data(cli, run, tmp_path, damage, message):
    damage(run)
    for args in (
        ("score", run, "--out", tmp_path / "s.csv"),
        ("hardset", run, "--out", tmp_path / "h.csv", "--top", "0.1"),
        ("report", run, "--out", tmp_path / "report"),
        ("difficulty", run, "--out", tmp_path / "d.csv"),
    ):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.stderr)
        last = result.stderr.strip().splitlines()[-1]  # after any progress lines: the one error line
        assert last.startswith("confusion: error:") and message in last, result.stderr
    assert not any((tmp_path / name).exists() for name in ("s.csv", "h.csv", "report", "d.csv"))
    result = cli("status", run)  # reads run.json and the member files only: whole, or one line
    assert result.exit_code in (0, 2) and (result.exit_code == 0 or result.stderr.strip().splitlines()[-1].startswith("confusion: error:"))


@pytest.mark.parametrize("name", ["ids", "labels"])
def test_a_report_names_damaged_ids_or_labels_before_any_work(cli, run, tmp_path, name):
    _chunk_files(run, "val", name)[0].unlink()
    result = cli("report", run, "--out", tmp_path / "report")
    assert result.exit_code == 2 and f"val/{name} is damaged" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # no progress line: nothing was computed


REDUCED_FIELDS = [
    "member_entropy",
    "member_argmax",
    "member_label",
    "member_other",
    "member_sumsq",
    "ensemble_entropy",
    "ensemble_argmax",
    "ensemble_top1",
]


@pytest.mark.parametrize("field", ["member_entropy", "ensemble_entropy", "member_sumsq", "ensemble_top1", "member_argmax", "member_other"])
@pytest.mark.parametrize("damage", ["zeros", "garbage"])
def test_a_reduced_chunk_zero_filled_or_overwritten_is_named_as_damage(cli, tmp_path, probs_file, field, damage):
    """Issue 28: a `--keep reduced` store whose chunk was zero-filled or overwritten scored
    silently wrong (exit 0, every score off), where a raw store catches the same damage. The
    record's invariants are checked on every read (`reduced.check_record`)."""
    probs, labels, _, _ = probs_file
    run = tmp_path / "run"
    assert cli("import", "--probs", probs, "--labels", labels, "--out", run, "--keep", "reduced").exit_code == 0
    chunk = _chunk_files(run, "val", field)[0]
    size = chunk.stat().st_size
    chunk.write_bytes(bytes(size) if damage == "zeros" else np.random.default_rng(5).integers(0, 256, size, dtype=np.uint8).tobytes())
    commands = [("score", run, "--out", tmp_path / "s.csv"), ("difficulty", run, "--out", tmp_path / "d.csv")]
    for command in commands if field in ("member_entropy", "ensemble_entropy", "member_sumsq", "ensemble_top1") else commands[1:]:
        result = cli(*command)
        assert result.exit_code == 2 and "reduced record" in result.stderr and "damaged" in result.stderr, (command, result.stderr)
        assert not (tmp_path / "s.csv").exists() and not (tmp_path / "d.csv").exists()


@pytest.mark.parametrize("field", REDUCED_FIELDS + ["topk_values", "topk_indices"])
def test_a_damaged_reduced_or_top_k_store_is_one_line_too(cli, tmp_path, probs_file, field):
    """A lost chunk of the reduced record or of top-k logs reads as zarr's fill value (NaN, an
    impossible class): named as damage, never scored as data."""
    import numpy as np

    probs, labels, _, _ = probs_file
    run = tmp_path / "run"
    if field.startswith("topk"):
        values = np.load(probs).astype(np.float64)
        order = np.argsort(-values, axis=-1)[..., :2]
        np.savez(tmp_path / "top.npz", values=np.take_along_axis(values, order, axis=-1), indices=order, n_classes=values.shape[-1])
        assert cli("import", "--topk", tmp_path / "top.npz", "--labels", labels, "--out", run).exit_code == 0
        commands = (("score", run, "--out", tmp_path / "s.csv"), ("hardset", run, "--out", tmp_path / "h.csv", "--top", "0.1"))
        message = "top-k logs"
    else:
        assert cli("import", "--probs", probs, "--labels", labels, "--out", run, "--keep", "reduced").exit_code == 0
        commands = (
            ("score", run, "--out", tmp_path / "s.csv"),
            ("hardset", run, "--out", tmp_path / "h.csv", "--top", "0.1"),
            ("report", run, "--out", tmp_path / "report"),
            ("difficulty", run, "--out", tmp_path / "d.csv"),
        )
        message = "reduced record"
    _chunk_files(run, "val", field)[0].unlink()
    for cache in run.glob("cache/*"):
        cache.unlink()
    failed = 0
    for args in commands:
        result = cli(*args)
        if result.exit_code == 0:  # a command that never reads this field (e.g. score and member_sumsq) is right to pass
            continue
        failed += 1
        assert result.exit_code == 2, (args, result.stderr)
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("confusion: error:") and message in last and "damaged" in last, result.stderr
        assert not Path(args[3]).exists(), args  # nothing half-written
    assert failed, f"no command noticed the damage to {field}"


def _flip(path, position):
    data = bytearray(path.read_bytes())
    data[position] ^= 0x5A  # the high byte of a float16: the row no longer sums to 1
    path.write_bytes(bytes(data))


def _edit_meta(run, **changes):
    import json

    meta = json.loads((run / "run.json").read_text())
    meta.update(changes)
    (run / "run.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from confusion.training import TrainConfig, train

    out = tmp_path_factory.mktemp("digits") / "run"
    train(TrainConfig(data="digits", arch="mlp-s", members=2, epochs=2, limit_train=300), out)
    return out


def test_checkpoints_that_do_not_fit_are_one_line(cli, digits_run, tmp_path):
    import shutil

    import torch

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    torch.save({"model": {"nope": torch.zeros(1)}}, run / "checkpoints" / "member-0.pt")
    assert cli("hardset", run, "--out", tmp_path / "h.csv", "--top", "0.1").exit_code == 0
    result = cli("evaluate", run, "--hardset", tmp_path / "h.csv")
    assert result.exit_code == 2 and "member-0.pt" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = cli("train", "--data", "digits", "--arch", "mlp-s", "--members", "2", "--epochs", "3", "--limit-train", "300", "--out", run)
    assert result.exit_code == 2  # other settings: refused before the checkpoint is read
    torch.save(
        {"epoch": 1, "model": {"nope": torch.zeros(1)}, "optimizer": {}, "scheduler": {}, "torch_rng": torch.get_rng_state()},
        run / "checkpoints" / "member-0.pt",
    )
    from confusion.engine import load_checkpoint, make_member, restore
    from confusion.errors import RunStoreError
    from confusion.training import TrainConfig

    member = make_member(0, TrainConfig(data="digits", arch="mlp-s"), (1, 8, 8), 10, 300, torch.device("cpu"))
    with pytest.raises(RunStoreError, match="does not fit member 0"):
        restore(member, load_checkpoint(run / "checkpoints" / "member-0.pt"))


def test_materialize_writes_a_fresh_folder_and_never_through_a_planted_link(cli, digits_run, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "hard"
    assert cli("hardset", digits_run, "--out", tmp_path / "h0.csv", "--top", "0.2", "--materialize", target).exit_code == 0
    shutil.rmtree(target / "0")
    (target / "0").symlink_to(outside)  # an earlier materialization, with a link planted in it
    result = cli("hardset", digits_run, "--out", tmp_path / "h.csv", "--top", "0.2", "--materialize", target)
    assert result.exit_code == 0, result.stderr
    assert list(outside.iterdir()) == []  # nothing written outside the folder named
    assert not (target / "0").is_symlink() and len(list(target.rglob("*.png"))) == len(pd.read_csv(tmp_path / "h.csv"))
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "notes.txt").write_text("mine")
    result = cli("hardset", digits_run, "--out", tmp_path / "h2.csv", "--top", "0.2", "--materialize", tmp_path / "users")
    assert result.exit_code == 2 and "was not written by `confusion hardset`" in result.stderr
    assert not (tmp_path / "h2.csv").exists()  # refused before the manifest was written


def test_class_names_that_sanitise_alike_keep_their_own_folders():
    from confusion.hardset import class_folders

    assert class_folders(["cat", "dog"]) == ["cat", "dog"]
    folders = class_folders(["a/b", "a_b", "A_B"])
    assert len(set(folders)) == 3 and folders[0].startswith("0_")


def test_names_with_mathtext_are_drawn_as_written(cli, tmp_path, probs_file):
    probs, labels, _, _ = probs_file
    run = tmp_path / r"run$\foo$"
    assert cli("import", "--probs", probs, "--labels", labels, "--out", run, "--classes", ",".join(rf"$\c{k}$" for k in range(10))).exit_code == 0
    result = cli("report", run, "--out", tmp_path / "report", "--compare", run, "--min-count", "1")
    assert result.exit_code == 0, result.stderr


def test_compare_with_no_shared_samples_is_refused(cli, tmp_path, probs_file):
    probs, labels, array, _ = probs_file
    assert cli("import", "--probs", probs, "--labels", labels, "--out", tmp_path / "a").exit_code == 0
    (tmp_path / "ids.txt").write_text("\n".join(f"other-{i}" for i in range(200)))
    assert cli("import", "--probs", probs, "--ids", tmp_path / "ids.txt", "--out", tmp_path / "b").exit_code == 0
    result = cli("report", tmp_path / "a", "--compare", tmp_path / "b", "--out", tmp_path / "report")
    assert result.exit_code == 2 and "shares 0 val samples" in result.stderr and not (tmp_path / "report").exists()
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # refused before any work (no progress lines)


def test_bad_npz_arrays(cli, tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = (digits.images * 16).astype(np.uint8), digits.target
    cases = {
        "empty": (dict(x_train=np.zeros((0, 8, 8), np.uint8), y_train=np.zeros(0, int), x_val=x[:10], y_val=y[:10]), "x_train is empty"),
        "object": (dict(x_train=x[:20], y_train=np.array([1, "a"] * 10, dtype=object), x_val=x[:10], y_val=y[:10]), "Object arrays"),
        "fractions": (dict(x_train=x[:20], y_train=np.array([0.5, 1.5] * 10), x_val=x[:10], y_val=y[:10]), "not fractions"),
    }
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        result = cli("train", "--data", f"npz:{tmp_path / name}.npz", "--out", tmp_path / name, "--epochs", "1")
        assert result.exit_code == 2 and message in result.stderr, (name, result.stderr)
        assert not (tmp_path / name).exists()


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    from confusion._files import write_text_atomic

    orphan = tmp_path / ".scores.csv.999999999.x.tmp"  # no such pid
    orphan.write_text("half")
    write_text_atomic(tmp_path / "scores.csv", "whole")
    assert not orphan.exists() and (tmp_path / "scores.csv").read_text() == "whole"


def test_a_worker_killed_mid_run_stops_the_command_at_once_and_the_rerun_resumes(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
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
        "40",
        "--out",
        str(out),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "checkpoints").glob("*.pt")):
        time.sleep(0.2)
    children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    workers = [int(pid) for pid in children if "spawn" in open(f"/proc/{pid}/cmdline").read()]
    assert workers, children
    os.kill(workers[0], signal.SIGKILL)
    killed_at = time.time()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2 and time.time() - killed_at < 20  # not after the other member's 40 epochs
    assert stderr.strip().splitlines()[-1].startswith("confusion: error: a training process died")
    assert "Traceback" not in stderr


def test_workers_of_a_parent_killed_during_their_start_up_exit(tmp_path):
    """kill -9 of the coordinator while its workers still import and unpickle their job (before
    they could arm their death signal): they exit instead of training on without the lock."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
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
        "60",
        "--out",
        str(out),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def workers() -> list[int]:
        children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        return [int(pid) for pid in children if "spawn" in open(f"/proc/{pid}/cmdline").read()]

    deadline = time.time() + 120
    while time.time() < deadline and len(workers()) < 2:
        time.sleep(0.01)
    started = workers()
    assert len(started) == 2
    os.kill(process.pid, signal.SIGKILL)  # the parent only, as a scheduler or OOM killer would
    process.wait()

    def running(pid: int) -> bool:
        try:
            return open(f"/proc/{pid}/stat").read().split()[2] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.time() + 20  # their start-up, not their 60 epochs
    while time.time() < deadline and any(running(pid) for pid in started):
        time.sleep(0.1)
    assert not any(running(pid) for pid in started)
    assert not (out / "checkpoints").exists()  # no member trained an epoch


MID_WORK = {  # what a kill at the chosen progress line must have left committed: proof it landed mid-work
    "import": lambda state: state["exists"] and not state["complete"] and 0 < len(state["recorded_epochs"]) < 6,
    "score": lambda state: not state["exists"],
    "report": lambda state: not state["exists"],
    "train": lambda state: state["exists"] and not state["complete"] and any(state["ended_epochs"]),
}


@pytest.mark.parametrize("case, fraction", [("import", 0.5), ("score", 0.0), ("report", 0.0), ("train", 0.4)])
def test_kill_9_at_a_progress_line_then_rerun_is_exact(tmp_path, case, fraction):
    """The soak of bench/faults.py, one kill per command, at one of the command's own progress
    lines (not a timer): the kill landed while it worked (what it had committed is checked
    before the rerun), what it left is whole or absent, and the rerun gives exactly the
    uninterrupted result."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("faults", Path(__file__).parent.parent / "bench" / "faults.py")
    faults = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(faults)
    faults.make_inputs(tmp_path, samples=6000)
    outcome = faults.run_case(case, fraction, tmp_path)
    assert outcome["killed"], outcome  # by SIGKILL, at the line, not after it had finished
    assert MID_WORK[case](outcome["committed"]), outcome
    assert outcome["left"] is None and outcome["exact"] and not outcome["stray"], outcome


def test_empty_files_and_wrong_class_counts_leave_nothing(cli, tmp_path, probs_file):
    probs, labels, _, _ = probs_file
    (tmp_path / "empty.npy").write_bytes(b"")
    result = cli("train", "--data", "digits", "--unlabeled", tmp_path / "empty.npy", "--out", tmp_path / "run", "--epochs", "1")
    assert result.exit_code == 2 and "not a readable" in result.stderr and not (tmp_path / "run").exists()
    result = cli("import", "--probs", probs, "--classes", "a,b", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "2 class names given for 10 classes" in result.stderr and not (tmp_path / "r").exists()
    result = cli("score", "--probs", probs, "--engine", "fast")
    assert result.exit_code == 2 and "--engine must be" in result.stderr


def test_an_import_killed_before_it_finished_starts_over_on_rerun(cli, tmp_path, probs_file):
    import json

    from confusion.store import RunStore

    probs, labels, _, _ = probs_file
    args = ("import", "--probs", probs, "--labels", labels, "--out", tmp_path / "run")
    assert cli(*args).exit_code == 0
    reference = score_run(RunStore.open(tmp_path / "run"), "val", cache=False).confusion
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["import_complete"] is True
    meta["import_complete"], meta["recorded_epochs"] = False, meta["recorded_epochs"][:1]  # as a kill mid-copy leaves it
    (tmp_path / "run" / "run.json").write_text(json.dumps(meta))
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    np.testing.assert_array_equal(score_run(RunStore.open(tmp_path / "run"), "val", cache=False).confusion, reference)
    result = cli(*args)  # a finished import is never redone silently
    assert result.exit_code == 2 and "already has a split named 'val'" in result.stderr


def test_ctrl_c_at_any_moment_of_start_up_is_one_line(tmp_path, probs_file):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    def wait_until_confusion_code_runs(process):
        """The clock starts once the child maps numpy's C extension: numpy is first imported inside
        `_entry.main`'s guarded import of the CLI. A Ctrl-C before that lands in Python's own start
        (no handler yet: the process dies of the signal; or a traceback from `site` or from the
        `from confusion._entry import main` line pip writes), where no program's code runs: a clock
        started at Popen would test Python on a loaded machine, not confusion."""
        maps, deadline = Path(f"/proc/{process.pid}/maps"), time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if "/numpy/" in maps.read_text():
                    return
            except OSError:  # the child has just exited
                return
            time.sleep(0.001)

    probs, labels, _, _ = probs_file
    script = Path(sys.executable).parent / "confusion"  # the console script users run
    for delay in (0.0, 0.05, 0.3, 0.8):
        process = subprocess.Popen(
            [str(script), "import", "--probs", str(probs), "--out", str(tmp_path / f"run{delay}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        wait_until_confusion_code_runs(process)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert "Traceback" not in stderr, stderr
        if process.returncode != 0:
            assert (process.returncode, stderr.strip().splitlines()[-1:]) == (130, ["confusion: interrupted"]), (delay, stderr)


def test_ctrl_c_while_typer_parses_or_closes_is_said_too(monkeypatch, capsys):
    """typer turns a KeyboardInterrupt, in a command's body or outside it, into a silent exit code
    130 (CI saw exit 130 with an empty stderr from the test above); the console script says the line."""
    import sys

    import typer.core

    from confusion import cli

    def interrupted(self, ctx):
        raise KeyboardInterrupt

    monkeypatch.setattr(typer.core.TyperGroup, "invoke", interrupted)
    monkeypatch.setattr(sys, "argv", ["confusion", "import", "--probs", "p.npy", "--out", "run"])
    with pytest.raises(SystemExit) as ended:
        cli.main()
    assert ended.value.code == 130 and capsys.readouterr().err == "confusion: interrupted\n"


def test_a_finished_command_ignores_ctrl_c_so_python_s_teardown_cannot_die_of_it(tmp_path, probs_file, monkeypatch):
    import signal
    import sys

    from confusion import cli

    before = signal.getsignal(signal.SIGINT)
    try:
        monkeypatch.setattr(sys, "argv", ["confusion", "import", "--probs", str(probs_file[0]), "--out", str(tmp_path / "run")])
        with pytest.raises(SystemExit) as ended:
            cli.main()
        assert ended.value.code == 0 and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


from confusion import Recorder  # noqa: E402

# The Recorder's API, misused as a user's loop might: one InputError/RunStoreError line each,
# nothing recorded, no folder left by a refused create.
_P = np.full((4, 3), 1 / 3)
RECORDER_MISUSE = [
    ("unknown split", lambda rec, w: w.log("test", 1, _P), "has no split 'test'"),
    ("epoch 0", lambda rec, w: w.log("val", 0, _P), "1-based training epoch"),
    ("epoch 1.5", lambda rec, w: w.log("val", 1.5, _P), "1-based training epoch"),
    ("epoch True", lambda rec, w: w.log("val", True, _P), "1-based training epoch"),
    ("other class count", lambda rec, w: w.log("val", 1, np.full((4, 4), 0.25)), "must be (batch, 3)"),
    ("1-d outputs", lambda rec, w: w.log("val", 1, np.full(4, 0.25)), "must be (batch, 3)"),
    ("integer outputs", lambda rec, w: w.log("val", 1, np.ones((4, 3), int)), "floating point"),
    ("strings", lambda rec, w: w.log("val", 1, [["a", "b", "c"]] * 4), "floating point"),
    ("NaN", lambda rec, w: w.log("val", 1, np.full((4, 3), np.nan)), "NaN or inf"),
    ("negative", lambda rec, w: w.log("val", 1, -_P), "negative probability"),
    ("rows not summing to 1", lambda rec, w: w.log("val", 1, _P * 2), "do not sum to 1"),
    ("float index", lambda rec, w: w.log("val", 1, _P[:2], index=np.array([0.0, 1.0])), "integer sample positions"),
    ("index out of range", lambda rec, w: w.log("val", 1, _P[:2], index=np.array([0, 9])), "outside 0..3"),
    ("negative index", lambda rec, w: w.log("val", 1, _P[:2], index=np.array([-1, 0])), "outside 0..3"),
    ("index of another length", lambda rec, w: w.log("val", 1, _P[:2], index=np.array([0])), "integer sample positions"),
    ("more rows in order than the split has", lambda rec, w: (w.log("val", 1, _P[:2]), w.log("val", 1, _P)), "logged in order this epoch"),
    ("end_epoch before any log", lambda rec, w: w.end_epoch(1), "logged nothing for epoch 1"),
    ("end_epoch with rows missing", lambda rec, w: (w.log("val", 1, _P[:2], index=np.arange(2)), w.end_epoch(1)), "2 of 4 rows"),
    ("next epoch while one is open", lambda rec, w: (w.log("val", 1, _P), w.log("val", 2, _P)), "call end_epoch(1)"),
    ("ending another epoch", lambda rec, w: (w.log("val", 1, _P), w.end_epoch(2)), "is logging epoch 1, not 2"),
    ("an epoch ended twice", lambda rec, w: (w.log("val", 1, _P), w.end_epoch(1), w.end_epoch(1)), "already ended epoch 1"),
    ("logging after close", lambda rec, w: (w.close(), w.log("val", 1, _P)), "is closed"),
    ("member out of range", lambda rec, w: rec.member(5), "0..1"),
    ("member as a string", lambda rec, w: rec.member("0"), "0..1"),
    ("create over a run", lambda rec, w: Recorder.create(rec.store.path, n_classes=3, members=2, splits={"val": 4}), "already exists"),
    (
        "join another run",
        lambda rec, w: Recorder.create(rec.store.path, n_classes=4, members=2, splits={"val": 4}, exist_ok=True),
        "holds another run",
    ),
]


@pytest.mark.parametrize("name, misuse, message", RECORDER_MISUSE, ids=[c[0] for c in RECORDER_MISUSE])
def test_recorder_misuse_is_one_line_and_records_nothing(tmp_path, name, misuse, message):
    from confusion import Recorder
    from confusion.errors import InputError, RunStoreError
    from confusion.store import RunStore

    rec = Recorder.create(tmp_path / "run", n_classes=3, members=2, splits={"val": np.array([0, 1, 2, -1])})
    with rec.member(0) as writer:
        with pytest.raises((InputError, RunStoreError), match=re.escape(message)) as caught:
            misuse(rec, writer)
    assert "\n" not in str(caught.value)
    store = RunStore.open(tmp_path / "run")
    assert store.recorded_epochs == [] and store.n_classes == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(splits={}), "at least one split"),
        (dict(splits={"val": np.array([0, 5])}), "labels must lie in 0..2"),
        (dict(splits={"a/b": 3}), "not a plain name"),
        (dict(splits={".hidden": 3}), "not a plain name"),
        (dict(splits={"val": 3}, ids=["a"]), "must be (samples,) alike"),
        (dict(splits={"val": 3}, ids=["a", "a", "b"]), "unique"),
        (dict(splits={"val": 3}, classes=["x"]), "1 class names given for 3"),
        (dict(splits={"val": 3}, keep="zip"), "raw or reduced"),
        (dict(splits={"val": 3}, n_classes=0), "n_classes must be a whole number from 1 to 1,000,000, got 0"),
        (dict(splits={"val": 3}, members=0), "members must be a whole number from 1 to 1,000, got 0"),
        # Sizes a typo makes: refused at once, naming the parameter, before any memory is taken.
        (dict(splits={"val": 3}, n_classes=10**12), "n_classes must be a whole number from 1 to 1,000,000"),
        (dict(splits={"val": 3}, members=10**6), "members must be a whole number from 1 to 1,000"),
        (dict(splits={"val": 10**12}), "splits must be a whole number from 1 to 2,147,483,647"),
    ],
)
def test_a_refused_recorder_create_leaves_no_folder(tmp_path, kwargs, message):
    from confusion import Recorder
    from confusion.errors import InputError

    arguments = {"n_classes": 3, "members": 2, **kwargs}
    with pytest.raises(InputError, match=re.escape(message)):
        Recorder.create(tmp_path / "run", **arguments)
    assert not (tmp_path / "run").exists()


def test_masked_classes_are_valid_logits(cli, tmp_path):
    """Issue 28: -inf logits (a class masked out) were refused as "NaN or inf"; a row whose every
    class is masked, or a NaN, still is."""
    logits = np.random.default_rng(3).normal(size=(2, 2, 30, 4))
    logits[..., 3] = -np.inf
    np.save(tmp_path / "masked.npy", logits)
    result = cli("score", "--probs", tmp_path / "masked.npy", "--logits", "--out", tmp_path / "s.csv")
    assert result.exit_code == 0, result.stderr
    logits[0, 0, 5] = -np.inf
    np.save(tmp_path / "all.npy", logits)
    result = cli("score", "--probs", tmp_path / "all.npy", "--logits", "--out", tmp_path / "t.csv")
    assert result.exit_code == 2 and "every class's logit is -inf at member 0, epoch 0, sample 5" in result.stderr


def test_report_and_hardset_issue_28_tracebacks_are_one_line_or_gone(cli, run, tmp_path, probs_file):
    """Issue 28: `report --models RUN` sharing no samples raised KeyError: 'confusion'; `report
    --out /proc/nope` ran two stages, then named an internal staging path; `hardset --materialize`
    of a run whose metadata has a label_name column failed after writing the manifest."""
    probs, labels, array, _ = probs_file
    np.save(tmp_path / "other.npy", array[:, :, :50])
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(f"x{i}" for i in range(50)))
    assert cli("import", "--probs", tmp_path / "other.npy", "--ids", ids, "--out", tmp_path / "other").exit_code == 0
    result = cli("report", run, "--models", tmp_path / "other", "--out", tmp_path / "rep")
    assert result.exit_code == 2 and "shares no val samples" in result.stderr and not (tmp_path / "rep").exists()
    result = cli("report", run, "--out", "/proc/nope")
    assert result.exit_code == 2 and result.stderr.startswith("confusion: error: /proc/nope: cannot write in /proc")
    pd.DataFrame({"sample": [str(i) for i in range(200)], "text": ["words"] * 200, "label_name": ["mine"] * 200}).to_csv(
        tmp_path / "meta.csv", index=False
    )
    assert cli("import", "--probs", probs, "--labels", labels, "--meta", tmp_path / "meta.csv", "--out", tmp_path / "texts").exit_code == 0
    result = cli("hardset", tmp_path / "texts", "--top", "0.1", "--out", tmp_path / "h.csv", "--materialize", tmp_path / "docs")
    assert result.exit_code == 0, result.stderr
    written = pd.read_csv(tmp_path / "docs" / "hardset.csv")
    assert (written["meta_label_name"] == "mine").all() and written["label_name"].notna().all()


@pytest.mark.parametrize("keep, field", [("raw", "probs"), ("reduced", "member_entropy"), ("reduced", "ensemble_entropy")])
def test_status_names_a_missing_chunk_of_a_committed_epoch(cli, tmp_path, probs_file, keep, field):
    """Issue 28: `confusion status` exited 0 on a store whose committed chunk was missing."""
    probs, labels, _, _ = probs_file
    run = tmp_path / "run"
    assert cli("import", "--probs", probs, "--labels", labels, "--out", run, "--keep", keep).exit_code == 0
    assert cli("status", run).exit_code == 0
    _chunk_files(run, "val", field)[-1].unlink()
    result = cli("status", run)
    assert result.exit_code == 2 and "of a committed epoch is missing" in result.stderr and field in result.stderr


def test_a_signal_whose_ids_match_nothing_is_refused_before_the_report_runs(cli, run, tmp_path):
    """Issue 28: a features npz without ids_* keys gets positional ids, so `report --signal` with
    the user's own ids failed only after the whole report had run."""
    pd.DataFrame({"sample": [f"img{i}" for i in range(40)], "agreement": np.linspace(0, 1, 40)}).to_csv(tmp_path / "s.csv", index=False)
    result = cli("report", run, "--signal", f"{tmp_path / 's.csv'}:agreement", "--out", tmp_path / "rep")
    assert result.exit_code == 2 and "--signal names 0 samples of the run" in result.stderr and "e.g. '0'" in result.stderr
    assert not (tmp_path / "rep").exists() and "report:" not in result.stderr  # no stage ran


def test_help_keeps_each_summary_whole_and_python_messages_name_parameters(cli, tmp_path):
    """Issue 28: `confusion --help` cut "paper eqs." at its period, and Recorder.create with
    class-name labels told a Python caller to pass --classes."""
    from confusion import Recorder
    from confusion.errors import InputError

    help_text = cli("--help").stdout
    assert "eqs." not in help_text and "the paper's equations" in help_text
    with pytest.raises(InputError, match=r"give the classes in order with classes a,b,c"):
        Recorder.create(tmp_path / "run", n_classes=2, members=1, splits={"val": np.array(["cat", "dog"])})
    assert not (tmp_path / "run").exists()
