#!/usr/bin/env bash
# Creates .venv and installs the project with the extras named in $1 (e.g. "test" or "demo").
# Re-runs pip only when pyproject.toml or the extras changed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=".venv/.kremote-installed-$extras"
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log="$(mktemp)"
  if ! { .venv/bin/python -m pip install -q --upgrade pip &&
         .venv/bin/python -m pip install -q -e ".[$extras]"; } >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" >&2
    echo "scripts/setup.sh: pip install -e .[$extras] failed (output above)" >&2
    exit 1
  fi
  rm -f "$log"
  echo "$want" > "$stamp"
fi
