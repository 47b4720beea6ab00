#!/usr/bin/env bash
# Checks the Go side of mesh.proto:
#   1. the checked-in stubs in proto/go/meshpb/ are what scripts/gen-go.sh generates now;
#   2. the stubs and the example client (proto/go/example) build and pass `go vet` in GOPATH
#      mode against Debian's grpc-go (/usr/share/gocode), with no network;
#   3. the Go integration test (proto/go/meshtest) passes against three real `mesh` nodes
#      (the binary is built first: cargo build -p mesh-node --bin mesh).
# Exits non-zero on the first failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/mesh-check-go.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

command -v go >/dev/null || { echo "check-go: go not found; install golang-go (scripts/setup.sh)" >&2; exit 1; }
[ -d /usr/share/gocode/src/google.golang.org/grpc ] || {
  echo "check-go: /usr/share/gocode has no grpc-go; install golang-google-grpc-dev golang-google-protobuf-dev" >&2
  exit 1
}

echo "check-go: [1/4] regenerating Go stubs into a temp dir and comparing with proto/go/meshpb"
bash "$root/scripts/gen-go.sh" "$tmp/gen" >/dev/null
stale=0
for f in mesh.pb.go mesh_grpc.pb.go; do
  if [ ! -f "$root/proto/go/meshpb/$f" ]; then
    echo "check-go: proto/go/meshpb/$f is missing" >&2
    stale=1
  elif ! diff -u "$root/proto/go/meshpb/$f" "$tmp/gen/$f" >"$tmp/$f.diff"; then
    echo "check-go: proto/go/meshpb/$f differs from a fresh generation:" >&2
    head -n 40 "$tmp/$f.diff" >&2
    stale=1
  fi
done
extra="$(cd "$root/proto/go/meshpb" && ls | grep -vx -e mesh.pb.go -e mesh_grpc.pb.go || true)"
if [ -n "$extra" ]; then
  echo "check-go: unexpected files in proto/go/meshpb: $extra" >&2
  stale=1
fi
if [ "$stale" -ne 0 ]; then
  echo "check-go: FAIL: Go stubs are stale: run scripts/gen-go.sh" >&2
  exit 1
fi
echo "check-go: stubs are up to date"

# GOPATH mode: import path "mesh/..." resolves through $tmp/gopath/src/mesh -> the repo root;
# grpc-go and protobuf-go come from Debian's /usr/share/gocode. No modules, no network.
mkdir -p "$tmp/gopath/src"
ln -s "$root" "$tmp/gopath/src/mesh"
export GO111MODULE=off GOFLAGS= GOPROXY=off
export GOPATH="$tmp/gopath:/usr/share/gocode"
# A persistent build cache keeps reruns fast (grpc-go is compiled once); a temp one if $HOME's
# cache is not writable.
GOCACHE="${XDG_CACHE_HOME:-${HOME:-/nonexistent}/.cache}/mesh-go-build"
if ! mkdir -p "$GOCACHE" 2>/dev/null || [ ! -w "$GOCACHE" ]; then
  GOCACHE="$tmp/gocache"
  mkdir -p "$GOCACHE"
fi
export GOCACHE
pkgs=(mesh/proto/go/meshpb mesh/proto/go/example mesh/proto/go/meshtest)
cd "$tmp"

echo "check-go: [2/4] go build ${pkgs[*]} (GO111MODULE=off GOPATH=$GOPATH GOCACHE=$GOCACHE)"
go build mesh/proto/go/meshpb mesh/proto/go/example
go build -o "$tmp/example-client" mesh/proto/go/example
# Capture first: `cmd | grep -q` under pipefail fails whenever grep exits before cmd is done.
help=$("$tmp/example-client" -h 2>&1 || true)
grep -q -- '-addr' <<<"$help" || { echo "check-go: FAIL: example client has no -addr flag" >&2; exit 1; }

echo "check-go: [3/4] go vet ${pkgs[*]}"
go vet "${pkgs[@]}"

echo "check-go: [4/4] go test mesh/proto/go/meshtest (three real mesh nodes in a line)"
(cd "$root" && cargo build --locked -p mesh-node --bin mesh --quiet)
MESH_BIN="$root/target/debug/mesh" go test -count=1 -timeout 300s mesh/proto/go/meshtest

echo "check-go: OK"
