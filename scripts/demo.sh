#!/usr/bin/env bash
# Set up (idempotent) and run the paper's pipeline end to end on Fashion-MNIST.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/confusion demo "$@"
