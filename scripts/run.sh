#!/usr/bin/env bash
# The README's run command: builds mesh and starts a local three-node mesh (A - B - C on
# loopback) on the embedded defaults, then shows how to send a message across it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec bash scripts/local-mesh.sh "$@"
