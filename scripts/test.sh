#!/usr/bin/env bash
# Run every test: unit tests and integration tests against a private containerd.
# Needs root (containers, mounts, user namespaces). Usage: sudo scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --workspace
# A fresh containerd: it caches the binary a runtime name resolves to (the enforcement test
# needs io.containerd.runc.v2 unresolved).
scripts/testenv.sh stop
eval "$(scripts/testenv.sh start)"
trap 'scripts/testenv.sh stop' EXIT
cargo test --release --workspace -- --test-threads 4
