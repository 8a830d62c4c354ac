"""Progress bars and plain-text tables for the command line (rich, on stderr / stdout)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .events import TrainingHooks

stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)


@contextlib.contextmanager
def progress_bar(total: int, description: str, unit: str = "") -> Iterator[Callable[[int], None]]:
    """Yield advance(n). Draws a bar on a terminal; otherwise (a log, a pipe) prints one line as
    each quarter of the work is done, "DESCRIPTION: DONE/TOTAL UNIT (S s)", the last one at the end."""
    if not stderr.is_terminal:
        yield _quarter_lines(total, description, unit)
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=stderr, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


def _quarter_lines(total: int, description: str, unit: str) -> Callable[[int], None]:
    started, done, said = time.perf_counter(), 0, 0

    def advance(n: int = 1) -> None:
        nonlocal done, said
        done += n
        quarter = 4 if done >= total else 4 * done // max(total, 1)
        if quarter > said:
            said = quarter
            info(f"{description}: {done}/{total}{' ' + unit if unit else ''} ({time.perf_counter() - started:.1f} s)")

    return advance


def info(message: str) -> None:
    """A status line for the user, on stderr so stdout stays clean for tables and data."""
    stderr.print(message, markup=False)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], *, console: Console | None = None) -> None:
    """Print a plain-text table; floats are shown with 4 significant decimals."""
    grid = Table(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False)
    for name in columns:
        grid.add_column(name, justify="right" if name not in ("split", "model", "method", "band", "run", "name", "arch") else "left")
    for row in rows:
        grid.add_row(*[_cell(value) for value in row])
    (console or stdout).print(grid)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4g}"
    return str(value)


def mitigation_table(metrics: dict) -> None:
    """Per method and band: validation error, mean and std over seeds (from `confusion mitigate`)."""
    rows = [
        [name, band, entry[band]["n"], entry[band]["error_mean"], entry[band]["error_std"]]
        for name, entry in metrics["methods"].items()
        for band in [*metrics["bands"], "overall"]
    ]
    table(f"top-1 val error per confusion band, mean and std over {metrics['seeds']} seeds", ["method", "band", "samples", "mean error", "std"], rows)


class CommitLines(TrainingHooks):
    """A line per commit: what a cluster's coordinator sees of a run it does not train itself."""

    def on_commit(self, epochs: list[int]) -> None:
        info(f"committed epoch{'s' if len(epochs) > 1 else ''} {epoch_ranges(epochs)}")


def epoch_ranges(epochs: Sequence[int]) -> str:
    """[1, 2, 3, 5, 7, 8] -> "1-3, 5, 7-8"."""
    runs: list[list[int]] = []
    for epoch in epochs:
        if runs and runs[-1][1] + 1 == epoch:
            runs[-1][1] = epoch
        else:
            runs.append([epoch, epoch])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


class TrainingDisplay(TrainingHooks):
    """Progress of an ensemble's training: a bar per member on a terminal, else a line per epoch."""

    def __init__(self, members: int, epochs: int, label: str = ""):
        self.members, self.epochs, self.label = members, epochs, label
        self.progress = None
        self.tasks: dict[int, int] = {}

    def __enter__(self) -> TrainingDisplay:
        if stderr.is_terminal:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=stderr,
            )
            self.progress.start()
            for member in range(self.members):
                self.tasks[member] = self.progress.add_task(f"{self.label}member {member}", total=1, status="starting")
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def on_step(self, member: int, epoch: int, step: int, steps: int, loss: float) -> None:
        if self.progress is not None:
            self.progress.update(self.tasks[member], total=steps, completed=step, status=f"epoch {epoch}/{self.epochs}  loss {loss:.3f}")

    def on_epoch_end(self, member: int, epoch: int, metrics: dict[str, Any]) -> None:
        line = (
            f"{self.label}member {member} epoch {epoch}/{self.epochs}: loss {metrics['train_loss']:.4f}  "
            f"train acc {metrics['train_accuracy']:.4f}  val acc {metrics['val_accuracy']:.4f}  "
            f"({metrics['train_seconds']:.1f} s train + {metrics['eval_seconds']:.1f} s eval)"
        )
        if self.progress is not None:
            self.progress.console.print(line, markup=False, highlight=False)
        else:
            info(line)
