#!/usr/bin/env bash
# Pinned tools built from Go modules for the test matrix and benchmarks (never the product):
# containerd 2.4 and 2.2 (with their ctr and runc shim), runc 1.5 (the baseline runtime),
# crictl and critest. Each lands in /opt/eci-tools/<name>-<version>/; builds are cached in
# the Go build cache, and a tool already installed is kept. Needs Go and the module proxy.
set -euo pipefail
TOOLS=${ECI_TOOLS:-/opt/eci-tools}
CONTAINERD_VERSIONS=(${ECI_CONTAINERD_VERSIONS:-v2.4.2 v2.2.9})
RUNC_VERSION=v1.5.3
CRI_TOOLS_VERSION=v1.37.0
command -v go >/dev/null || { echo "go is required to build the test matrix's tools" >&2; exit 1; }
export GOFLAGS=-mod=mod CGO_ENABLED=1

install_to() { # dir, tags, packages...
  local dir=$1 tags=$2; shift 2
  if [ -x "$dir/.complete" ] || [ -f "$dir/.complete" ]; then return; fi
  mkdir -p "$dir"
  echo "building $dir" >&2
  GOBIN=$dir go install -tags "$tags" "$@"
  touch "$dir/.complete"
}

for v in "${CONTAINERD_VERSIONS[@]}"; do
  install_to "$TOOLS/containerd-${v#v}" no_btrfs \
    "github.com/containerd/containerd/v2/cmd/containerd@$v" \
    "github.com/containerd/containerd/v2/cmd/ctr@$v" \
    "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$v"
done
install_to "$TOOLS/runc-${RUNC_VERSION#v}" seccomp "github.com/opencontainers/runc@$RUNC_VERSION"
install_to "$TOOLS/cri-tools-${CRI_TOOLS_VERSION#v}" "" "sigs.k8s.io/cri-tools/cmd/crictl@$CRI_TOOLS_VERSION"
# critest is a test binary: built with `go test -c` inside the module's source.
if [ ! -x "$TOOLS/cri-tools-${CRI_TOOLS_VERSION#v}/critest" ]; then
  src=$(go mod download -json "sigs.k8s.io/cri-tools@$CRI_TOOLS_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  work=$(mktemp -d); cp -r "$src/." "$work"; chmod -R u+w "$work"
  (cd "$work" && go test -c -o "$TOOLS/cri-tools-${CRI_TOOLS_VERSION#v}/critest" ./cmd/critest)
  rm -rf "$work"
fi
