#!/usr/bin/env bash
# A chaos run (issue 8, docs/chaos.md): real mesh nodes, each in its own network namespace,
# two domains, a seeded schedule of faults under traffic, and the exactly-once check.
#
#   scripts/chaos.sh                      # every fault kind once, debug build (CI's run)
#   scripts/chaos.sh --release --duration-s 600 --rate 1000 --seed 42
#
# Everything after the optional --release goes to `mesh-chaos run` (see its --help). Needs
# root (namespaces, veth, nftables). Exit status 0 only when nothing was lost or duplicated.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=dev
dir=debug
if [ "${1:-}" = "--release" ]; then
  profile=release
  dir=release
  shift
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "chaos: needs root for network namespaces and nftables (try: sudo $0 $*)" >&2
  exit 1
fi
bash scripts/setup.sh
cargo build --profile "$profile" -p mesh-node --bin mesh -p mesh-chaos --bin mesh-chaos
exec "target/$dir/mesh-chaos" run --mesh-bin "target/$dir/mesh" "$@"
