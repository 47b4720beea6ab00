#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian machine for building, running and testing mesh.
# Installs Debian packages (apt-get) and nothing from anywhere else; Rust crates come from
# crates.io through cargo. Safe to run any number of times: it skips what is already there.
set -euo pipefail

packages=(
  protobuf-compiler      # protoc, for mesh-proto's build script and the Go stubs
  redis-server           # the redis storage backend's tests start their own server
  golang-go              # the Go example client and Go integration test
  protoc-gen-go          # Go stubs for mesh.proto
  protoc-gen-go-grpc     # Go gRPC stubs for mesh.proto
  golang-google-grpc-dev # grpc-go (GOPATH mode, /usr/share/gocode)
  golang-google-protobuf-dev
  # protobuf's v1 Go API as a shim over v2: grpc-go 1.33 marshals the generated (APIv2)
  # messages through it. Replaces the 1.3 package, which panics on them.
  golang-github-golang-protobuf-1-5-dev
  nftables               # loss and partitions in chaos runs
  iproute2               # ip netns + veth for multi-host runs
  faketime               # clock skew on one node in chaos runs (LD_PRELOAD libfaketime)
  nats-server            # peer comparison in the bench harness
)

missing=()
for p in "${packages[@]}"; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: Debian packages present"
fi

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }
installed=$(rustup component list --installed 2>/dev/null || true)
grep -q '^clippy' <<<"$installed" || rustup component add clippy rustfmt 2>/dev/null || true
echo "setup: done"
