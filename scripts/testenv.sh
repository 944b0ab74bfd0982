#!/usr/bin/env bash
# A private containerd with the ECI shim registered, and a locally built busybox image.
#   scripts/testenv.sh start   # prints the environment to source
#   scripts/testenv.sh stop
# ECI_CONTAINERD_BIN_DIR names the containerd to run (default: Debian's 1.6 on PATH), e.g.
#   ECI_CONTAINERD_BIN_DIR=/opt/eci-tools/containerd-2.4.2 ECI_TEST_ROOT=/tmp/eci-2.4 scripts/testenv.sh start
set -euo pipefail
ROOT=${ECI_TEST_ROOT:-/tmp/eci-test}
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${ECI_BIN_DIR:-$REPO/target/release}
SOCK=$ROOT/containerd.sock
IMAGE=${ECI_TEST_IMAGE:-eci.test/busybox:latest}
. "$REPO/scripts/containerd-bin.sh"

ctr_() { "$CTR" --address "$SOCK" "$@"; }

build_image() {
  local work=$ROOT/image
  rm -rf "$work"; mkdir -p "$work"
  umoci init --layout "$work/oci" >/dev/null
  umoci new --image "$work/oci:latest" >/dev/null
  umoci unpack --image "$work/oci:latest" "$work/bundle" >/dev/null
  local rootfs=$work/bundle/rootfs
  mkdir -p "$rootfs"/{bin,sbin,etc,tmp,root,proc,sys,dev,home/user,var/empty}
  cp /bin/busybox "$rootfs/bin/busybox"
  for applet in $("$rootfs/bin/busybox" --list); do
    [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
  done
  chmod 1777 "$rootfs/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$rootfs/etc/passwd"
  printf 'root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
  echo "owned by 1000 in the image" > "$rootfs/home/user/file"
  chown -R 1000:1000 "$rootfs/home/user"
  echo "root file" > "$rootfs/root/file"
  umoci repack --image "$work/oci:latest" "$work/bundle" >/dev/null
  umoci config --image "$work/oci:latest" --config.cmd /bin/sh --config.env PATH=/bin:/sbin >/dev/null
  tar -C "$work/oci" -cf "$work/image.tar" .
  ctr_ images import --base-name "${IMAGE%:*}" "$work/image.tar" >/dev/null
}

start() {
  mkdir -p "$ROOT"
  # One root, one containerd version. A containerd already serving the socket is reused when
  # it is the version asked for, and never stopped otherwise (it may be another session's).
  if [ -S "$SOCK" ] && ctr_ version >/dev/null 2>&1; then
    local serving
    serving=$(ctr_ version | awk '/^Server:/ { s = 1 } s && $1 == "Version:" { sub(/^v/, "", $2); print $2; exit }')
    if [ "$serving" != "$CONTAINERD_VERSION" ]; then
      echo "containerd $serving already serves $SOCK, not $CONTAINERD_VERSION: stop it (scripts/testenv.sh stop) or choose another ECI_TEST_ROOT" >&2
      exit 1
    fi
  else
    # An older containerd may not read a newer one's metadata: a root changes hands clean.
    if [ -f "$ROOT/containerd.version" ] && [ "$(cat "$ROOT/containerd.version")" != "$CONTAINERD_VERSION" ]; then
      rm -rf "$ROOT/root" "$ROOT/state"
    fi
    echo "$CONTAINERD_VERSION" > "$ROOT/containerd.version"
    cat > "$ROOT/config.toml" <<TOML
version = $CONFIG_VERSION
root = "$ROOT/root"
state = "$ROOT/state"
disabled_plugins = [$CRI_PLUGINS]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  level = "info"
TOML
    # containerd and its shims see only the shims on PATH, no runc: ECI must not need one
    # (Debian links runc into /usr/bin; the runc shim for benchmarks gets --runc-binary).
    mkdir -p "$ROOT/bin"
    ln -sf "$BIN/containerd-shim-eci-v2" "$ROOT/bin/containerd-shim-eci-v2"
    ln -sf "$RUNC_SHIM" "$ROOT/bin/containerd-shim-runc-v2"
    # No ctr here: the shim asks containerd over its gRPC API which image a container runs.
    rm -f "$ROOT/bin/ctr"
    # $ROOT/enforce comes first and is empty: the enforcement test installs its link there.
    mkdir -p "$ROOT/enforce"
    rm -f "$ROOT/enforce/"*
    nohup env PATH="$ROOT/enforce:$ROOT/bin" "$CONTAINERD" --config "$ROOT/config.toml" > "$ROOT/containerd.log" 2>&1 &
    echo $! > "$ROOT/containerd.pid"
    for _ in $(seq 100); do ctr_ version >/dev/null 2>&1 && break; sleep 0.1; done
    ctr_ version >/dev/null || { tail -20 "$ROOT/containerd.log" >&2; exit 1; }
    ctr_ version >/dev/null
  fi
  ctr_ images ls -q | grep -qx "$IMAGE" || build_image
  echo "export ECI_CONTAINERD=$SOCK ECI_TEST_IMAGE=$IMAGE ECI_TEST_ROOT=$ROOT ECI_CTR=$CTR ECI_CONTAINERD_VERSION=$CONTAINERD_VERSION"
}

stop() {
  if [ -f "$ROOT/containerd.pid" ]; then
    kill "$(cat "$ROOT/containerd.pid")" 2>/dev/null || true
    sleep 1
    rm -f "$ROOT/containerd.pid"
  fi
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  image) build_image ;;
  *) echo "usage: $0 start|stop|image" >&2; exit 2 ;;
esac
