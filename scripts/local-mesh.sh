#!/usr/bin/env bash
# Starts a local three-node mesh on loopback, A - B - C in a line, on the embedded defaults
# (plain TCP; `--tls` makes certificates with `mesh certs` and turns TLS on), and shows how to
# send a message across it. Ctrl-C stops the nodes (SIGTERM: they drain and close cleanly).
#   scripts/local-mesh.sh [--tls] [--release]
set -euo pipefail
cd "$(dirname "$0")/.."
tls=0; profile=debug; build=()
for a in "$@"; do
  case "$a" in
    --tls) tls=1 ;;
    --release) profile=release; build=(--release) ;;
    *) echo "usage: $0 [--tls] [--release]" >&2; exit 2 ;;
  esac
done
echo "local-mesh: building mesh ($profile)"
cargo build -q "${build[@]}" --bin mesh
bin=target/$profile/mesh
run_dir=$(mktemp -d "${TMPDIR:-/tmp}/mesh-local.XXXXXX")
tls_args=()
if [ "$tls" = 1 ]; then
  "$bin" certs --out "$run_dir/certs" --nodes 1,2,3 >/dev/null
fi
pids=()
cleanup() { trap - EXIT INT TERM; kill -TERM "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; echo "local-mesh: stopped (logs in $run_dir)"; }
trap cleanup EXIT INT TERM
start() { # id listen metrics [connect]
  local id=$1 listen=$2 metrics=$3; shift 3
  local args=(--node-id "$id" --listen "$listen" --metrics-listen "$metrics"
              --data-dir "$run_dir/node-$id" --wal-segment-mib 16 --wal-segments 8
              --enable-grpc --grpc-listen "127.0.0.1:5005$id")
  [ $# -gt 0 ] && args+=(--connect "$1")
  if [ "$tls" = 1 ]; then
    args+=(--tls --cert "$run_dir/certs/node-$id.pem" --key "$run_dir/certs/node-$id.key"
           --ca "$run_dir/certs/ca.pem" --pq-key "$run_dir/certs/node-$id.mldsa")
  fi
  "$bin" "${args[@]}" >"$run_dir/node-$id.log" 2>&1 &
  pids+=($!)
}
start 3 127.0.0.1:7003 127.0.0.1:9103
start 2 127.0.0.1:7002 127.0.0.1:9102 127.0.0.1:7003
start 1 127.0.0.1:7001 127.0.0.1:9101 127.0.0.1:7002
# Wait until node 1 has routes to both others.
for _ in $(seq 1 100); do
  if "$bin" send --node 127.0.0.1:7001 --dst 3 --count 0 x >/dev/null 2>&1 &&
     grep -q '^mesh_route_entries{node="1"} 2' <(exec 3<>/dev/tcp/127.0.0.1/9101; printf 'GET /metrics HTTP/1.1\r\n\r\n' >&3; cat <&3) 2>/dev/null; then
    break
  fi
  sleep 0.1
done
cat <<MSG

local-mesh: three nodes running ($([ "$tls" = 1 ] && echo "TLS 1.3, X25519MLKEM768, ML-DSA-65" || echo "plain TCP")):
  node 1  127.0.0.1:7001  gRPC 127.0.0.1:50051  metrics http://127.0.0.1:9101/metrics
  node 2  127.0.0.1:7002  gRPC 127.0.0.1:50052  metrics http://127.0.0.1:9102/metrics
  node 3  127.0.0.1:7003  gRPC 127.0.0.1:50053  metrics http://127.0.0.1:9103/metrics
  logs    $run_dir

Try, in another terminal:
  $bin subscribe --node 127.0.0.1:7003
  $bin send --node 127.0.0.1:7001 --dst 3 "hello across the mesh"
  $bin topology --grpc http://127.0.0.1:50051
  $bin status --grpc http://127.0.0.1:50051 <msg_id printed by send>

Here is one message sent from node 1 to node 3 (two hops):
MSG
"$bin" subscribe --node 127.0.0.1:7003 --count 1 --idle-secs 5 &
sub=$!
sleep 0.3
"$bin" send --node 127.0.0.1:7001 --dst 3 --corr-id 1 "hello from node 1"
wait "$sub" || true
echo
echo "local-mesh: running; Ctrl-C to stop"
wait "${pids[0]}"
