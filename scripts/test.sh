#!/usr/bin/env bash
# Run every test: unit tests and integration tests against a private containerd.
# Needs root (containers, mounts, user namespaces). Usage: sudo scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --workspace
# A fresh containerd: it caches the binary a runtime name resolves to (the enforcement test
# needs io.containerd.runc.v2 unresolved).
scripts/crienv.sh stop
scripts/dockerenv.sh stop
scripts/testenv.sh stop
# Assigned first, so that a failing start stops the run (an eval of nothing would not).
testenv=$(scripts/testenv.sh start)
eval "$testenv"
dockerenv=$(scripts/dockerenv.sh start)
eval "$dockerenv"
crienv=$(scripts/crienv.sh start)
eval "$crienv"
trap 'scripts/crienv.sh stop; scripts/dockerenv.sh stop; scripts/testenv.sh stop' EXIT
log=$(mktemp)
status=0
cargo test --release --workspace --no-fail-fast -- --test-threads 4 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo's last line is the doc-tests' "0 passed").
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"

# The soak and fault suite, short (issue 16): 50 sequential, 20 parallel, every fault once.
scripts/soak.sh 50 20 || status=$?
exit "$status"
