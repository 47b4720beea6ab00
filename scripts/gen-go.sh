#!/usr/bin/env bash
# Regenerates the Go stubs of proto/mesh.proto into proto/go/meshpb/ (mesh.pb.go, mesh_grpc.pb.go)
# with Debian's protoc, protoc-gen-go and protoc-gen-go-grpc. The generated files are checked in;
# run this after every change to mesh.proto (scripts/check-go.sh fails while they are stale).
#
# Usage: scripts/gen-go.sh [OUT_DIR]   (default: proto/go/meshpb; check-go.sh passes a temp dir)
# Idempotent: the same mesh.proto and tool versions always give byte-identical files.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/proto/go/meshpb}"

for tool in protoc protoc-gen-go protoc-gen-go-grpc; do
  command -v "$tool" >/dev/null || {
    echo "gen-go: $tool not found; install protobuf-compiler protoc-gen-go protoc-gen-go-grpc (scripts/setup.sh)" >&2
    exit 1
  }
done

mkdir -p "$out"
echo "gen-go: protoc $(protoc --version | sed 's/^libprotoc //'), $(protoc-gen-go --version), $(protoc-gen-go-grpc --version)"
echo "gen-go: proto/mesh.proto -> ${out#"$root"/}"
# -I proto: the file registers as "mesh.proto", the same name the Rust crate's descriptor set uses.
# paths=source_relative: files land directly in $out, whatever go_package says.
protoc -I "$root/proto" \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  "$root/proto/mesh.proto"
echo "gen-go: wrote ${out#"$root"/}/mesh.pb.go and mesh_grpc.pb.go"
