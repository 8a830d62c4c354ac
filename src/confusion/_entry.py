"""The `confusion` console script: Ctrl-C while the command's modules are still importing
(matplotlib, scipy, zarr take a second or two) ends like any other interrupt, in one line.

While they import, a Ctrl-C is only noted, and acted on once the import is done: a
KeyboardInterrupt raised inside importlib's own machinery (a module lock's weakref callback)
cannot propagate, so Python prints "Exception ignored ... Traceback" and the command would run
on as if no key had been pressed."""

from __future__ import annotations

import signal
import sys


def _interrupted(error: BaseException | None) -> bool:
    """True when Ctrl-C is behind `error`: a C extension interrupted while it initialises
    raises ImportError ("initialization failed") with the KeyboardInterrupt as its cause."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def main() -> None:
    pressed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: pressed.append(number))
    try:
        from .cli import main as run
    except (KeyboardInterrupt, ImportError) as error:
        if not _interrupted(error):
            raise
        pressed.append(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        print("confusion: interrupted", file=sys.stderr)
        sys.exit(130)
    run()
