#!/usr/bin/env bash
# Pinned tools built from Go modules for the test matrix and benchmarks (never the product):
# containerd 2.4 and 2.2 (with their ctr and runc shim), runc 1.5 (the baseline runtime),
# crictl and critest, dockerd 29 and its CLI. Each lands in /opt/eci-tools/<name>-<version>/; builds are cached in
# the Go build cache, and a tool already installed is kept. Needs Go and the module proxy.
set -euo pipefail
TOOLS=${ECI_TOOLS:-/opt/eci-tools}
CONTAINERD_VERSIONS=(${ECI_CONTAINERD_VERSIONS:-v2.4.2 v2.2.9})
RUNC_VERSION=v1.5.3
CRI_TOOLS_VERSION=v1.37.0
# Docker 29: dockerd from the github.com/moby/moby/v2 module (v2.0.0-beta.24 was tagged on
# 2026-09-15 with docker/cli v29.8.1; its releases/versions.yaml: last 29.8.0, next 29.8.1) and
# the CLI from github.com/docker/cli. ECI_DOCKER29=0 skips them (about 13 minutes of building on
# a new machine).
MOBY_VERSION=v2.0.0-beta.24
DOCKER_CLI_VERSION=v29.8.1
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

# dockerd and docker 29, without cgo (no btrfs/devicemapper headers needed): what
# `ECI_DOCKERD_BIN=/opt/eci-tools/docker-29.8.1/dockerd scripts/dockerenv.sh start` runs.
docker_dir="$TOOLS/docker-${DOCKER_CLI_VERSION#v}"
if [ "${ECI_DOCKER29:-1}" != 0 ] && [ ! -f "$docker_dir/.complete" ]; then
  mkdir -p "$docker_dir"
  echo "building $docker_dir" >&2
  CGO_ENABLED=0 GOBIN=$docker_dir go install -trimpath \
    -tags "exclude_graphdriver_btrfs exclude_graphdriver_devicemapper exclude_disk_quota netgo osusergo static_build" \
    -ldflags "-X github.com/moby/moby/v2/dockerversion.Version=${DOCKER_CLI_VERSION#v}+moby-$MOBY_VERSION -X github.com/moby/moby/v2/dockerversion.GitCommit=$MOBY_VERSION" \
    "github.com/moby/moby/v2/cmd/dockerd@$MOBY_VERSION"
  # docker/cli is not a Go module (vendor.mod, CalVer): built in a copy of its source with
  # vendor.mod as go.mod; the module zip has no vendor/, so the modules come from the proxy.
  src=$(go mod download -json "github.com/docker/cli@$DOCKER_CLI_VERSION+incompatible" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  work=$(mktemp -d); cp -r "$src/." "$work"; chmod -R u+w "$work"
  rm -rf "$work/vendor"; cp "$work/vendor.mod" "$work/go.mod"; cp "$work/vendor.sum" "$work/go.sum"
  (cd "$work" && CGO_ENABLED=0 go build -trimpath -tags "osusergo netgo static_build" \
    -ldflags "-X github.com/docker/cli/cli/version.Version=${DOCKER_CLI_VERSION#v} -X github.com/docker/cli/cli/version.GitCommit=$DOCKER_CLI_VERSION" \
    -o "$docker_dir/docker" ./cmd/docker)
  rm -rf "$work"
  touch "$docker_dir/.complete"
fi
