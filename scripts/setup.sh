#!/usr/bin/env bash
# Creates .venv and installs the project with the extras named in $1 (e.g. "test" or "demo").
# Re-runs pip only when pyproject.toml or the extras changed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
python3 -m venv .venv 2>/dev/null || true
[ -x .venv/bin/python ] || { echo "could not create .venv (is python3-venv installed?)" >&2; exit 1; }
stamp=".venv/.kremote-installed-$extras"
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q -e ".[$extras]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import jupyter_kremote" # fail loudly if the install did not work
  echo "$want" > "$stamp"
fi
