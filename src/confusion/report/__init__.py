"""`confusion report`: the paper's analyses of one run (and others to compare), as a static
HTML page with PNG/SVG figures, CSV tables and metrics.json, readable offline.

`compute` does the analyses (`compute_report` -> `ReportResult`), `render` draws and writes
them (`render_report`); `build_report` does both, replacing the output folder whole.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._files import atomic_folder, check_replaceable_folder
from .compute import ReportOptions, ReportResult, TransferPair, compute_report, dataset_of
from .inputs import check_inputs, check_signal_join, read_mitigation, read_signal
from .render import finite, render_report
from .views import SCORE_UNIT, RunView, pick_split, run_label

__all__ = [
    "SCORE_UNIT",
    "ReportOptions",
    "ReportResult",
    "RunView",
    "TransferPair",
    "build_report",
    "check_inputs",
    "check_signal_join",
    "compute_report",
    "dataset_of",
    "finite",
    "pick_split",
    "read_mitigation",
    "read_signal",
    "render_report",
    "run_label",
]


def build_report(
    run: str | Path, out: str | Path, options: ReportOptions | None = None, *, progress: Callable[[str], Any] | None = None, **settings: Any
) -> dict[str, Any]:
    """Write OUT/index.html, figures, tables and metrics.json; returns the metrics.

    The page is drawn into a temporary sibling folder that replaces OUT only when complete.

    Parameters
    ----------
    run : str or Path
        The reference run.
    out : str or Path
        The report folder: absent, empty, or an earlier report (it is replaced whole).
    options : ReportOptions, optional
        What to compare and how to bin; fields of it may also be given as keywords.
    progress : callable, optional
        Called with the name of each stage as it starts.
    **settings
        Fields of `ReportOptions`, overriding `options`.

    Returns
    -------
    dict
        The metrics, as metrics.json holds them.
    """
    check_replaceable_folder(out, "report")
    result = compute_report(run, options, progress=progress, **settings)
    with atomic_folder(out, "report", run) as staging:
        return render_report(result, staging)
