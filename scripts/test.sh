#!/usr/bin/env bash
# The one test command: formatting, lints, docs, then every test (unit, doc,
# integration against real servers on loopback, benches in test mode).
# Exits non-zero on any failure; prints how long each stage took and a summary.
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
LOG_DIR=${TEST_LOG_DIR:-target/test-logs}
mkdir -p "$LOG_DIR"
START=$(date +%s)
FAILED=()
TIMES=()

stage() { # name command...
  local name=$1; shift
  local t0=$(date +%s)
  echo "=== $name: $*"
  if "$@" 2>&1 | tee "$LOG_DIR/$name.log"; then
    TIMES+=("$name $(( $(date +%s) - t0 ))s ok")
  else
    TIMES+=("$name $(( $(date +%s) - t0 ))s FAILED")
    FAILED+=("$name")
  fi
}

# The Kafka source's multi-instance SIGKILL test writes its closing note here.
export S3E_KS_NOTE="$PWD/$LOG_DIR/kafka-kill-note.txt"
rm -f "$S3E_KS_NOTE"

# Real servers for the integration tests (installed and started when missing).
stage services scripts/services.sh all
stage fmt cargo fmt --all -- --check
stage clippy cargo clippy --workspace --all-targets --all-features -- -D warnings
stage doc env RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --all-features --no-deps
# Unit, integration (feature `integration`, enabled by --all-features) and doc tests.
stage test cargo test --workspace --all-features --no-fail-fast
# The README's target walkthroughs, replayed with the `s3-event` binary the
# test stage built (relay, subscribe): each must show its event arriving.
stage walkthroughs scripts/walkthroughs.sh
# Every criterion bench runs once in test mode, so benches cannot rot.
stage bench-smoke cargo test --workspace --all-features --bench '*' --no-fail-fast

passed=0; failed=0; ignored=0
while read -r p f i; do
  passed=$((passed + p)); failed=$((failed + f)); ignored=$((ignored + i))
done < <(cat "$LOG_DIR/test.log" "$LOG_DIR/bench-smoke.log" 2>/dev/null |
  sed -nE 's/^test result: [a-zA-Z]+\. ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/p')

echo
if [ -s "$S3E_KS_NOTE" ]; then
  echo "=== kafka source, three instances under SIGKILL"
  cat "$S3E_KS_NOTE"
fi
echo
echo "=== stage times"
printf '  %s\n' "${TIMES[@]}"
echo "  total $(( $(date +%s) - START ))s"
echo
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "FAILED stages: ${FAILED[*]}"
  echo "summary: $passed passed, $((failed > 0 ? failed : 1)) failed"
  exit 1
fi
if [ "$passed" -eq 0 ]; then
  echo "no test ran"
  exit 1
fi
echo "summary: $passed passed, $failed failed, $ignored skipped"
