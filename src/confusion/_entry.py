"""The `confusion` console script: Ctrl-C while the command's modules are still importing
(matplotlib, scipy, zarr take a second or two) ends like any other interrupt, in one line."""

from __future__ import annotations

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
    try:
        from .cli import main as run
    except (KeyboardInterrupt, ImportError) as error:
        if not _interrupted(error):
            raise
        print("confusion: interrupted", file=sys.stderr)
        sys.exit(130)
    run()
