#!/usr/bin/env bash
# The test command: formatting, lints, then every test (unit and integration, against the
# real binary). One debug build serves all three.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked "$@"
