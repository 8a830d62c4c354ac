#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite, a file per process on every core (at most
# four: most tests start processes of their own). Run one file serially with
# `.venv/bin/python -m pytest tests/test_scores.py`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile "$@"
