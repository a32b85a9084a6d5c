#!/usr/bin/env bash
# Instructions per call of every bench variant, counted by callgrind: a figure that holds on a
# noisy, shared machine where criterion's times do not. Each variant runs in a process of its own
# (benches/src/bin/instructions.rs, release profile): set up, warmed up, then ITERATIONS calls
# inside `measured`, the only function callgrind collects in (--toggle-collect). The `empty`
# variant (the loop and its indirect call alone) is subtracted, and the rest divided by
# ITERATIONS. Work a tracer does on its own threads (batching, encoding, export) is not counted:
# the figure is the calling thread's cost, the one a request pays. The calls run in chunks of 64
# with obskit's span rings drained between chunks, outside the count, as its collector thread
# does in a real run (under valgrind it would hardly get a turn, and spans would take the
# full-ring fallback on the calling thread).
#
#   bash scripts/bench-callgrind.sh [ITERATIONS] [VARIANT...]
#
# Prints a markdown table for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
iterations=${1:-2000}
shift || true

# Debian's valgrind, installed once (apt-get update at most once a machine, as ensure-tools.sh).
if ! command -v valgrind >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  stamp=/var/lib/apt/periodic/obskit-apt-updated
  if [ ! -f "$stamp" ]; then
    $SUDO apt-get update -qq
    $SUDO mkdir -p "$(dirname "$stamp")" && $SUDO touch "$stamp"
  fi
  echo "bench-callgrind: installing valgrind" >&2
  $SUDO apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi

cargo build --release -q --locked -p obskit-benches --bin instructions
bin=${CARGO_TARGET_DIR:-target}/release/instructions
if [ $# -gt 0 ]; then variants=("$@"); else mapfile -t variants < <("$bin" --list | grep -vx empty); fi
work=$(mktemp -d /tmp/bench-callgrind.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Instructions collected inside `measured` for VARIANT at ITERATIONS calls.
collected() {
  valgrind --tool=callgrind --toggle-collect='*measured*' \
    --callgrind-out-file="$work/callgrind.out" "$bin" "$1" "$iterations" 2>"$work/log" >/dev/null \
    || { cat "$work/log" >&2; return 1; }
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$work/log"
}

empty=$(collected empty)
echo "| variant | instructions per call |"
echo "|---|---:|"
for variant in "${variants[@]}"; do
  total=$(collected "$variant")
  echo "| \`$variant\` | $(( (total - empty + iterations / 2) / iterations )) |"
done
echo
echo "callgrind ($(valgrind --version)), $iterations calls a variant after 500 warm-up calls, empty loop ($(( (empty + iterations / 2) / iterations )) a call) subtracted; $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) cores."
