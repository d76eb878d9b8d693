#!/usr/bin/env bash
# Dependency audit with cargo-deny (policy: deny.toml): licences, bans (duplicate versions warn,
# wildcards fail), sources (crates.io only), and security advisories against a real RustSec
# database on every run, so that a skipped advisory check can never pass for an audit:
#   1. the live database (github.com/RustSec/advisory-db), fetched by cargo-deny when reachable
#      within AUDIT_FETCH_TIMEOUT seconds (default 60; 0 skips the attempt);
#   2. otherwise the snapshot in ../shared/advisory-db (AUDIT_ADVISORY_SNAPSHOT), whose SNAPSHOT
#      file names its commit and date, copied into a temporary git repository where cargo-deny
#      looks for its database;
#   3. neither: the advisories are not checked, which fails under CI=true and warns elsewhere.
# It says which database it used, its commit and date, how old it is, and every advisory that
# matches the tree (the accepted ones too).
#
#   scripts/audit.sh              the audit of this repository
#   scripts/audit.sh --self-test  a test of the advisory check itself: a scratch crate pinning
#                                 smallvec 1.6.0 (RUSTSEC-2021-0003, heap overflow in insert_many)
#                                 must fail the same check, with the same database and deny.toml.
#
# Installs cargo-deny (pinned) from crates.io when missing. Crates are fetched first (cargo
# fetch); every check then runs with --offline.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2
# cargo-deny keeps the database of its default URL in this directory under its db-path: the
# URL's last segment and a hash of the URL (url_to_db_path in cargo-deny's
# src/advisories/helpers/db.rs). A wrong name fails loudly: cargo-deny then finds no database.
DB_DIR_NAME=advisory-db-3157b0e258782691
SNAPSHOT=${AUDIT_ADVISORY_SNAPSHOT:-../shared/advisory-db}
FETCH_TIMEOUT=${AUDIT_FETCH_TIMEOUT:-60}
# Older than STALE_DAYS a database is called stale (cargo-deny's own limit for a database it
# may not fetch); older than AUDIT_MAX_DB_AGE_DAYS it no longer counts (fails under CI=true).
STALE_DAYS=90
MAX_AGE_DAYS=${AUDIT_MAX_DB_AGE_DAYS:-365}
# The self-test's known-vulnerable fixture: a crate without dependencies, fetched in a second,
# with an advisory that every RustSec database since 2021 holds.
FIXTURE_CRATE=smallvec
FIXTURE_VERSION=1.6.0
FIXTURE_ADVISORY=RUSTSEC-2021-0003

mode=audit
case "${1:-}" in
  "") ;;
  --self-test) mode=self-test ;;
  *)
    echo "usage: scripts/audit.sh [--self-test]" >&2
    exit 2
    ;;
esac

say() { echo "audit: $*" >&2; }
# In CI a missing or too old database is an error; elsewhere (a laptop offline) a warning.
fail_in_ci() {
  if [ "${CI:-}" = true ]; then
    say "ERROR: $*"
    exit 1
  fi
  say "WARNING: $*"
}

if ! cargo deny --version >/dev/null 2>&1; then
  say "installing cargo-deny $CARGO_DENY_VERSION (once)"
  # cargo-deny's release profile asks for fat LTO in one codegen unit: 37 min here on a loaded
  # 2-core machine. Without them the install used 472 s of CPU, and the audit is no slower.
  CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    cargo install cargo-deny --locked --version "$CARGO_DENY_VERSION"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Seconds since the epoch of a YYYY-MM-DD date (GNU date, else BSD date).
epoch_of() { date -u -d "$1" +%s 2>/dev/null || date -u -j -f %Y-%m-%d "$1" +%s; }

# --- The database ----------------------------------------------------------------------------
# Sets db_root (cargo-deny's db-path; empty: its default), db_name, db_commit and db_date;
# returns 1 when there is no database at all.
db_root=""
pick_database() {
  if [ "$FETCH_TIMEOUT" -gt 0 ] &&
    timeout "$FETCH_TIMEOUT" cargo deny --log-level error fetch db >"$tmp/fetch.log" 2>&1; then
    local dir="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/$DB_DIR_NAME"
    db_name="the live RustSec database (github.com/RustSec/advisory-db, fetched now)"
    db_commit=$(git -C "$dir" rev-parse HEAD)
    db_date=$(git -C "$dir" show -s --format=%cs HEAD)
    return 0
  fi
  if [ "$FETCH_TIMEOUT" -gt 0 ]; then
    say "the live RustSec database cannot be fetched here: $(grep -v '^[[:space:]]*$' "$tmp/fetch.log" | tail -n 1 | cut -c1-160)"
  fi
  [ -f "$SNAPSHOT/SNAPSHOT" ] && [ -d "$SNAPSHOT/crates" ] || return 1
  # "... snapshot of rustsec/advisory-db at commit <40 hex> (<YYYY-MM-DD>)."
  db_commit=$(grep -oE 'commit [0-9a-f]{40}' "$SNAPSHOT/SNAPSHOT" | head -n 1 | cut -d' ' -f2)
  db_date=$(grep -oE '\([0-9]{4}-[0-9]{2}-[0-9]{2}\)' "$SNAPSHOT/SNAPSHOT" | head -n 1 | tr -d '()')
  if [ -z "$db_commit" ] || [ -z "$db_date" ]; then
    say "ERROR: $SNAPSHOT/SNAPSHOT names no commit and date: the database's age cannot be told"
    exit 1
  fi
  db_name="the RustSec snapshot in $SNAPSHOT"
  # cargo-deny opens its database as a git checkout under db-path: a copy (the shared one is
  # read-only), committed with the snapshot's own date so that `git log` there tells the truth.
  db_root="$tmp/advisory-dbs"
  local dir="$db_root/$DB_DIR_NAME"
  mkdir -p "$db_root"
  cp -R "$SNAPSHOT" "$dir"
  chmod -R u+w "$dir"
  git -C "$dir" init -q -b main
  git -C "$dir" add -A
  GIT_AUTHOR_DATE="${db_date}T00:00:00Z" GIT_COMMITTER_DATE="${db_date}T00:00:00Z" \
    git -C "$dir" -c user.name=audit -c user.email=audit@localhost -c commit.gpgsign=false \
    commit -q -m "rustsec/advisory-db $db_commit"
}

# Two configurations over that database: the policy (deny.toml, pointed at db_root when set, as
# deny.toml cannot name a per-run path), and a listing that reports every advisory matching the
# tree whatever its kind or depth, so the output shows what the policy accepts too.
write_configs() {
  local db_path_line=""
  [ -z "$db_root" ] || db_path_line="db-path = \"$db_root\""
  awk -v line="$db_path_line" '{ print } /^\[advisories\]$/ && line != "" { print line }' \
    deny.toml >"$tmp/policy.toml"
  if [ -n "$db_root" ] && ! grep -q '^db-path = ' "$tmp/policy.toml"; then
    say "ERROR: deny.toml has no [advisories] section to point at the database"
    exit 1
  fi
  printf '[advisories]\n%s\nunmaintained = "all"\nunsound = "all"\nyanked = "warn"\n' \
    "$db_path_line" >"$tmp/listing.toml"
}

# The first string field named $1 in the JSON line $2, still escaped.
json_field() {
  printf '%s' "$2" | grep -oE "\"$1\":\"([^\"\\\\]|\\\\.)*\"" | head -n 1 | cut -d'"' -f4- | sed 's/"$//'
}

# One line per advisory matching the crates of manifest $1, from cargo-deny's JSON output (one
# diagnostic a line, the advisory's own fields first).
list_advisories() {
  local line id crate version code title accepted found=0
  while IFS= read -r line; do
    id=$(json_field id "$line")
    crate=$(json_field package "$line")
    code=$(json_field code "$line")
    title=$(json_field title "$line")
    version=$(printf '%s' "$line" | grep -oE '"Krate":\{"name":"[^"]+","version":"[^"]+"' |
      head -n 1 | cut -d'"' -f10)
    accepted=""
    grep -q "\"$id\"" deny.toml && accepted=", ignored in deny.toml"
    say "  $id $crate $version ($code$accepted): $title"
    found=$((found + 1))
  done < <(cargo deny --offline --format json --manifest-path "$1" --config "$tmp/listing.toml" \
    check advisories 2>&1 | grep '"type":"diagnostic"' | grep '"advisory":{' || true)
  [ "$found" -gt 0 ] || say "  none"
}

# The advisory check, the same for this repository and for the self-test's scratch crate.
check_advisories() {
  cargo deny --offline "${@:2}" --manifest-path "$1" --config "$tmp/policy.toml" check advisories
}

if ! pick_database; then
  fail_in_ci "no advisory database: the live one cannot be fetched and $SNAPSHOT/SNAPSHOT does not exist: advisories NOT checked"
  [ "$mode" = audit ] || exit 1
  cargo fetch --locked --quiet
  cargo deny --offline --log-level error check licenses bans sources
  exit 0
fi
write_configs
# The age is judged here, from the database's commit date: cargo-deny would judge the temporary
# copy by its file times, which say nothing.
age_days=$((($(date -u +%s) - $(epoch_of "$db_date")) / 86400))
say "advisory database: $db_name, commit ${db_commit:0:12} of $db_date ($age_days days old)"
if [ "$age_days" -gt "$MAX_AGE_DAYS" ]; then
  fail_in_ci "the advisory database is $age_days days old (more than $MAX_AGE_DAYS): refresh $SNAPSHOT"
elif [ "$age_days" -gt "$STALE_DAYS" ]; then
  say "WARNING: the advisory database is $age_days days old (more than $STALE_DAYS): advisories published since $db_date are not seen; refresh $SNAPSHOT"
fi

if [ "$mode" = self-test ]; then
  crate="$tmp/self-test"
  mkdir -p "$crate/src"
  : >"$crate/src/lib.rs"
  printf '[package]\nname = "audit-self-test"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n[dependencies]\n%s = "=%s"\n\n[workspace]\n' \
    "$FIXTURE_CRATE" "$FIXTURE_VERSION" >"$crate/Cargo.toml"
  if ! cargo fetch --quiet --manifest-path "$crate/Cargo.toml"; then
    say "SELF-TEST FAILED: cannot fetch $FIXTURE_CRATE $FIXTURE_VERSION, the known-vulnerable fixture"
    exit 1
  fi
  list_advisories "$crate/Cargo.toml"
  rc=0
  check_advisories "$crate/Cargo.toml" --format json >"$tmp/self-test.log" 2>&1 || rc=$?
  # Passes only if the check failed and the fixture's advisory is one of its errors.
  if [ "$rc" -ne 0 ] && grep '"type":"diagnostic"' "$tmp/self-test.log" |
    grep '"severity":"error"' | grep -q "\"id\":\"$FIXTURE_ADVISORY\""; then
    say "self-test ok: $FIXTURE_CRATE $FIXTURE_VERSION is reported as $FIXTURE_ADVISORY and fails the check"
    exit 0
  fi
  cat "$tmp/self-test.log" >&2
  say "SELF-TEST FAILED: $FIXTURE_CRATE $FIXTURE_VERSION did not fail the check with $FIXTURE_ADVISORY (exit $rc)"
  exit 1
fi

cargo fetch --locked --quiet
cargo deny --offline --log-level error check licenses bans sources
say "advisories matching this tree (any kind, any depth):"
list_advisories Cargo.toml
if check_advisories Cargo.toml; then
  say "advisories ok against commit ${db_commit:0:12} of $db_date"
else
  say "advisories FAILED against commit ${db_commit:0:12} of $db_date (see above)"
  exit 1
fi
