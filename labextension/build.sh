#!/usr/bin/env bash
# Builds the JupyterLab extension into jupyter_kremote/labextension/ (what the wheel ships),
# offline-safe and reproducible: `npm ci` (exactly the committed package-lock.json, which it never
# rewrites; only when package.json or the lock file changed), `tsc`, then @jupyter/builder. Skips every step that is up to date, judged by a
# hash of the sources (not mtimes, which a fresh clone resets).
# Usage: labextension/build.sh [--force]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
out="$root/jupyter_kremote/labextension"
cd "$here"

if ! command -v npm >/dev/null 2>&1; then
  echo "labextension/build.sh: npm (Node.js >= 18) is needed to build the JupyterLab extension" >&2
  exit 1
fi

hash_of() { (cd "$here" && find "$@" -type f -print0 2>/dev/null | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16; }

deps="$(hash_of package.json package-lock.json)"
if [ ! -f node_modules/.kremote-deps ] || [ "$(cat node_modules/.kremote-deps)" != "$deps" ]; then
  echo "labextension: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  echo "$deps" > node_modules/.kremote-deps
fi

sources="$(hash_of package.json package-lock.json tsconfig.json src style)"
if [ "${1:-}" != "--force" ] && [ -f .build-stamp ] && [ "$(cat .build-stamp)" = "$sources" ] \
   && [ -f "$out/package.json" ] && ls "$out"/static/remoteEntry.*.js >/dev/null 2>&1; then
  exit 0
fi
echo "labextension: tsc + labextension build -> jupyter_kremote/labextension/" >&2
rm -rf "$out" lib tsconfig.tsbuildinfo
log="$(mktemp)"
if ! { npm run --silent build:lib && npm run --silent build:labextension; } >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  echo "labextension/build.sh: the build failed (output above)" >&2
  exit 1
fi
rm -f "$log"
echo "$sources" > .build-stamp

# A copy installed by `pip install -e` (the wheel's shared-data) would serve the old build.
installed="$root/.venv/share/jupyter/labextensions/jupyter-kremote"
if [ -d "$installed" ] && [ ! -L "$installed" ]; then
  rm -rf "$installed" && cp -r "$out" "$installed"
fi
