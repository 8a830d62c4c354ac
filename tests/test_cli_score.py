"""`confusion score` and `confusion import` as a user runs them, good input and bad."""

import math
import re

import numpy as np
import pandas as pd
import pytest

COLUMNS = ["sample", "split", "confusion", "confusion_normalized", "expected_entropy", "disagreement"]


def test_score_an_array_file(cli, tmp_path, probs_file):
    path, labels_path, probs, labels = probs_file
    result = cli("score", "--probs", path, "--labels", labels_path, "--out", tmp_path / "s.csv")
    assert result.exit_code == 0, result.stderr
    table = pd.read_csv(tmp_path / "s.csv")
    assert list(table.columns) == COLUMNS + ["label", "unit"]
    assert table["sample"].tolist() == list(range(200))
    np.testing.assert_array_equal(table["label"], labels)
    # eqs. 1-3 by hand in float64
    average = probs.astype(np.float64).mean(axis=0)
    by_hand = -(average * np.log2(average)).sum(axis=-1).mean(axis=0)
    np.testing.assert_allclose(table["confusion"], by_hand, atol=2e-3)
    np.testing.assert_allclose(table["confusion_normalized"], by_hand / math.log2(10), atol=1e-3)
    assert "confusion (bits)" in result.stdout


def test_score_in_nats_and_from_logits(cli, tmp_path, probs_file):
    path, _, probs, _ = probs_file
    np.save(tmp_path / "logits.npy", np.log(probs) + 3.0)
    cli("score", "--probs", path, "--out", tmp_path / "bits.csv")
    result = cli("score", "--probs", tmp_path / "logits.npy", "--logits", "--base", "e", "--out", tmp_path / "nats.parquet")
    assert result.exit_code == 0, result.stderr
    bits, nats = pd.read_csv(tmp_path / "bits.csv"), pd.read_parquet(tmp_path / "nats.parquet")
    np.testing.assert_allclose(nats["confusion"] / math.log(2), bits["confusion"], atol=1e-4)
    assert set(nats["unit"]) == {"nats"} and set(bits["unit"]) == {"bits"}


def test_import_then_score_the_run(cli, tmp_path, probs_file):
    path, labels_path, probs, labels = probs_file
    assert cli("import", "--probs", path, "--labels", labels_path, "--out", tmp_path / "run").exit_code == 0
    np.save(tmp_path / "pool.npy", probs[:, :, :30])
    assert cli("import", "--probs", tmp_path / "pool.npy", "--split", "pool", "--out", tmp_path / "run").exit_code == 0
    result = cli("score", tmp_path / "run", "--out", tmp_path / "s.parquet")
    assert result.exit_code == 0, result.stderr
    table = pd.read_parquet(tmp_path / "s.parquet")
    assert list(table.columns) == COLUMNS + ["label", "unit"]
    assert table["split"].tolist() == ["val"] * 200 + ["pool"] * 30
    assert (table.loc[table.split == "pool", "label"] == -1).all()
    direct = pd.read_csv(tmp_path / "d.csv") if cli("score", "--probs", path, "--out", tmp_path / "d.csv").exit_code == 0 else None
    np.testing.assert_allclose(table["confusion"][:200], direct["confusion"], atol=2e-3)


def test_import_one_file_per_member_and_epoch(cli, tmp_path, probs_file):
    _, _, probs, _ = probs_file
    for m in range(3):
        for t in range(4):
            np.save(tmp_path / f"m{m}_e{t + 1}.npy", probs[m, t])
    result = cli("import", "--probs", str(tmp_path / "m{member}_e{epoch}.npy"), "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    cli("score", tmp_path / "run", "--out", tmp_path / "a.csv")
    cli("score", "--probs", tmp_path / "m0_e1.npy", "--out", tmp_path / "b.csv")
    (tmp_path / "m2_e3.npy").unlink()
    result = cli("import", "--probs", str(tmp_path / "m{member}_e{epoch}.npy"), "--out", tmp_path / "run2")
    assert result.exit_code == 2 and "missing files" in result.stderr


def _junk(path):
    path.write_text("not numpy")
    return path


def _bad(tmp_path, name, array):
    np.save(tmp_path / name, array)
    return tmp_path / name


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: _bad(d, "nan.npy", np.where(np.eye(4)[None, None, :, :] > 0, np.nan, 0.25)), "NaN or inf"),
        (lambda d: _bad(d, "inf.npy", np.full((1, 1, 3, 2), [np.inf, 0.0])), "NaN or inf"),
        (lambda d: _bad(d, "neg.npy", np.array([[1.5, -0.5]])), "negative probability"),
        (lambda d: _bad(d, "sum.npy", np.full((2, 2, 3, 4), 0.3, np.float32)), "do not sum to 1.*--logits"),
        (lambda d: _bad(d, "three.npy", np.full((2, 3, 4), 0.25)), "4-D \\(members, epochs, samples, classes\\) or 2-D"),
        (lambda d: _bad(d, "empty.npy", np.zeros((0, 10))), "empty"),
        (lambda d: d / "missing.npy", "does not exist"),
        (lambda d: _junk(d / "junk.npy"), "not a readable"),
    ],
)
@pytest.mark.parametrize("command", ["score", "import"])
def test_bad_input_gets_one_line_and_exit_2(cli, tmp_path, make, message, command):
    source = make(tmp_path)
    out = tmp_path / ("out.csv" if command == "score" else "run")
    result = cli(command, "--probs", source, "--out", out)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("confusion: error:"), result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists()  # no half-written output
    assert not list(tmp_path.glob(".out*"))


def test_labels_of_the_wrong_length(cli, tmp_path, probs_file):
    path, _, _, _ = probs_file
    np.save(tmp_path / "short.npy", np.zeros(10, np.int64))
    for command in (("score", "--out", tmp_path / "s.csv"), ("import", "--out", tmp_path / "run")):
        result = cli(command[0], "--probs", path, "--labels", tmp_path / "short.npy", *command[1:])
        assert result.exit_code == 2 and "labels must be (samples,) = (200,)" in result.stderr
    np.save(tmp_path / "range.npy", np.full(200, 10))
    result = cli("score", "--probs", path, "--labels", tmp_path / "range.npy")
    assert result.exit_code == 2 and "0..9" in result.stderr


def test_run_directory_errors(cli, tmp_path):
    result = cli("score", tmp_path / "nowhere")
    assert result.exit_code == 2 and "does not exist" in result.stderr
    result = cli("score", tmp_path)
    assert result.exit_code == 2 and "is not a run store" in result.stderr
    result = cli("score")
    assert result.exit_code == 2 and "either a run directory or --probs" in result.stderr
    result = cli("score", "--probs", "x.npy", "--out", tmp_path / "s.txt")
    assert result.exit_code == 2 and ".csv or .parquet" in result.stderr


def test_run_held_by_another_process_is_refused(cli, tmp_path, probs_file, lock_holder):
    path, _, _, _ = probs_file
    pid = lock_holder(tmp_path / "run")
    result = cli("import", "--probs", path, "--out", tmp_path / "run")
    assert result.exit_code == 2 and f"is in use by process {pid}" in result.stderr


def test_real_subprocess_exit_code_and_no_traceback(cli_process, tmp_path):
    np.save(tmp_path / "bad.npy", np.full((4, 3), 0.5))
    result = cli_process("score", "--probs", tmp_path / "bad.npy", "--out", tmp_path / "s.csv")
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
