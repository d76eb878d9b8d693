#!/usr/bin/env bash
# Dependency audit with cargo-deny (policy: deny.toml): licences, bans (duplicate versions warn,
# wildcards fail), sources (crates.io only), and security advisories when the RustSec database
# can be fetched. It is a git repository on GitHub; where that cannot be reached the advisory
# check is skipped with a notice, and the known advisories are the ones listed in
# docs/bad-input.md ("Dependency audit"). Installs cargo-deny from crates.io when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2
if ! cargo deny --version >/dev/null 2>&1; then
  echo "audit: installing cargo-deny $CARGO_DENY_VERSION (a few minutes, once)" >&2
  cargo install cargo-deny --locked --version "$CARGO_DENY_VERSION"
fi

cargo deny --log-level error check licenses bans sources

if timeout 120 cargo deny --log-level error fetch db >/dev/null 2>&1; then
  cargo deny --log-level error check advisories
else
  echo "audit: the RustSec advisory database cannot be fetched here: advisories NOT checked" >&2
  echo "audit: known advisories and why they are accepted: docs/bad-input.md#dependency-audit" >&2
fi
