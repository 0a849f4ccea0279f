#!/usr/bin/env bash
# Runs every protocol fuzz target for SECONDS each (default 60) on the nightly
# toolchain, installing cargo-fuzz when missing. Not part of .ci/run: fuzzing is open
# ended. Crashes land in protocol/fuzz/artifacts/<target>/ ; the summary line of each
# run (executions, corpus) is printed at the end.
set -euo pipefail
secs="${1:-60}"
cd "$(dirname "$0")"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
targets=(open_envelope decode_message validate_entry canonical_request graphql)
if [ "$#" -gt 1 ]; then targets=("${@:2}"); fi
mkdir -p logs
for t in "${targets[@]}"; do
    echo "== $t: ${secs}s"
    cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -max_len=65536 2>&1 | tee "logs/$t.log" | grep -E "^(#[0-9]+ +DONE|==[0-9]+== ERROR|SUMMARY)" || true
done
for t in "${targets[@]}"; do
    printf '%s: ' "$t"
    grep -E "Done [0-9]+ runs" "logs/$t.log" | tail -1 || echo "no summary (see protocol/fuzz/logs/$t.log)"
done
