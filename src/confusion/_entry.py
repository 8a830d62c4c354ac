"""The `confusion` console script: Ctrl-C while the command's modules are still importing
(matplotlib, scipy, zarr take a second or two) ends like any other interrupt, in one line."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        print("confusion: interrupted", file=sys.stderr)
        sys.exit(130)
    run()
