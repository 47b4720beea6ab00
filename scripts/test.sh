#!/usr/bin/env bash
# Everything CI checks, in the order CI checks it. The README's test command.
#   scripts/test.sh            all of it
#   FUZZ_SECS=60 scripts/test.sh   longer fuzz runs
# Installs what it needs first (scripts/setup.sh: Debian packages; cargo fetches crates).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
step() { printf '\n==> %s\n' "$*"; }

step "setup"
bash scripts/setup.sh

step "format"
cargo fmt --all --check

step "clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

step "tests"
cargo test --workspace --locked

step "Go stubs and example client"
bash scripts/check-go.sh

step "fuzz targets (bounded)"
bash scripts/fuzz.sh "${FUZZ_SECS:-20}"

step "all checks passed"
