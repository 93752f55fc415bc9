#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh), then runs `routstr-node demo`: a local test mint, a demo
# AI provider and the node, a paid completion, and a funded token to try. Ctrl-C stops it all.
# Arguments go to the demo: scripts/demo.sh --port 8100
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/routstr-node demo "$@"
