#!/usr/bin/env bash
# containerd's CRI plugin (the Kubernetes path) on a containerd of its own: the ECI shim is the
# runtime handler "eci" (what a RuntimeClass names), pods get a bridge CNI network, and the
# test image's "pause" tag (sleep) is the sandbox image, since no registry can be reached.
#   scripts/crienv.sh start   # prints the environment to source
#   scripts/crienv.sh stop
# The containerd is the one ECI_CONTAINERD_BIN_DIR names, as for testenv.sh.
set -euo pipefail
ROOT=${ECI_CRI_ROOT:-/tmp/eci-cri}
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${ECI_BIN_DIR:-$REPO/target/release}
SOCK=$ROOT/containerd.sock
IMAGE=eci.test/busybox:latest
PAUSE=eci.test/busybox:pause
CNI_BIN=${ECI_CNI_BIN:-/usr/lib/cni}
# ECI's pool kept apart from the kubelet's user-namespace blocks (README, "User-namespaced
# pods"), as in critest.sh: 1000 blocks from 100000, the same leases as the default pool's first
# 1000. Given through ECI_POLICY: containerd 2 starts a hostUsers: false pod's containers with
# runc's options and fails on a handler configured with runtimeoptions.
POLICY=${ECI_CRI_POLICY:-/etc/containerd-shim-eci/crienv.toml}
. "$REPO/scripts/containerd-bin.sh"

ctr_() { "$CTR" --address "$SOCK" --namespace k8s.io "$@"; }

import_images() {
  # The test image's layout, with a second tag whose command never ends.
  local layout=$ROOT/oci
  rm -rf "$layout"
  cp -a "$ECI_TEST_ROOT/image/oci" "$layout"
  umoci config --image "$layout:latest" --tag pause --config.cmd sleep --config.cmd 2147483647 >/dev/null
  tar -C "$layout" -cf "$ROOT/images.tar" .
  ctr_ images import --base-name "${IMAGE%:*}" "$ROOT/images.tar" >/dev/null
}

start() {
  [ -x "$CNI_BIN/bridge" ] || { echo "CNI plugins not found in $CNI_BIN (apt-get install containernetworking-plugins)" >&2; exit 1; }
  eval "$("$REPO/scripts/testenv.sh" start)"
  mkdir -p "$ROOT"
  if ! "$CTR" --address "$SOCK" version >/dev/null 2>&1; then
    mkdir -p "$ROOT/cni" "$ROOT/bin"
    cat > "$ROOT/cni/10-eci-test.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "eci-test",
  "plugins": [
    {"type": "bridge", "bridge": "eci-cri0", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.233.0.0/24"}]], "dataDir": "$ROOT/ipam"}}
  ]
}
JSON
    if [ "$CONTAINERD_MAJOR" -ge 2 ]; then
      # 2.x: the CRI plugin is split; the runtimes live in io.containerd.cri.v1.runtime.
      cat > "$ROOT/config.toml" <<TOML
version = 3
root = "$ROOT/root"
state = "$ROOT/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "$PAUSE"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$CNI_BIN"]
    conf_dir = "$ROOT/cni"
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "eci"
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.eci]
    runtime_type = "io.containerd.eci.v2"
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
TOML
    else
    cat > "$ROOT/config.toml" <<TOML
version = 2
root = "$ROOT/root"
state = "$ROOT/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE"
  # The kubelet asks -998 for a sandbox; below containerd's own value that needs
  # CAP_SYS_RESOURCE, which a sandboxed CI machine may not grant.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$ROOT/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "eci"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.eci]
    runtime_type = "io.containerd.eci.v2"
TOML
    fi
    mkdir -p "$(dirname "$POLICY")"
    printf '[id_pool]\nfirst = 100000\nblocks = 1000\n' > "$POLICY.new" && mv "$POLICY.new" "$POLICY"
    # As in testenv.sh: the shims on PATH, no runc.
    ln -sf "$BIN/containerd-shim-eci-v2" "$ROOT/bin/containerd-shim-eci-v2"
    ln -sf "$CTR" "$ROOT/bin/ctr"
    nohup env PATH="$ROOT/bin" ECI_POLICY="$POLICY" ${ECI_HELPER_LOG:+ECI_HELPER_LOG=$ECI_HELPER_LOG} "$CONTAINERD" --config "$ROOT/config.toml" > "$ROOT/containerd.log" 2>&1 &
    echo $! > "$ROOT/containerd.pid"
    for _ in $(seq 100); do "$CTR" --address "$SOCK" version >/dev/null 2>&1 && break; sleep 0.1; done
    "$CTR" --address "$SOCK" version >/dev/null || { tail -20 "$ROOT/containerd.log" >&2; exit 1; }
  fi
  ctr_ images ls -q | grep -qx "$PAUSE" || import_images
  echo "export ECI_CRI_SOCKET=$SOCK ECI_CRI_IMAGE=$IMAGE"
}

stop() {
  if [ -f "$ROOT/containerd.pid" ]; then
    kill "$(cat "$ROOT/containerd.pid")" 2>/dev/null || true
    sleep 1
  fi
  ip link delete eci-cri0 2>/dev/null || true
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
