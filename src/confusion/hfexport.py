"""A hard set as a Hugging Face `datasets` folder that anyone can load (`hardset --export hf:DIR`).

    from datasets import load_from_disk
    hard = load_from_disk("hard-hf")          # image / text / features, label, confusion, rank, ...

One row per chosen sample, in rank order: `sample` (id), the input (`image` for pictures,
`text` for documents, `features` for feature vectors), `label` (a ClassLabel with the class
names where every label is known; else an integer, -1 = unknown) and `label_name`,
`predicted` (the scoring ensemble's class), `confusion` (bits), `score` and `score_value` (the
score that chose it), `rank` (1 = hardest) and `split` (of origin). The folder's README.md is a
dataset card saying how it was built. Needs the `hf` extra (`datasets`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._files import atomic_folder, check_replaceable_folder
from .errors import InputError, ParameterError, install_extra

__all__ = ["COMMAND", "check_export", "export_hf"]

COMMAND = "hardset"  # the owner marker: only an earlier hard-set folder is ever replaced


def check_export(spec: str) -> Path:
    """The folder an ``--export`` names, checked before any work.

    Parameters
    ----------
    spec : str
        ``hf:DIR``.

    Returns
    -------
    Path
        DIR.

    Raises
    ------
    ParameterError
        For another form, a folder this toolkit did not write, or `datasets` not installed
        (parameter ``export``).
    """
    if not isinstance(spec, str) or not spec.startswith("hf:") or not spec[3:].strip():
        raise ParameterError(f"{{export}} must be hf:DIR (a Hugging Face datasets folder), got {spec!r}", "export")
    try:
        import datasets  # noqa: F401
    except ModuleNotFoundError:
        raise ParameterError("{export} hf:DIR needs the datasets package: " + install_extra("hf"), "export") from None
    out = Path(spec[3:])
    check_replaceable_folder(out, COMMAND)
    return out


def export_hf(
    table: pd.DataFrame, classes: list[str], out: str | Path, *, inputs: np.ndarray | None, kind: str, facts: dict[str, Any], run: str | Path
) -> Path:
    """Write the hard set `table` (a manifest) with its inputs as a `datasets` folder and card.

    Parameters
    ----------
    table : pandas.DataFrame
        The manifest (`confusion.hardset.manifest`), in rank order.
    classes : list of str
        The class names.
    out : path
        The folder (replaced only if an earlier export wrote it).
    inputs : ndarray, optional
        Images (samples, channels, height, width) uint8, or feature vectors (samples, width);
        None for documents (the manifest's `text` column).
    kind : str
        "images", "features" or "text".
    facts : dict
        What the card says of how the set was built (run, score, unit, selection, errors).
    run : path
        The scoring run (kept in the folder's owner marker).

    Returns
    -------
    Path
        `out`.
    """
    import datasets
    from PIL import Image

    labels = table["label"].to_numpy(np.int64)
    known = bool((labels >= 0).all())
    columns: dict[str, Any] = {"sample": table["sample"].astype(str).tolist()}
    features: dict[str, Any] = {"sample": datasets.Value("string")}
    if kind == "images":
        if inputs is None:
            raise InputError("an image hard set needs its images")
        columns["image"] = [Image.fromarray(p[0] if p.shape[0] == 1 else p.transpose(1, 2, 0)) for p in inputs]
        features["image"] = datasets.Image()
    elif kind == "text":
        if "text" not in table.columns:
            raise InputError("the run holds no document texts to export")
        columns["text"] = table["text"].astype(str).tolist()
        features["text"] = datasets.Value("string")
    else:
        if inputs is None:
            raise InputError("a feature hard set needs its feature vectors")
        columns["features"] = np.asarray(inputs, dtype=np.float32).tolist()
        features["features"] = datasets.Sequence(datasets.Value("float32"))
    columns["label"] = labels.tolist()
    features["label"] = datasets.ClassLabel(names=list(classes)) if known else datasets.Value("int64")
    columns["label_name"] = [classes[k] if k >= 0 else "" for k in labels]
    features["label_name"] = datasets.Value("string")
    for name, dtype in (
        ("predicted", "int64"),
        ("confusion", "float64"),
        ("score", "string"),
        ("score_value", "float64"),
        ("rank", "int64"),
        ("split", "string"),
    ):
        values = table[name].tolist()
        columns[name] = [str(v) for v in values] if dtype == "string" else values
        features[name] = datasets.Value(dtype)
    hard = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    datasets.disable_progress_bars()  # the command says what it wrote, in one line
    out = Path(out)
    with atomic_folder(out, COMMAND, run) as staging:
        hard.save_to_disk(str(staging))
        (staging / "README.md").write_text(_card(facts, len(table), classes, kind, known), encoding="utf-8")
        (staging / "hardset.json").write_text(json.dumps(facts, indent=2, default=str) + "\n", encoding="utf-8")
    return out


def _card(facts: dict[str, Any], n: int, classes: list[str], kind: str, known: bool) -> str:
    """The dataset card: what the set is and how it was built."""
    errors = facts.get("errors") or {}
    lines = [
        "---",
        "pretty_name: " + json.dumps(f"hard set of {facts.get('run_name', 'a run')}"),
        "tags:",
        "- hard-examples",
        "- confusion",
        "---",
        "",
        f"# Hard set: the {n:,} hardest {facts.get('split')} samples of `{facts.get('run_name')}` by `{facts.get('score')}`",
        "",
        "Chosen by [confusion](https://pypi.org/project/ensemble-confusion/) from a small ensemble's predictions: its "
        "confusion (the entropy of the members' average prediction, averaged over training epochs; no label needed) or "
        "another of its difficulty scores ranks every sample, and the highest-ranked are kept.",
        "",
        "## How it was built",
        "",
        f"- Scoring run: `{facts.get('run')}` ({facts.get('members')} members x {facts.get('epochs')} recorded epochs; {facts.get('arch') or 'architecture not recorded'}; data: {facts.get('data') or 'imported predictions'})",
        f"- Score: `{facts.get('score')}` ({facts.get('score_unit')}; higher = harder)",
        f"- Selection: {facts.get('selection')}; {n:,} of {facts.get('split_size'):,} samples of split `{facts.get('split')}`",
        f"- Lowest score kept: {facts.get('lowest'):.6g}",
        f"- Inputs: {kind}; classes ({len(classes)}): {', '.join(classes[:20])}{' ...' if len(classes) > 20 else ''}",
        f"- Labels: {'every sample' if known else 'not every sample (-1 = unknown)'}",
        "",
        "## Errors on it, where known",
        "",
    ]
    if errors:
        lines += ["| model | error on this set | error on the rest of the split |", "|---|---|---|"]
        lines += [f"| {name} | {e['hard']:.3f} | {e['rest']:.3f} |" for name, e in errors.items()]
    else:
        lines.append("No labels, so no error is known.")
    lines += [
        "",
        "## Columns",
        "",
        "`sample` (id), the input, `label` and `label_name`, `predicted` (the scoring ensemble's class), `confusion` "
        "(bits), `score` and `score_value`, `rank` (1 = hardest), `split` (of origin). `hardset.json` holds these facts.",
        "",
    ]
    return "\n".join(lines)
