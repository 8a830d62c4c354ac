"""What a report reads besides its runs, checked before any work: the runs it compares (they
must share samples), an external signal (`--signal`, joined by sample id) and a mitigation's
metrics.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import analyses
from ..errors import ParameterError
from ..store import RunStore
from .views import pick_split

__all__ = ["check_inputs", "check_signal_join", "read_mitigation", "read_signal", "shared_samples"]


def read_signal(spec: str) -> tuple[str, np.ndarray, np.ndarray]:
    """A per-sample number a user trusts (human agreement, annotation time), read from a table.

    Parameters
    ----------
    spec : str
        "FILE.csv:COLUMN" (or .parquet); the table's `sample` (or `id`) column names the samples.

    Returns
    -------
    tuple of (str, ndarray, ndarray)
        (column name, sample ids, values), the rows whose value is a number.

    Raises
    ------
    ParameterError
        For a spec, file or column that cannot be used, fewer than 10 numbers, or an id given
        twice (parameter ``signal``).
    """
    from ..data import read_id_table

    path_text, _, column = spec.rpartition(":")
    path = Path(path_text)
    if not path_text or not column:
        raise ParameterError(f"{{signal}} takes FILE.csv:COLUMN (or .parquet), got {spec!r}", "signal")
    table, key = read_id_table(path, "--signal")
    if column not in table.columns:
        raise ParameterError(f"{{signal}} {path} has no column {column!r}; it has {', '.join(map(str, table.columns[:8]))}", "signal")
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(np.float64)
    keep = np.isfinite(values)
    if keep.sum() < 10:
        raise ParameterError(f"{{signal}} {path}:{column} has {int(keep.sum())} numeric values; at least 10 are needed", "signal")
    ids = table[key].to_numpy()[keep]
    if len(set(ids.tolist())) != len(ids):
        raise ParameterError(f"{{signal}} {path}: a sample id appears twice", "signal")
    return column, ids, values[keep]


def check_signal_join(store: RunStore, ids: np.ndarray, preferred: str | None = None) -> str:
    """The split an external signal is joined to by sample id: `preferred` (the report's
    reference split) where at least 10 of its samples match, else the split with most matches.

    Parameters
    ----------
    store : RunStore
        The run.
    ids : ndarray of str
        The signal's sample ids.
    preferred : str, optional
        The split to use where it matches; default the split a report is about.

    Returns
    -------
    str
        The split.

    Raises
    ------
    ParameterError
        When fewer than 10 samples of any split match (parameter ``signal``): the ids of a
        features npz without ids_train/ids_val, say, are positions that match nothing.
    """
    preferred = preferred or pick_split(store.splits)
    matches = {name: int(np.isin(store.sample_ids(name), ids).sum()) for name in store.splits}
    split = preferred if matches.get(preferred, 0) >= 10 else max(matches, key=lambda name: matches[name])
    if matches[split] < 10:
        example = str(store.sample_ids(split)[0])
        raise ParameterError(
            f"{{signal}} names {matches[split]} samples of the run; at least 10 must match its sample ids (e.g. {example!r})", "signal"
        )
    return split


def shared_samples(reference: RunStore, other: RunStore, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the samples of `split` two runs share (as `analyses.align`), refused below 2.

    Parameters
    ----------
    reference, other : RunStore
        The runs.
    split : str
        The split compared.

    Returns
    -------
    tuple of ndarray
        (positions in `reference`, positions in `other`).

    Raises
    ------
    ParameterError
        When they share fewer than 2 samples (parameter ``compare``).
    """
    in_ref, in_other = analyses.align(reference.sample_ids(split), other.sample_ids(split))
    if len(in_ref) < 2:
        raise ParameterError(
            f"{{compare}} {other.path} shares {len(in_ref)} {split} samples with {reference.path}; Kendall tau needs the same samples", "compare"
        )
    return in_ref, in_other


def check_inputs(run, compare, models, mitigation) -> None:
    """Everything a report reads opens, and every run it compares shares samples with `run`,
    before any work.

    Parameters
    ----------
    run : path
        The reference run.
    compare : sequence of paths
        Runs compared by Kendall's tau.
    models : sequence of paths
        Models whose errors are compared.
    mitigation : path, optional
        A `confusion mitigate` folder.

    Raises
    ------
    RunStoreError
        For anything that is not a readable run.
    ParameterError
        For runs that share no samples with `run`, or a mitigation without its metrics.
    """
    stores = [RunStore.open(path) for path in [run, *compare, *models]]  # a one-line RunStoreError for anything that is not a run
    for store in stores:  # a damaged id or label array is named now, not after half the figures
        for split in store.splits:
            store.sample_ids(split)
            store.labels(split)
    reference = stores[0]
    split = pick_split(reference.splits)
    for other in stores[1 : 1 + len(compare)]:
        if split in other.splits:
            shared_samples(reference, other, split)
    for model in stores[1 + len(compare) :]:
        shared = len(analyses.align(reference.sample_ids(split), model.sample_ids(split))[0]) if split in model.splits else 0
        if shared == 0:
            raise ParameterError(
                f"{{models}} {model.path} shares no {split} samples with {reference.path}; a model is compared on the same samples", "models"
            )
    if mitigation is not None:
        read_mitigation(mitigation)


def read_mitigation(folder: str | Path) -> dict[str, Any]:
    """The metrics.json of a `confusion mitigate` folder, checked for what the report draws.

    Parameters
    ----------
    folder : str or Path
        The mitigation's output folder.

    Returns
    -------
    dict
        Its metrics: per method and band, the samples and the mean and std of the error.

    Raises
    ------
    ParameterError
        When the folder has no such metrics.json (parameter ``mitigation``).
    """
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        raise ParameterError(f"{{mitigation}} {folder} has no metrics.json (make it with `confusion mitigate`)", "mitigation")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ParameterError(f"{{mitigation}} {path} is not readable JSON ({str(error).splitlines()[0][:80]})", "mitigation") from None
    bands = metrics.get("bands") if isinstance(metrics, dict) else None
    methods = metrics.get("methods") if isinstance(metrics, dict) else None
    whole = (
        isinstance(bands, list)
        and bands
        and isinstance(methods, dict)
        and methods
        and all(
            isinstance(entry, dict)
            and all(isinstance(entry.get(band), dict) and {"n", "error_mean", "error_std"} <= entry[band].keys() for band in [*bands, "overall"])
            for entry in methods.values()
        )
    )
    if not whole:
        raise ParameterError(f"{{mitigation}} {path} is not a `confusion mitigate` result (no bands and methods with their errors)", "mitigation")
    return metrics
