#!/usr/bin/env bash
# The whole test suite: what CI runs (.ci/run) and what the README names.
# Installs the real tools the tests drive (idempotently), then lints, builds and tests everything.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-tools.sh

# CI builds once from a fresh clone: incremental state would only take disk (gigabytes of it)
# that the build never reads back.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
echo "== disk before the build: $(df -h --output=avail . | tail -1 | tr -d ' ') free"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

# cargo's own summaries, kept to total them at the end.
results=$(mktemp)
trap 'rm -f "$results"' EXIT

echo "== cargo test (unit, integration, trybuild, doc tests)"
cargo test --workspace --locked 2>&1 | tee -a "$results"

echo "== benches, once each in test mode (they must run, not be timed here)"
cargo test -p obskit-benches --benches --locked 2>&1 | tee -a "$results"

echo "== obskit's cargo features: each set lint-clean, its tests passing, its crate count as the README says"
bash scripts/test-features.sh 2>&1 | tee -a "$results"

echo "== fuzz smoke"; bash scripts/fuzz-smoke.sh

echo "== examples, run and checked through real HTTP"
bash scripts/check-examples.sh

echo "== the shop under load: Locust (20 users, 30 s) through the gateway, zero failures, then every business metric"
bash scripts/test-shop-load.sh

echo "== the shop under hostile clients: checkouts cut short and a paused order service, aborted logins, silent connections (figures printed)"
bash scripts/test-hostile.sh

echo "== monitoring stack (configs, rules, dashboards, real Prometheus/Alertmanager/nginx/mtail)"
bash scripts/test-monitoring.sh

# Reached only when every step passed (set -e): the Rust tests' total, as one closing line.
passed=$(grep -E '^test result:' "$results" | awk '{n += $4} END {print n + 0}')
failed=$(grep -E '^test result:' "$results" | awk '{n += $6} END {print n + 0}')
echo "== disk after the suite: $(df -h --output=avail . | tail -1 | tr -d ' ') free, target/ $(du -sh target | cut -f1)"
echo "all steps passed; Rust tests:"
echo "${passed} passed, ${failed} failed"
