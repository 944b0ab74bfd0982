#!/usr/bin/env bash
# dockerd 20.10 (Debian docker.io) on a private containerd of its own where the runc shim name
# is enforced to ECI (`containerd-shim-eci-v2 enforce install`): what a Docker user gets.
# The busybox image comes from scripts/testenv.sh's OCI layout, loaded with `docker import`.
#   scripts/dockerenv.sh start   # prints the environment to source
#   scripts/dockerenv.sh stop
# The containerd is the one ECI_CONTAINERD_BIN_DIR names, as for testenv.sh.
set -euo pipefail
ROOT=${ECI_DOCKER_ROOT:-/tmp/eci-docker}
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${ECI_BIN_DIR:-$REPO/target/release}
SOCK=$ROOT/containerd.sock
HOST=unix://$ROOT/docker.sock
IMAGE=eci.test/busybox:latest
DOCKER=$(command -v /usr/bin/docker docker | head -1)
. "$REPO/scripts/containerd-bin.sh"

wait_for() { for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done; "$@" >/dev/null; }

start() {
  command -v dockerd >/dev/null || { echo "dockerd not found (apt-get install docker.io)" >&2; exit 1; }
  eval "$("$REPO/scripts/testenv.sh" start)"
  if ! "$CTR" --address "$SOCK" version >/dev/null 2>&1; then
    # This containerd's PATH is ours alone: links from another checkout's shim do not belong.
    rm -rf "$ROOT/bin"
    mkdir -p "$ROOT/bin"
    cat > "$ROOT/containerd.toml" <<TOML
version = $CONFIG_VERSION
root = "$ROOT/containerd/root"
state = "$ROOT/containerd/state"
disabled_plugins = [$CRI_PLUGINS]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
TOML
    # dockerd always asks for io.containerd.runc.v2: enforcement makes that name ECI.
    "$BIN/containerd-shim-eci-v2" enforce install --bin-dir "$ROOT/bin" >/dev/null
    ln -sf "$CTR" "$ROOT/bin/ctr"
    nohup env PATH="$ROOT/bin" "$CONTAINERD" --config "$ROOT/containerd.toml" \
      > "$ROOT/containerd.log" 2>&1 &
    echo $! > "$ROOT/containerd.pid"
    wait_for "$CTR" --address "$SOCK" version || { tail -20 "$ROOT/containerd.log" >&2; exit 1; }
  fi
  if ! "$DOCKER" -H "$HOST" version >/dev/null 2>&1; then
    nohup dockerd --containerd "$SOCK" --data-root "$ROOT/docker" --exec-root "$ROOT/exec" \
      -H "$HOST" --pidfile "$ROOT/docker.pid" --iptables=false --ip-masq=false --bridge=none \
      > "$ROOT/dockerd.log" 2>&1 &
    wait_for "$DOCKER" -H "$HOST" version || { tail -20 "$ROOT/dockerd.log" >&2; exit 1; }
  fi
  if [ -z "$("$DOCKER" -H "$HOST" images -q "$IMAGE")" ]; then
    tar -C "$ECI_TEST_ROOT/image/bundle/rootfs" -c . |
      "$DOCKER" -H "$HOST" import -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/bin:/sbin' - "$IMAGE" >/dev/null
  fi
  echo "export ECI_DOCKER_HOST=$HOST ECI_DOCKER_CLI=$DOCKER ECI_DOCKER_CONTAINERD=$SOCK ECI_DOCKER_IMAGE=$IMAGE"
}

stop() {
  for pidfile in "$ROOT/docker.pid" "$ROOT/containerd.pid"; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    sleep 1
  done
  # dockerd's netns handle, if it was stopped before it could unmount it.
  umount "$ROOT/exec/netns/default" 2>/dev/null || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
