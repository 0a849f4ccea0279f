#!/usr/bin/env bash
# Runs the NAT lab (tests/tests/reach.rs) N times (default 10) and tallies the runs in
# which every runner pair behind different endpoint-independent NATs ended up directly
# connected, with each run's figures. As root, with `ip` and nftables (Debian).
#   sudo simulations/nat-lab/repeat.sh 10
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-10}"
cargo build --bin ghmesh
cargo test -p ghmesh-tests --test reach --no-run
log="target/nat-lab-repeat.log"
: >"$log"
pass=0
for i in $(seq "$runs"); do
  if cargo test -q -p ghmesh-tests --test reach -- --nocapture --test-threads 1 >>"$log" 2>&1; then
    pass=$((pass + 1))
    echo "run $i: every lab test passed"
  else
    echo "run $i: a lab test failed (see $log)"
  fi
done
grep "^NAT lab" "$log" || true
echo "$pass of $runs runs passed every lab test (all 18 cross-NAT pairs direct over TCP and over QUIC, reads, relay failover)"
