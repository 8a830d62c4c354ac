"""The `confusion` command. Each subcommand is a thin face over a module's Python API.

Errors the user can fix (bad files, names, arrays, a busy run directory) print one line on
stderr and exit with code 2; anything else is a bug and keeps its traceback. `common` holds the
app and what every command shares; `score_commands` and `train_commands` register the commands.
"""

from __future__ import annotations

import signal
import sys

import typer

from . import score_commands, train_commands
from .common import app

__all__ = ["COMMANDS", "app", "main", "score_commands", "train_commands"]

# The order `confusion --help` lists the commands in: the paper's pipeline, then the rest.
COMMANDS = ["score", "import", "train", "difficulty", "combine", "status", "report", "hardset", "evaluate", "zoo", "mitigate", "demo"]
app.registered_commands.sort(key=lambda info: COMMANDS.index(info.name or info.callback.__name__))


def main() -> None:
    """The console entry point: usage errors (a missing argument, a bad choice, an unreadable
    path) become one `confusion: error:` line and exit code 2, like every other error."""
    try:
        from typer._click import exceptions as usage  # typer's own copy of click (typer 0.2x)
    except ImportError:  # an older typer, on click itself
        from click import exceptions as usage

    try:
        code = app(standalone_mode=False)
        # The command has returned and its files are complete: a Ctrl-C from here on changes
        # nothing. Ignored, it cannot land in Python's teardown, which puts the default action
        # back and would end a finished command as "killed by SIGINT".
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except usage.NoArgsIsHelpError as shown:  # a bare `confusion`: the help, not an error
        print(shown.format_message())
        sys.exit(0)
    except usage.ClickException as error:
        context = getattr(error, "ctx", None)
        command = f"confusion {context.info_name}" if context is not None and context.info_name != "confusion" else "confusion"
        message = (error.format_message().splitlines() or [type(error).__name__])[0]
        print(f"confusion: error: {message} (see {command} --help)", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    if code == 130:  # Ctrl-C, wherever it landed: typer turns a KeyboardInterrupt into a silent 130
        print("confusion: interrupted", file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)
