#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what it needs, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# Debian's kubectl checks that the Kubernetes emulator is faithful (tests skip without it)
if ! command -v kubectl >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq kubernetes-client) >/dev/null 2>&1 \
    || echo "note: could not install kubectl; its tests will be skipped" >&2
fi
exec .venv/bin/python -m pytest "$@"
