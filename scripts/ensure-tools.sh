#!/usr/bin/env bash
# Installs, idempotently, the real tools the test suite drives: promtool (Debian `prometheus`)
# and `go tool pprof` (Debian `golang-go`; the profiling tests read obskit's profiles with it),
# and for the monitoring stack Prometheus, Alertmanager (amtool), nginx, mtail,
# prometheus-nginx-exporter and PyYAML. Runs `apt-get update` at most once per machine, and only when
# something is missing.
set -euo pipefail

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v go >/dev/null 2>&1 || need+=(golang-go)
# The monitoring stack's tests (scripts/test-monitoring.sh) run the real daemons on loopback.
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v mtail >/dev/null 2>&1 || need+=(mtail)
command -v prometheus-nginx-exporter >/dev/null 2>&1 || need+=(prometheus-nginx-exporter)
python3 -c 'import yaml' >/dev/null 2>&1 || need+=(python3-yaml)

if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  stamp=/var/lib/apt/periodic/obskit-apt-updated
  if [ ! -f "$stamp" ]; then
    $SUDO apt-get update -qq
    $SUDO mkdir -p "$(dirname "$stamp")" && $SUDO touch "$stamp"
  fi
  echo "ensure-tools: installing ${need[*]}" >&2
  # --no-install-recommends keeps the install small; the daemons are not started by the tests
  # through systemd (there is none), only the binaries are used.
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The strict OpenMetrics parser of the Python client library, for `/metrics` in OpenMetrics
# form (promtool 2.42 reads only the 0.0.4 text format).
if ! python3 -c 'import prometheus_client' >/dev/null 2>&1; then
  echo "ensure-tools: installing prometheus-client (PyPI)" >&2
  python3 -m pip install -q prometheus-client >/dev/null 2>&1 \
    || python3 -m pip install -q --break-system-packages prometheus-client >/dev/null
fi

# cargo-fuzz, for the fuzz smoke run (scripts/fuzz-smoke.sh); built from crates.io, once.
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "ensure-tools: installing cargo-fuzz (crates.io)" >&2
  cargo install cargo-fuzz --locked
fi

promtool --version 2>&1 | head -1 >&2
go version >&2
