"""Adversarial sweep: every command given bad options, bad files, damaged stores and paths it
cannot write, as a user would; prints a tally and each failure.

    python bench/fault_cases.py                 # every case (~330), 2 at a time
    python bench/fault_cases.py --only damage   # one group
    python bench/fault_cases.py --list          # the case names

A case is a command line run in its own folder holding copies of small fixtures (an imported
run, a run trained on digits, its hard set and score table). It passes when:
- nothing prints a Python traceback;
- a refused case exits 2 with exactly one `confusion: error:` line on stderr (and nothing
  else there), and leaves nothing behind: no output, no new file anywhere in its folder
  (a run's own score cache aside);
- an accepted case exits 0 and its result equals the undamaged reference where one is named
  (the score table of the run), so a damaged store never gives a silently wrong answer;
- nothing is written outside the case's folder.
The kill -9 cases live in bench/faults.py (a seeded soak) and tests/test_faults.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from confusion._runtime import cpu_description

CONFUSION = [sys.executable, "-m", "confusion.cli"]
REFUSED, OK, EITHER = "refused", "ok", "either"


@dataclass
class Case:
    group: str
    name: str
    args: list
    expect: str = REFUSED
    output: str | None = None  # what must not exist after a refusal
    prepare: Callable[[Path], None] | None = None
    same_as: str | None = None  # a score table that must equal the undamaged run's
    message: str | None = None  # a word the error line must hold
    check: Callable[[Path], str | None] | None = None  # after success: what is wrong, or None
    timeout: float = 120


# ---------------------------------------------------------------- fixtures


def make_fixtures(base: Path) -> None:
    """Small inputs every case copies: arrays, an imported run, a digits run, its tables."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(5, 0.4), size=(3, 4, 300)).astype(np.float32)
    np.save(base / "probs.npy", probs)
    np.save(base / "labels.npy", rng.integers(0, 5, 300))
    np.save(base / "probs_train.npy", rng.dirichlet(np.full(5, 0.4), size=(3, 4, 400)).astype(np.float32))
    np.save(base / "labels_train.npy", rng.integers(0, 5, 400))
    np.save(base / "logits.npy", rng.normal(size=(3, 4, 300, 5)).astype(np.float32))
    (base / "ids.txt").write_text("".join(f"s{i}\n" for i in range(300)))
    steps = [
        ["import", "--probs", "probs.npy", "--labels", "labels.npy", "--ids", "ids.txt", "--classes", "a,b,c,d,e", "--out", "run"],
        ["import", "--probs", "probs_train.npy", "--labels", "labels_train.npy", "--split", "train", "--out", "run"],
        ["score", "run", "--out", "scores_run.csv"],
        ["train", "--data", "digits", "--arch", "linear", "--members", "2", "--epochs", "2", "--precision", "fp32", "--out", "trained"],
        ["score", "trained", "--out", "scores.csv"],
        ["hardset", "trained", "--split", "val", "--top", "0.2", "--out", "hard.csv"],
    ]
    for step in steps:
        done = subprocess.run(CONFUSION + step, cwd=base, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"fixture step {' '.join(step)} failed: {done.stderr[-1500:]}")
    for run in ("run", "trained"):
        shutil.rmtree(base / run / "cache", ignore_errors=True)


FIXTURES = [
    "probs.npy",
    "labels.npy",
    "probs_train.npy",
    "labels_train.npy",
    "logits.npy",
    "ids.txt",
    "run",
    "trained",
    "scores.csv",
    "scores_run.csv",
    "hard.csv",
]


# ---------------------------------------------------------------- what a case may do to its folder


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda work: (work / name).write_bytes(data)


def _save(name: str, array) -> Callable[[Path], None]:
    return lambda work: np.save(work / name, array) if name.endswith(".npy") else np.savez(work / name, **array)


def _json_edit(path: str, edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def prepare(work: Path) -> None:
        document = json.loads((work / path).read_text())
        changed = edit(document)
        (work / path).write_text(json.dumps(document if changed is None else changed))

    return prepare


def _chunk_files(work: Path, run: str, array: str) -> list[Path]:
    folder = work / run / "predictions.zarr" / array
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "zarr.json")


def _damage_file(kind: str, relative: Callable[[Path], Path]) -> Callable[[Path], None]:
    def prepare(work: Path) -> None:
        path = relative(work)
        if kind == "remove":
            path.unlink()
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "truncate":
            path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
        elif kind == "garbage":
            path.write_bytes(b"\x00\xffnot what it was" * 7)

    return prepare


def _chmod_readonly(path: str) -> Callable[[Path], None]:
    return lambda work: (work / path).mkdir(exist_ok=True) or os.chmod(work / path, 0o500)


# ---------------------------------------------------------------- the cases


def _bad_values(group: str, base: list, option: str, values: list, output: str | None) -> list[Case]:
    return [Case(group, f"{base[0]} {option} {v!s:.24}", base + [option, str(v)], output=output) for v in values]


def option_cases() -> list[Case]:
    score = ["score", "run", "--out", "o.csv"]
    score_file = ["score", "--probs", "probs.npy", "--out", "o.csv"]
    imp = ["import", "--probs", "probs.npy", "--labels", "labels.npy", "--out", "new"]
    train = ["train", "--data", "digits", "--arch", "linear", "--members", "2", "--epochs", "1", "--out", "new"]
    report = ["report", "run", "--out", "rep"]
    hardset = ["hardset", "run", "--split", "val", "--out", "h.csv"]
    evaluate = ["evaluate", "trained", "--hardset", "hard.csv", "--out", "e.csv"]
    zoo = ["zoo", "--data", "digits", "--archs", "linear", "--epochs", "1", "--limit-train", "200", "--limit-val", "100", "--out", "zoo"]
    mitigate = ["mitigate", "trained", "--data", "digits", "--arch", "linear", "--epochs", "1", "--members", "1", "--out", "mit"]
    demo = ["demo", "--quick", "--out", "dem"]
    ints = [0, -1, "x", "1.5", 2**70]
    g = "options"
    cases = []
    cases += _bad_values(g, score, "--base", ["3", "ten", "0", ""], "o.csv")
    cases += _bad_values(g, score, "--engine", ["gpu", ""], "o.csv")
    cases += _bad_values(g, score, "--split", ["nope", ""], "o.csv")
    cases += _bad_values(g, score, "--dask", ["local:0", "nope:1", "tcp://127.0.0.1:1"], "o.csv")
    cases += [
        Case(g, "score --out .txt", ["score", "run", "--out", "o.txt"], output="o.txt"),
        Case(g, "score no source", ["score", "--out", "o.csv"], output="o.csv"),
        Case(g, "score run and --probs", ["score", "run", "--probs", "probs.npy", "--out", "o.csv"], output="o.csv"),
        Case(g, "score --labels without --probs", ["score", "run", "--labels", "labels.npy", "--out", "o.csv"], output="o.csv"),
        Case(g, "score --with-meta without --out", ["score", "run", "--with-meta"]),
        Case(g, "score run is a file", ["score", "probs.npy", "--out", "o.csv"], output="o.csv"),
        Case(g, "score run missing", ["score", "nope", "--out", "o.csv"], output="o.csv"),
    ]
    cases += _bad_values(g, score_file, "--labels", ["nope.npy", "ids.txt"], "o.csv")
    cases += _bad_values(g, imp, "--split", ["", "a/b", "..", ".hidden", "x" * 300], "new")
    cases += _bad_values(g, imp, "--classes", ["a,b", "a,a,b,c,d", ",,,,", "a,b,c,d,e,f"], "new")
    cases += _bad_values(g, imp, "--keep", ["everything", ""], "new")
    cases += _bad_values(g, imp, "--ids", ["nope.txt", "labels.npy"], "new")
    cases += _bad_values(g, imp, "--meta", ["nope.csv", "labels.npy"], "new")
    cases += [
        Case(g, "import no --probs", ["import", "--labels", "labels.npy", "--out", "new"], output="new"),
        Case(g, "import --topk and --probs", imp + ["--topk", "probs.npy"], output="new"),
        Case(g, "import --n-classes 0", imp + ["--n-classes", "0"], output="new"),
        Case(g, "import --out is a file", ["import", "--probs", "probs.npy", "--out", "labels.npy"]),
        Case(g, "import pattern no match", ["import", "--probs", "m{member}_e{epoch}.npy", "--out", "new"], output="new"),
    ]
    for option, values in {
        # (--record-every or --batch-size beyond the run is allowed: the last epoch, one batch)
        "--members": ints,
        "--epochs": ints,
        "--seed": [-1, "x", 2**64],
        "--record-every": ints[:4],
        "--batch-size": ints[:4],
        "--lr": [0, -1, "nan", "inf", "x"],
        "--weight-decay": [-1, "nan", "inf"],
        "--optimizer": ["lbfgs", ""],
        "--schedule": ["weird", ""],
        "--record-train": ["sometimes"],
        "--limit-train": [0, -5],
        "--limit-val": [0, -5],
        "--image-size": [0, 3, 10**6],
        "--split-seed": [-1, 2**64],
        "--device": ["tpu", "cuda:99", ""],
        "--precision": ["fp8", ""],
        "--workers": [-1, "x"],
        "--member": [-1, 2, 5],
        "--feature-subset": [0, 1.5, -0.1, "nan"],
        "--keep": ["all"],
        "--arch": ["nope", "cnn-s,linear,mlp-s", "", "resnet-9000"],
        "--data": ["nope", "", "npz:", "features:nope.npz", "text:nope.csv", "folder:nope"],
        "--root": ["nope"],
        "--unlabeled": ["nope"],
        "--encoder": ["./nope-encoder"],
    }.items():
        cases += _bad_values(g, train, option, values, "new")
    cases += [
        Case(g, "train --out is a file", train[:-1] + ["labels.npy"]),
        Case(g, "train --bagging on --member 1 of 1", ["train", "--data", "digits", "--members", "1", "--member", "1", "--out", "new"], output="new"),
        Case(
            g,
            "train cnn on features",
            ["train", "--data", "features:feat.npz", "--arch", "cnn-s", "--out", "new"],
            output="new",
            prepare=_save("feat.npz", {"x": np.random.default_rng(0).normal(size=(60, 4)), "y": np.arange(60) % 3}),
        ),
        Case(
            g, "train resnet on tiny images", ["train", "--data", "digits", "--arch", "resnet-18", "--image-size", "4", "--out", "new"], output="new"
        ),
        Case(
            g,
            "train into a finished different run",
            ["train", "--data", "digits", "--arch", "mlp-s", "--members", "3", "--epochs", "1", "--out", "trained"],
        ),
    ]
    cases += _bad_values(g, ["difficulty", "run", "--out", "d.csv"], "--split", ["nope"], "d.csv")
    cases += [
        Case(g, "difficulty --out .txt", ["difficulty", "run", "--out", "d.txt"], output="d.txt"),
        Case(g, "status missing run", ["status", "nope"]),
        Case(g, "status a file", ["status", "probs.npy"]),
    ]
    cases += _bad_values(g, report, "--bins", [0, -1, "x", 10**9], "rep")
    cases += _bad_values(g, report, "--min-count", [-1, "x"], "rep")
    cases += _bad_values(g, report, "--gallery", [-1, "x"], "rep")
    cases += _bad_values(g, report, "--compare", ["nope", "probs.npy"], "rep")
    cases += _bad_values(g, report, "--models", ["nope"], "rep")
    cases += _bad_values(g, report, "--mitigation", ["nope", "run"], "rep")
    cases += _bad_values(g, report, "--signal", ["nope.csv:x", "scores_run.csv", "scores_run.csv:nope", "scores_run.csv:split", ":x"], "rep")
    cases += [
        Case(g, "report --out is a file", ["report", "run", "--out", "labels.npy"]),
        Case(g, "report --out is the run", ["report", "run", "--out", "run"]),
        Case(
            g,
            "report --out is a users folder",
            ["report", "run", "--out", "mine"],
            prepare=lambda w: (w / "mine").mkdir() or (w / "mine" / "thesis.tex").write_text("x"),
        ),
    ]
    cases += _bad_values(g, hardset, "--top", [0, -0.1, 1.5, "nan", "inf", "x"], "h.csv")
    cases += _bad_values(g, hardset, "--threshold", [-1, "nan", "inf"], "h.csv")
    cases += _bad_values(g, hardset, "--split", ["nope", ""], "h.csv")
    cases += _bad_values(g, hardset, "--score", ["nope", "cartography_confidence"], "h.csv")
    cases += _bad_values(g, hardset + ["--top", "0.1"], "--format", ["zip", ""], "h.csv")
    cases += [
        Case(g, "hardset --top and --threshold", hardset + ["--top", "0.1", "--threshold", "1"], output="h.csv"),
        Case(g, "hardset neither --top nor --threshold", hardset, output="h.csv", expect=EITHER),
        Case(g, "hardset --materialize on imported run", hardset + ["--top", "0.1", "--materialize", "mat"], output="h.csv"),
        Case(
            g,
            "hardset --materialize into run",
            ["hardset", "trained", "--split", "val", "--top", "0.1", "--out", "h.csv", "--materialize", "trained"],
            output="h.csv",
        ),
        Case(
            g,
            "hardset --materialize is a file",
            ["hardset", "trained", "--split", "val", "--top", "0.1", "--out", "h.csv", "--materialize", "labels.npy"],
            output="h.csv",
        ),
        Case(g, "hardset --out .txt", ["hardset", "run", "--split", "val", "--top", "0.1", "--out", "h.txt"], output="h.txt"),
    ]
    cases += _bad_values(g, evaluate, "--bins", [0, -1, "x"], "e.csv")
    cases += _bad_values(g, evaluate, "--hardset", ["nope.csv", "labels.npy", "scores.csv"], "e.csv")
    cases += _bad_values(g, evaluate, "--scores", ["nope.csv", "labels.npy"], "e.csv")
    cases += _bad_values(g, evaluate, "--data", ["nope", "fashion-mnist"], "e.csv")
    cases += _bad_values(g, evaluate, "--device", ["tpu"], "e.csv")
    cases += _bad_values(g, evaluate, "--weights", ["nope.pt", "labels.npy"], "e.csv")
    cases += [
        Case(
            g, "evaluate arch without weights", ["evaluate", "cnn-s", "--hardset", "hard.csv", "--data", "digits", "--out", "e.csv"], output="e.csv"
        ),
        Case(g, "evaluate unknown model", ["evaluate", "nope", "--hardset", "hard.csv", "--out", "e.csv"], output="e.csv"),
        Case(g, "evaluate --out .txt", evaluate[:-1] + ["e.txt"], output="e.txt"),
        Case(g, "evaluate table without --scores", ["evaluate", "scores.csv", "--hardset", "hard.csv", "--out", "e.csv"], output="e.csv"),
    ]
    for option, values in {
        "--archs": ["nope", "", ",,"],
        "--epochs": ints,
        "--record-every": [0, -1],
        "--lr": [-1, "nan"],
        "--batch-size": [0, -1],
        "--seed": [-1],
        "--device": ["tpu"],
        "--data": ["nope", ""],
        "--limit-train": [0],
        "--encoder": ["./nope"],
    }.items():
        cases += _bad_values(g, zoo, option, values, "zoo")
    for option, values in {
        "--method": ["nope", ""],
        "--arch": ["nope"],
        "--epochs": [0, -1],
        "--members": [0, -1],
        "--lr": [-1, "nan", "inf", 0],
        "--batch-size": [0, -1],
        "--score": ["nope"],
        "--band-edges": ["x", "3,1", "nan", "-1,2"],
        "--quantiles": ["1.5", "x", "0.9,0.5", "0"],
        "--eta": [-1, "nan"],
        "--group-adjustment": [-1, "nan"],
        "--upsample-factor": [0, -1],
        "--device": ["tpu"],
        "--data": ["nope"],
    }.items():
        cases += _bad_values(g, mitigate, option, values, "mit")
    cases += [
        Case(g, "mitigate an imported run", ["mitigate", "run", "--out", "mit"], output="mit"),
        Case(g, "mitigate --band-edges and --quantiles", mitigate + ["--band-edges", "1,2", "--quantiles", "0.5"], output="mit"),
        Case(g, "mitigate missing run", ["mitigate", "nope", "--out", "mit"], output="mit"),
    ]
    for option, values in {"--top": [0, -1, 1.5, "nan"], "--data": ["nope", "", "npz:nope.npz"], "--root": ["nope"]}.items():
        cases += _bad_values(g, demo, option, values, "dem")
    cases += [Case(g, "demo --out is a file", ["demo", "--quick", "--out", "labels.npy"])]
    cases += [
        Case("usage", "no such command", ["nope"]),
        Case("usage", "no such option", ["score", "run", "--nope"]),
        Case("usage", "missing argument", ["score"], expect=EITHER),
        Case("usage", "missing option value", ["score", "run", "--out"]),
        Case("usage", "bad choice type", ["report", "run", "--bins", "many", "--out", "rep"], output="rep"),
        Case("usage", "evaluate missing --hardset", ["evaluate", "trained"]),
    ]
    return cases


def input_cases() -> list[Case]:
    g = "inputs"
    rng = np.random.default_rng(1)
    good = rng.dirichlet(np.ones(5), size=(3, 4, 300)).astype(np.float32)
    nan = good.copy()
    nan[0, 0, 3, 1] = np.nan
    inf = good.copy()
    inf[1, 2, 5, 0] = np.inf
    neg = good.copy()
    neg[2, 3, 7, 2] = -0.25
    off = good.copy()
    off[0, 1, 9] *= 1.3
    big = good * 3
    arrays = {
        "nan": nan,
        "inf": inf,
        "negative": neg,
        "rows off 1": off,
        "scaled": big,
        "3-d": good[0],
        "5-d": good[None],
        "1 class": np.ones((3, 4, 300, 1), np.float32),
        "0 samples": good[:, :, :0],
        "0 members": good[:0],
        "int": (good * 100).astype(np.int64),
        "bool": good > 0.5,
        "complex": good.astype(np.complex64),
        "object": np.array([[None]], dtype=object),
        "strings": np.array(["a", "b"]),
        "float16 overflow": np.full((3, 4, 300, 5), 7e4, np.float32),
        "structured": np.zeros(3, dtype=[("a", "f4")]),
        "scalar": np.float32(1),
    }
    cases = []
    for name, array in arrays.items():
        for command in (
            ["score", "--probs", "bad.npy", "--out", "o.csv"],
            ["import", "--probs", "bad.npy", "--labels", "labels.npy", "--out", "new"],
        ):
            out = command[-1]
            cases.append(Case(g, f"{command[0]} probs {name}", command, output=out, prepare=_save("bad.npy", array)))
    labels = {
        "out of range": np.full(300, 5),
        "negative": np.full(300, -2),
        "float 0.5": np.full(300, 0.5),
        "float 1.0": np.ones(300),
        "nan": np.full(300, np.nan),
        "uint64 2^63": np.full(300, 2**63, np.uint64),
        "strings": np.array(["x"] * 300),
        "too short": np.zeros(299, np.int64),
        "2-d": np.zeros((300, 1), np.int64),
        "object": np.array([1] * 300, dtype=object),
        "bool": np.zeros(300, bool),
    }
    for name, array in labels.items():
        expect = OK if name in ("float 1.0",) else REFUSED
        for command in (
            ["score", "--probs", "probs.npy", "--labels", "bad.npy", "--out", "o.csv"],
            ["import", "--probs", "probs.npy", "--labels", "bad.npy", "--out", "new"],
        ):
            cases.append(Case(g, f"{command[0]} labels {name}", command, output=command[-1], expect=expect, prepare=_save("bad.npy", array)))
    files = {
        "empty .npy": b"",
        "text .npy": b"hello\n",
        "truncated .npy": None,
        "pickle .npy": None,
    }

    def truncated(work: Path) -> None:
        data = (work / "probs.npy").read_bytes()
        (work / "bad.npy").write_bytes(data[: len(data) // 2])

    def pickled(work: Path) -> None:
        import pickle

        marker = work / "PWNED"
        payload = pickle.dumps(eval_payload(str(marker)))
        np.save(work / "bad.npy", np.array([payload], dtype=object), allow_pickle=True)

    for name, data in files.items():
        prepare = truncated if name == "truncated .npy" else pickled if name == "pickle .npy" else _write("bad.npy", data)
        for command in (
            ["score", "--probs", "bad.npy", "--out", "o.csv"],
            ["import", "--probs", "bad.npy", "--labels", "labels.npy", "--out", "new"],
            ["import", "--probs", "probs.npy", "--labels", "bad.npy", "--out", "new"],
        ):
            cases.append(Case(g, f"{command[0]} {command[command.index('bad.npy') - 1]} {name}", command, output=command[-1], prepare=prepare))
    npz = {
        "empty npz": {},
        "two arrays": {"a": good, "b": good},
        "object array": {"probs": np.array([None], dtype=object)},
        "string labels": {"probs": good, "labels": np.array(["x"] * 300)},
    }
    for name, content in npz.items():
        cases.append(Case(g, f"import npz {name}", ["import", "--probs", "bad.npz", "--out", "new"], output="new", prepare=_save("bad.npz", content)))
        cases.append(
            Case(g, f"score npz {name}", ["score", "--probs", "bad.npz", "--out", "o.csv"], output="o.csv", prepare=_save("bad.npz", content))
        )
    for name, text in {
        "short ids": "".join(f"s{i}\n" for i in range(299)),
        "duplicate ids": "s0\n" * 300,
        "empty ids": "\n" * 300,
        "binary ids": None,
    }.items():
        prepare = _write("bad.txt", b"\xff\xfe\x00" * 300) if text is None else _write("bad.txt", text.encode())
        cases.append(Case(g, f"import {name}", ["import", "--probs", "probs.npy", "--ids", "bad.txt", "--out", "new"], output="new", prepare=prepare))
    for name, text in {
        "no id column": "x,y\n1,2\n",
        "unknown ids": "sample,color\nzz,1\n",
        "binary": None,
        "duplicate ids": "sample,color\ns0,1\ns0,2\n",
    }.items():
        prepare = _write("meta.csv", b"\xff\x00" * 50) if text is None else _write("meta.csv", text.encode())
        cases.append(Case(g, f"import --meta {name}", ["import", "--meta", "meta.csv", "--out", "run"], expect=REFUSED, prepare=prepare))
    cases += [
        Case(
            g,
            "pattern m01 and m1 collide",
            ["import", "--probs", "m{member}_e{epoch}.npy", "--out", "new"],
            output="new",
            prepare=lambda w: [np.save(w / n, good[0, 0]) for n in ("m01_e0.npy", "m1_e0.npy", "m0_e0.npy")],
        ),
        Case(
            g,
            "pattern missing a member-epoch",
            ["import", "--probs", "m{member}_e{epoch}.npy", "--out", "new"],
            output="new",
            prepare=lambda w: [np.save(w / n, good[0, 0]) for n in ("m0_e0.npy", "m1_e1.npy")],
        ),
        Case(
            g,
            "pattern shapes differ",
            ["import", "--probs", "m{member}_e{epoch}.npy", "--out", "new"],
            output="new",
            prepare=lambda w: [np.save(w / "m0_e0.npy", good[0, 0]), np.save(w / "m1_e0.npy", good[0, 0, :10])],
        ),
        Case(g, "split twice is scored once", ["score", "run", "--split", "val", "--split", "val", "--out", "o.csv"], expect=OK, same_as="o.csv"),
        Case(g, "import a split that exists", ["import", "--probs", "probs.npy", "--labels", "labels.npy", "--out", "run"]),
        Case(
            g,
            "import a split with other classes",
            ["import", "--probs", "bad.npy", "--split", "test", "--out", "run"],
            prepare=_save("bad.npy", good[..., :4] / good[..., :4].sum(-1, keepdims=True)),
        ),
        Case(
            g,
            "import a split with other members",
            ["import", "--probs", "bad.npy", "--split", "test", "--out", "run"],
            prepare=_save("bad.npy", good[:2]),
        ),
        Case(
            g,
            "import a split with other epochs",
            ["import", "--probs", "bad.npy", "--split", "test", "--out", "run"],
            prepare=_save("bad.npy", good[:, :2]),
        ),
        Case(
            g,
            "import into a users folder",
            ["import", "--probs", "probs.npy", "--out", "mine"],
            prepare=lambda w: (w / "mine").mkdir() or (w / "mine" / "thesis.tex").write_text("x"),
        ),
        Case(
            g,
            "import logits that overflow",
            ["import", "--probs", "bad.npy", "--logits", "--out", "new"],
            expect=OK,
            output="new",
            prepare=_save("bad.npy", np.full((3, 4, 300, 5), 1e30, np.float32)),
        ),
        Case(
            g,
            "import logits with nan",
            ["import", "--probs", "bad.npy", "--logits", "--out", "new"],
            output="new",
            prepare=_save("bad.npy", np.where(np.arange(5) == 2, np.nan, good)),
        ),
        # Softmaxed again, they would be silently wrong scores (issue 28): refused, naming the cause.
        Case(
            g,
            "import probabilities as --logits",
            ["import", "--probs", "probs.npy", "--logits", "--out", "new"],
            output="new",
            message="probabilities already",
        ),
        Case(g, "score logits without --logits", ["score", "--probs", "logits.npy", "--out", "o.csv"], output="o.csv"),
        Case(
            g,
            "report --compare with no shared samples",
            ["report", "run", "--compare", "other", "--out", "rep"],
            output="rep",
            prepare=lambda w: subprocess.run(CONFUSION + ["import", "--probs", "probs.npy", "--out", "other"], cwd=w, capture_output=True),
        ),
        Case(
            g,
            "report classes with mathtext",
            ["report", "math", "--out", "rep", "--min-count", "1"],
            expect=OK,
            output="rep",
            prepare=lambda w: subprocess.run(
                CONFUSION + ["import", "--probs", "probs.npy", "--labels", "labels.npy", "--classes", r"$\foo$,b_c,^d,{e},$x$", "--out", "math"],
                cwd=w,
                capture_output=True,
            ),
        ),
        Case(
            g,
            "report classes with html",
            ["report", "html", "--out", "rep"],
            expect=OK,
            output="rep",
            check=lambda w: "a class name went into the page unescaped" if "<script>alert" in (w / "rep" / "index.html").read_text() else None,
            prepare=lambda w: subprocess.run(
                CONFUSION
                + ["import", "--probs", "probs.npy", "--labels", "labels.npy", "--classes", "<script>alert(1)</script>,b,c,d,e", "--out", "html"],
                cwd=w,
                capture_output=True,
            ),
        ),
        Case(
            g,
            "evaluate a checkpoint with wrong keys",
            ["evaluate", "linear", "--weights", "w.pt", "--data", "digits", "--hardset", "hard.csv", "--out", "e.csv"],
            output="e.csv",
            prepare=lambda w: _torch_save(w / "w.pt", {"nope": [1.0, 2.0]}),
        ),
        Case(
            g,
            "evaluate a pickle checkpoint",
            ["evaluate", "linear", "--weights", "w.pt", "--data", "digits", "--hardset", "hard.csv", "--out", "e.csv"],
            output="e.csv",
            prepare=lambda w: _pickle_file(w / "w.pt", str(w / "PWNED")),
        ),
        Case(
            g,
            "evaluate a text file as weights",
            ["evaluate", "linear", "--weights", "ids.txt", "--data", "digits", "--hardset", "hard.csv", "--out", "e.csv"],
            output="e.csv",
        ),
        Case(
            g,
            "evaluate a hard set of another dataset",
            ["evaluate", "trained", "--hardset", "bad.csv", "--out", "e.csv"],
            output="e.csv",
            prepare=_write("bad.csv", b"sample,split,label,confusion\nzz,val,1,0.5\n"),
        ),
        Case(
            g,
            "evaluate an empty hard set",
            ["evaluate", "trained", "--hardset", "bad.csv", "--out", "e.csv"],
            output="e.csv",
            prepare=_write("bad.csv", b""),
        ),
        Case(
            g,
            "import .pt probs with a pickle",
            ["import", "--probs", "w.pt", "--out", "new"],
            output="new",
            prepare=lambda w: _pickle_file(w / "w.pt", str(w / "PWNED")),
        ),
    ]
    return cases


def eval_payload(marker: str):
    class Payload:
        def __reduce__(self):
            return (open, (marker, "w"))

    return Payload()


def _pickle_file(path: Path, marker: str) -> None:
    import pickle

    path.write_bytes(pickle.dumps(eval_payload(marker)))


def _torch_save(path: Path, obj) -> None:
    import torch

    torch.save({k: torch.tensor(v) for k, v in obj.items()}, path)


# Which readers meet each kind of damage (every reader meets a removed file).
READERS = {
    "remove": ["score", "hardset", "report", "difficulty", "status"],
    "empty": ["score", "hardset", "status"],
    "garbage": ["score", "report", "difficulty"],
    "truncate": ["score"],
}


def damage_cases(base: Path) -> list[Case]:
    """Each file of both runs removed, emptied, truncated or overwritten, then every reader."""
    g = "damage"
    cases = []
    commands = {
        "score": (["score", "{run}", "--out", "o.csv"], "o.csv"),
        "hardset": (["hardset", "{run}", "--split", "val", "--top", "0.2", "--out", "h.csv"], "h.csv"),
        "report": (["report", "{run}", "--out", "rep", "--min-count", "1"], "rep"),
        "difficulty": (["difficulty", "{run}", "--out", "d.csv"], "d.csv"),
        "status": (["status", "{run}"], None),
    }
    for run in ("run", "trained"):
        files, arrays_seen = [], set()
        for path in sorted(p for p in (base / run).rglob("*") if p.is_file()):
            relative = path.relative_to(base / run)
            if "/c/" in f"/{relative}":  # one chunk file of each array stands for the others
                array = str(relative).split("/c/")[0]
                if array in arrays_seen:
                    continue
                arrays_seen.add(array)
            files.append(relative)
        for relative in files:
            text = str(relative)
            if text.startswith("cache") or text.endswith(".lock"):
                continue
            if any(text.startswith(p) for p in ("members/member-1", "members/member-2", "checkpoints/member-1")):
                continue  # member 0's files stand for the others
            for kind, readers in READERS.items():
                if kind == "truncate" and not (relative.suffix == ".json" or "/c/" in text):
                    continue
                for command in readers:
                    args, out = commands[command]
                    cases.append(
                        Case(
                            g,
                            f"{run}/{text} {kind} -> {command}",
                            [a.replace("{run}", run) for a in args],
                            expect=EITHER,
                            output=out,
                            same_as=out if command == "score" else None,
                            prepare=_damage_file(kind, lambda w, r=run, t=relative: w / r / t),
                        )
                    )
    for name, edit in {
        "run.json a list": lambda d: [1, 2],
        "run.json n_classes a string": lambda d: d.update(n_classes="five"),
        "run.json n_classes 0": lambda d: d.update(n_classes=0),
        "run.json splits missing": lambda d: d.pop("splits"),
        "run.json recorded_epochs past capacity": lambda d: d.update(recorded_epochs=list(range(1, 40))),
        "run.json members empty": lambda d: d.update(members=[]),
        "run.json split n wrong": lambda d: d["splits"]["val"].update(n=5),
        "run.json format unknown": lambda d: d.update(format="other/9"),
        "run.json keep unknown": lambda d: d.update(keep="weird"),
        "run.json classes too few": lambda d: d.update(classes=["a"]),
        "run.json epoch 0": lambda d: d.update(recorded_epochs=[0, 1, 2, 3]),
        "run.json epochs unordered": lambda d: d.update(recorded_epochs=[4, 3, 2, 1]),
    }.items():
        for command, (args, out) in commands.items():
            if command == "report" and name not in ("run.json a list", "run.json split n wrong"):
                continue
            cases.append(
                Case(
                    g,
                    f"{name} -> {command}",
                    [a.replace("{run}", "run") for a in args],
                    expect=EITHER,
                    output=out,
                    same_as=out if command == "score" else None,
                    prepare=_json_edit("run/run.json", edit),
                )
            )
    cases.append(
        Case(g, "run.json not UTF-8 -> score", ["score", "run", "--out", "o.csv"], output="o.csv", prepare=_write("run/run.json", b"\xff\xfe{\x00"))
    )
    for name, edit in {
        "zarr.json a list": lambda d: [1],
        "zarr.json shape wrong": lambda d: d.update(shape=[1, 1]),
        "zarr.json dtype wrong": lambda d: d.update(data_type="int8"),
        "zarr.json chunk shape 0": lambda d: d["chunk_grid"]["configuration"].update(chunk_shape=[0, 0, 0, 0]),
    }.items():
        cases.append(
            Case(
                g,
                f"probs {name} -> score",
                ["score", "run", "--out", "o.csv"],
                expect=EITHER,
                output="o.csv",
                same_as="o.csv",
                prepare=_json_edit("run/predictions.zarr/val/probs/zarr.json", edit),
            )
        )
    cases += [
        Case(
            g,
            "a training that failed -> evaluate",
            ["evaluate", "failed", "--hardset", "hard.csv", "--out", "e.csv"],
            output="e.csv",
            prepare=lambda w: _failed_run(w),
        ),
        Case(g, "a training that failed -> score", ["score", "failed", "--out", "o.csv"], output="o.csv", prepare=lambda w: _failed_run(w)),
        # A run without all its weights is evaluated from its recorded last-epoch predictions (as documented).
        Case(
            g,
            "checkpoint removed -> evaluate",
            ["evaluate", "trained", "--hardset", "hard.csv", "--out", "e.csv"],
            expect=EITHER,
            output="e.csv",
            prepare=lambda w: (w / "trained/checkpoints/member-0.pt").unlink(),
        ),
        Case(
            g,
            "checkpoint garbage -> evaluate",
            ["evaluate", "trained", "--hardset", "hard.csv", "--out", "e.csv"],
            output="e.csv",
            prepare=_write("trained/checkpoints/member-0.pt", b"garbage" * 20),
        ),
        Case(
            g,
            "checkpoint pickle -> evaluate",
            ["evaluate", "trained", "--hardset", "hard.csv", "--out", "e.csv"],
            output="e.csv",
            prepare=lambda w: _pickle_file(w / "trained/checkpoints/member-0.pt", str(w / "PWNED")),
        ),
        Case(
            g,
            "checkpoint garbage -> train resumes",
            ["train", "--data", "digits", "--arch", "linear", "--members", "2", "--epochs", "3", "--precision", "fp32", "--out", "trained"],
            expect=EITHER,
            prepare=_write("trained/checkpoints/member-0.pt", b"garbage" * 20),
        ),
    ]
    return cases


def _failed_run(work: Path) -> None:
    """A train killed after it created its store and before it recorded an epoch."""
    process = subprocess.Popen(
        CONFUSION + ["train", "--data", "digits", "--arch", "mlp-l", "--members", "2", "--epochs", "2", "--out", "failed"],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not (work / "failed" / "run.json").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    os.killpg(process.pid, 9)
    process.wait()


def path_cases() -> list[Case]:
    g = "paths"
    cases = []
    outputs = {
        "score": ["score", "run", "--out", "{o}.csv"],
        "difficulty": ["difficulty", "run", "--out", "{o}.csv"],
        "hardset": ["hardset", "run", "--split", "val", "--top", "0.2", "--out", "{o}.csv"],
        "evaluate": ["evaluate", "trained", "--hardset", "hard.csv", "--out", "{o}.csv"],
        "report": ["report", "run", "--out", "{o}"],
        "import": ["import", "--probs", "probs.npy", "--out", "{o}"],
        "train": ["train", "--data", "digits", "--arch", "linear", "--members", "1", "--epochs", "1", "--out", "{o}"],
        "zoo": ["zoo", "--data", "digits", "--archs", "linear", "--epochs", "1", "--limit-train", "200", "--limit-val", "100", "--out", "{o}"],
        "mitigate": ["mitigate", "trained", "--arch", "linear", "--epochs", "1", "--members", "1", "--out", "{o}"],
        "demo": ["demo", "--quick", "--out", "{o}"],
        "materialize": ["hardset", "trained", "--split", "val", "--top", "0.2", "--out", "h.csv", "--materialize", "{o}"],
    }
    for command, args in outputs.items():
        table = args[-1].endswith(".csv")
        for name, target, prepare in [
            ("a directory", "adir", lambda w: (w / "adir.csv").mkdir() or (w / "adir").mkdir(exist_ok=True) or (w / "adir" / "x").write_text("x")),
            ("a file as parent", "afile/out", lambda w: (w / "afile").write_text("x")),
            ("a missing grandparent", "no/such/deep/out", None),
        ]:
            if name == "a directory" and not table and command not in ("materialize",):
                continue  # folders: a user's non-empty folder is its own case
            cases.append(
                Case(
                    g,
                    f"{command} --out {name}",
                    [a.replace("{o}", target) for a in args],
                    expect=REFUSED if name != "a missing grandparent" else EITHER,
                    prepare=prepare,
                    output=None if name == "a directory" else target + (".csv" if table else ""),
                    timeout=300,
                )
            )
        if os.geteuid() != 0:
            cases.append(
                Case(
                    g,
                    f"{command} --out in a read-only folder",
                    [a.replace("{o}", "ro/out") for a in args],
                    prepare=_chmod_readonly("ro"),
                    output="ro/out" + (".csv" if table else ""),
                )
            )
    cases += [
        Case(
            g,
            "materialize through a planted link",
            ["hardset", "trained", "--split", "val", "--top", "0.2", "--out", "h.csv", "--materialize", "mat"],
            expect=EITHER,
            prepare=lambda w: (w / "outside").mkdir() or (w / "mat").mkdir() or os.symlink(w / "outside", w / "mat" / "0"),
        ),
        Case(g, "ids with ../ in a report", ["report", "dots", "--out", "rep", "--min-count", "1"], expect=OK, output="rep", prepare=_dotted_ids),
    ]
    return cases


def _dotted_ids(work: Path) -> None:
    """An imported run whose sample ids look like paths out of any folder."""
    (work / "dots.txt").write_text("".join(f"../../escape{i}\n" for i in range(300)))
    subprocess.run(
        CONFUSION + ["import", "--probs", "probs.npy", "--labels", "labels.npy", "--ids", "dots.txt", "--out", "dots"],
        cwd=work,
        capture_output=True,
        check=True,
    )


GROUPS = {"options": option_cases, "inputs": input_cases, "damage": damage_cases, "paths": path_cases}


# ---------------------------------------------------------------- running a case


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for path in folder.rglob("*"):
        try:
            stat = path.lstat()
        except FileNotFoundError:
            continue
        found[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns)
    return found


def run_case(case: Case, base: Path) -> dict:
    work = base / "cases" / f"{abs(hash(case.group + case.name)):x}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in FIXTURES:
        source = base / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, work / name)
    outcome = {"group": case.group, "case": case.name, "problems": []}
    problems = outcome["problems"]
    try:
        if case.prepare:
            case.prepare(work)
    except Exception as error:
        outcome["skipped"] = f"{type(error).__name__}: {error}"
        return outcome
    before = _listing(work)
    outside_before = sorted(p.name for p in base.iterdir())
    started = time.perf_counter()
    try:
        done = subprocess.run(CONFUSION + [str(a) for a in case.args], cwd=work, capture_output=True, text=True, timeout=case.timeout)
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired:
        code, stdout, stderr = None, "", ""
        problems.append(f"still running after {case.timeout:.0f} s (late validation?)")
    outcome["seconds"] = round(time.perf_counter() - started, 1)
    outcome["code"] = code
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("confusion: error:")]
    outcome["said"] = (errors or lines or [""])[0][:220]
    if "Traceback" in stderr or "Traceback" in stdout:
        problems.append("traceback: " + stderr.strip().splitlines()[-1][:200])
    if (work / "PWNED").exists():
        problems.append("a pickle ran")
    refused = code == 2
    if case.expect == REFUSED and code is not None and not refused:
        problems.append(f"accepted (exit {code}), should be refused")
    if case.expect == OK and code != 0:
        problems.append(f"exit {code}, should succeed")
    if code not in (0, 2, None):
        problems.append(f"exit code {code}")
    if refused:
        if len(errors) != 1 or len(lines) != 1:
            problems.append(f"{len(lines)} stderr lines, {len(errors)} error lines")
        if case.message and errors and case.message not in errors[0]:
            problems.append(f"message lacks {case.message!r}")
        if case.output and (work / case.output).exists():
            problems.append(f"left {case.output}")
        after = _listing(work)
        new = [p for p in after if p not in before and "/cache" not in f"/{p}" and not p.endswith(".lock") and p != "PWNED"]
        if new:
            problems.append(f"left {len(new)} new files: {', '.join(sorted(new)[:3])}")
    if code == 0 and case.check:
        wrong = case.check(work)
        if wrong:
            problems.append(wrong)
    if code == 0 and case.same_as:
        if not (work / case.same_as).exists():
            problems.append(f"succeeded without writing {case.same_as}")
        else:
            import pandas as pd

            got = pd.read_csv(work / case.same_as)
            want = pd.read_csv(base / ("scores_run.csv" if "run" in case.args[1:2] else "scores.csv"))
            if "split" in got.columns and "split" in want.columns:  # a command that scored some splits
                want = want[want["split"].isin(set(got["split"]))].reset_index(drop=True)
            if got.shape != want.shape or not got.equals(want):
                problems.append("succeeded with a result that differs from the undamaged run's (silently wrong)")
    outside_after = sorted(p.name for p in base.iterdir())
    if outside_after != outside_before:
        problems.append(f"wrote outside its folder: {sorted(set(outside_after) - set(outside_before))}")
        for name in set(outside_after) - set(outside_before):
            shutil.rmtree(base / name, ignore_errors=True) if (base / name).is_dir() else (base / name).unlink()
    shutil.rmtree(work, ignore_errors=True)
    if work.exists():
        os.system(f"chmod -R u+w {work} && rm -rf {work}")
    return outcome


def as_completed_outcomes(pool: ThreadPoolExecutor, cases: list[Case], base: Path):
    futures = [pool.submit(run_case, case, base) for case in cases]
    for future in as_completed(futures):
        yield future.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=list(GROUPS), help="run only this group (repeatable)")
    parser.add_argument("--match", help="run only cases whose name contains this text")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (processes)")
    parser.add_argument("--list", action="store_true", help="print the case names and stop")
    parser.add_argument("--json", type=Path, help="also write every outcome to this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="confusion-faults-") as folder:
        base = Path(folder)
        cases = []
        groups = args.only or list(GROUPS)
        if not args.list or "damage" in groups:
            print(f"{cpu_description()}; building fixtures ...", flush=True)
            make_fixtures(base)
        for group in groups:
            cases += GROUPS[group](base) if group == "damage" else GROUPS[group]()
        if args.match:
            cases = [c for c in cases if args.match in c.name]
        if args.list:
            for case in cases:
                print(f"{case.group:<9} {case.expect:<8} {case.name}")
            print(f"{len(cases)} cases")
            return
        started = time.perf_counter()
        print(f"{len(cases)} cases, {args.jobs} at a time; failures as they come:", flush=True)
        tally, outcomes = {}, []
        with ThreadPoolExecutor(args.jobs) as pool:
            for outcome in as_completed_outcomes(pool, cases, base):
                outcomes.append(outcome)
                row = tally.setdefault(outcome["group"], {"cases": 0, "passed": 0, "refused": 0, "accepted": 0, "traceback": 0, "failed": 0})
                row["cases"] += 1
                if outcome.get("skipped"):
                    print(f"SKIPPED {outcome['group']}: {outcome['case']}: {outcome['skipped']}", flush=True)
                    continue
                row["refused"] += outcome["code"] == 2
                row["accepted"] += outcome["code"] == 0
                row["traceback"] += any(p.startswith("traceback") for p in outcome["problems"])
                if outcome["problems"]:
                    row["failed"] += 1
                    print(
                        f"FAIL {outcome['group']}: {outcome['case']} (exit {outcome['code']}): {'; '.join(outcome['problems'])}\n"
                        f"     said: {outcome['said']}",
                        flush=True,
                    )
                else:
                    row["passed"] += 1
        print(f"\n{'group':<9}{'cases':>7}{'passed':>8}{'refused':>9}{'accepted':>10}{'traceback':>11}{'failed':>8}")
        for group, row in tally.items():
            print(f"{group:<9}{row['cases']:>7}{row['passed']:>8}{row['refused']:>9}{row['accepted']:>10}{row['traceback']:>11}{row['failed']:>8}")
        total = {k: sum(r[k] for r in tally.values()) for k in ("cases", "passed", "traceback", "failed")}
        print(
            f"{'all':<9}{total['cases']:>7}{total['passed']:>8}{'':>9}{'':>10}{total['traceback']:>11}{total['failed']:>8}"
            f"   ({time.perf_counter() - started:.0f} s, {args.jobs} at a time)"
        )
        if args.json:
            args.json.write_text(json.dumps(outcomes, indent=1))


if __name__ == "__main__":
    main()
