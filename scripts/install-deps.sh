#!/usr/bin/env bash
# Debian packages the build, the tests and the demo need. Idempotent; needs root.
set -euo pipefail
# protobuf-compiler builds the CRI test's gRPC client; containernetworking-plugins gives its
# pods a network; docker-registry (and curl to wait for it) serves critest's images.
PACKAGES=(containerd runc docker.io busybox-static umoci libseccomp-dev pkg-config fuse3 libelf-dev zlib1g-dev util-linux procps jq gcc libc6-dev
  protobuf-compiler containernetworking-plugins iproute2 docker-registry curl)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo (Rust toolchain) is required" >&2; exit 1; }
# The test matrix's containerd 2.4 and 2.2 (with their ctr and runc shim), runc 1.5 and the CRI
# tools, built from Go modules (pinned, cached in the Go build cache) into /opt/eci-tools.
if command -v go >/dev/null; then
  bash "$(dirname "$0")/install-go-tools.sh"
else
  echo "go not found: the containerd 2.x part of the test matrix is skipped" >&2
fi
