#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what it needs, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
# The JupyterLab panel: labextension/ built into jupyter_kremote/labextension/ (npm ci +
# tsc + labextension build, each skipped when up to date), before pip so that the editable
# install finds it built
if ! command -v npm >/dev/null 2>&1 && can_apt; then
  (apt-get update -qq && apt-get install -y -qq nodejs npm) >/dev/null 2>&1 \
    || echo "note: could not install Node.js; the panel's tests will fail" >&2
fi
bash labextension/build.sh || echo "note: the JupyterLab extension did not build" >&2
bash scripts/setup.sh test
# configurable-http-proxy (npm) is JupyterHub's proxy for tests/test_hub.py (skipped without it)
if [ ! -x .venv/chp/node_modules/.bin/configurable-http-proxy ] && command -v npm >/dev/null; then
  (mkdir -p .venv/chp && cd .venv/chp &&
   npm install --no-audit --no-fund --silent configurable-http-proxy@^5) >/dev/null 2>&1 \
    || echo "note: could not install configurable-http-proxy; the hub tests will be skipped" >&2
fi
# Debian's kubectl checks that the Kubernetes emulator is faithful (tests skip without it)
if ! command -v kubectl >/dev/null 2>&1 && can_apt; then
  (apt-get update -qq && apt-get install -y -qq kubernetes-client) >/dev/null 2>&1 \
    || echo "note: could not install kubectl; its tests will be skipped" >&2
fi
# Debian's chromium runs the panel's browser tests (tests/test_panel_browser.py skip without it)
if [ ! -x /usr/bin/chromium ] && can_apt; then
  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
    || echo "note: could not install chromium; the browser tests will be skipped" >&2
fi
exec .venv/bin/python -m pytest "$@"
