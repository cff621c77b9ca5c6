#!/usr/bin/env bash
# The main job: executes examples/quickstart.ipynb headless through a real kernel, on local
# agents, and prints every cell with its outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
exec .venv/bin/python examples/run_notebook.py examples/quickstart.ipynb
