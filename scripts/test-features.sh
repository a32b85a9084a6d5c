#!/usr/bin/env bash
# obskit's cargo features (obskit/Cargo.toml): every set a user can pick builds lint-clean and
# its tests pass, and the README's table gives each set's crate count as `cargo tree` counts it.
#
# Sets: no default features (metrics, the RED layer, spans, health, the admin surface), each
# optional feature alone on top of that, and the default (all of them: `scripts/test.sh` runs
# that build's tests with the workspace). The bare set runs every test, doc tests included; the
# single-feature sets run the unit and integration tests (their doc tests run in the default
# build, which has every feature).
set -euo pipefail
cd "$(dirname "$0")/.."

# Distinct crates of obskit's tree for a feature set (normal and build dependencies: what a user
# compiles; obskit itself included).
crate_count() {
  cargo tree -p obskit -e normal,build --prefix none --locked "$@" \
    | sed 's/ (\*)//; s/ (proc-macro)//' | grep -v '^$' | sort -u | wc -l
}

# The README row of a set: "| `NAME` | COUNT | ...".
readme_count() {
  awk -F'|' -v name="\`$1\`" '{ key = $2; gsub(/^ +| +$/, "", key) }
    key == name { count = $3; gsub(/ /, "", count); print count; exit }' README.md
}

drift=0
check_count() {
  local name=$1 measured=$2 documented
  documented=$(readme_count "$name")
  if [ "$documented" != "$measured" ]; then
    echo "test-features: README says ${documented:-nothing} crates for \`$name\`, cargo tree counts $measured" >&2
    drift=1
  fi
}

check_count default "$(crate_count)"
for set in "" otlp profiling process-metrics tracing-bridge reqwest taskdump heap-profiling; do
  args=(--no-default-features)
  name="default-features = false"
  if [ -n "$set" ]; then
    args+=(--features "$set")
    name="+ $set"
  fi
  count=$(crate_count "${args[@]}")
  check_count "$name" "$count"
  echo "-- obskit, ${name}: ${count} crates"
  cargo clippy -p obskit "${args[@]}" --all-targets --locked -- -D warnings
  if [ -z "$set" ]; then
    cargo test -p obskit "${args[@]}" --locked
  else
    cargo test -p obskit "${args[@]}" --locked --lib --test integration
  fi
done
if [ "$drift" -ne 0 ]; then
  echo "test-features: update the table under \"Cargo features\" in README.md" >&2
  exit 1
fi
echo "test-features: every feature set builds and passes its tests"
