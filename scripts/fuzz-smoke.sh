#!/usr/bin/env bash
# A bounded libFuzzer run of every fuzz target in fuzz/ (cargo-fuzz), from its checked-in seed
# corpus: what CI runs (scripts/test.sh). Fails on any crash (a panic, an assertion of the
# target's properties) or timeout. Prints, per target: executions, coverage, result.
#
# Toolchain: the machine has one stable Rust and cannot fetch nightly. cargo-fuzz's default
# AddressSanitizer needs `-Zsanitizer=address` (nightly only, or RUSTC_BOOTSTRAP=1), but
# `--sanitizer none` passes only stable flags (`-Cpasses=sancov-module`, `-Cllvm-args=
# -sanitizer-coverage-*`, `--cfg fuzzing`): the coverage-guided libFuzzer runs unchanged on
# stable, without RUSTC_BOOTSTRAP. ASan would add little here: the targets reach only safe Rust
# (obskit has no `unsafe` in its parsers), where memory errors cannot happen; what can happen
# (panics, overflow, the targets' assertions, hangs) is caught without it. Built optimised with
# debug assertions (`-O -a`), so that arithmetic overflow panics too.
#
# Time: FUZZ_SECONDS (default 240) of fuzzing in all, split evenly between the targets, plus
# the build: obskit and its dependencies once more, instrumented (about 4.5 min from a clean
# fuzz/target on the 2-core machine, about 1 min after a change to obskit). Each input may take
# at most 5 s (`-timeout=5`), the process at most 2 GiB (`-rss_limit_mb=2048`).
#
# The seeds are copied to a temporary working corpus, so a run never writes into the
# repository except fuzz/artifacts/<target>/ (ignored by git), where libFuzzer keeps a crashing
# or hanging input: add it to fuzz/corpus/<target>/ once the bug is fixed, as a regression seed.
# Reproduce one with fuzz/target/x86_64-unknown-linux-gnu/release/<target> <file>.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-smoke: cargo-fuzz is missing (scripts/ensure-tools.sh installs it)" >&2
  exit 1
fi

total_seconds=${FUZZ_SECONDS:-240}
# CI fuzzes from one fixed seed, so that a red run is a finding one can replay (FUZZ_SEED); a
# developer's run picks a new seed each time (0: libFuzzer chooses) and explores further.
if [ "${CI:-}" = "true" ]; then seed=${FUZZ_SEED:-20261202}; else seed=${FUZZ_SEED:-0}; fi
mapfile -t targets < <(cargo fuzz list)
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz-smoke: no fuzz target found" >&2
  exit 1
fi
per_target=$(( total_seconds / ${#targets[@]} ))
if [ "$per_target" -lt 1 ]; then per_target=1; fi

build_start=$(date +%s)
cargo fuzz build -O -a --sanitizer none
echo "fuzz-smoke: built ${#targets[@]} targets in $(( $(date +%s) - build_start )) s;" \
  "fuzzing each for ${per_target} s"

bin_dir=target/x86_64-unknown-linux-gnu/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

failed=()
summary=()
for target in "${targets[@]}"; do
  corpus="$work/corpus/$target"
  mkdir -p "$corpus" "artifacts/$target"
  if [ -d "corpus/$target" ]; then cp -R "corpus/$target/." "$corpus/"; fi
  # Header lines may reach the baggage limit (8 KiB); other inputs are short.
  max_len=4096
  case "$target" in propagation_headers | admin_request) max_len=12288 ;; esac
  log="$work/$target.log"
  set +e
  "$bin_dir/$target" "$corpus" \
    -max_total_time="$per_target" -timeout=5 -rss_limit_mb=2048 -max_len="$max_len" -seed="$seed" \
    -artifact_prefix="artifacts/$target/" -print_final_stats=1 >"$log" 2>&1
  status=$?
  set -e
  # The last status line (`#N DONE cov: C ft: F corp: …`, or the last `pulse`/`NEW` line when
  # libFuzzer stopped on a crash) has the coverage; the final stats the executions.
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  execs=$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}' || true)
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
  corp=$(sed -nE 's/.* corp: ([0-9]+).*/\1/p' <<<"$last")
  if [ "$status" -eq 0 ] && grep -qE '^#[0-9]+[[:space:]]+DONE' "$log"; then
    result=ok
  else
    if grep -q 'ERROR: libFuzzer: timeout' "$log"; then
      result="TIMEOUT (exit $status)"
    elif grep -q 'out-of-memory' "$log"; then
      result="OUT OF MEMORY (exit $status)"
    else
      result="CRASH (exit $status)"
    fi
    failed+=("$target")
    echo "---- $target: $result; libFuzzer's output:" >&2
    # The panic message and stack trace, and where the input was written.
    tail -60 "$log" >&2
  fi
  line=$(printf '%-20s execs %-9s cov %-5s ft %-5s corpus %-4s %s' \
    "$target" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result")
  echo "fuzz-smoke: $line"
  summary+=("$line")
done

echo "== fuzz smoke: ${#targets[@]} targets, ${per_target} s each"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz-smoke: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz-smoke: 0 crashes, 0 timeouts"
