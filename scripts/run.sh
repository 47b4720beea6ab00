#!/usr/bin/env bash
# The README's run command: builds mesh and starts a local three-node mesh (A - B - C on
# loopback) on the embedded defaults, then shows how to send a message across it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! grep -q 'name = "mesh"' control/*/Cargo.toml 2>/dev/null; then
  cat >&2 <<'MSG'
run: this checkout has no `mesh` node binary yet. What exists today is the wire format, the
proto contract and the protocol cores (see the README's status table); the node binary and the
data plane that this command starts arrive with the data-plane and gRPC issues.
MSG
  exit 1
fi
exec bash scripts/local-mesh.sh "$@"
