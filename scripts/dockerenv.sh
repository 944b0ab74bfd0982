#!/usr/bin/env bash
# dockerd on a private containerd of its own where every container runs under ECI: what a Docker
# user gets. The busybox image comes from scripts/testenv.sh's OCI layout, loaded with
# `docker import`.
#   scripts/dockerenv.sh start   # prints the environment to source
#   scripts/dockerenv.sh stop
# The containerd is the one ECI_CONTAINERD_BIN_DIR names, as for testenv.sh.
# Which engine, and how ECI is selected:
#   ECI_DOCKERD_BIN    dockerd to run (default: Debian's dockerd 20.10 on PATH), for example
#                      /opt/eci-tools/docker-29.8.1/dockerd (scripts/install-go-tools.sh)
#   ECI_DOCKER_CLI_BIN docker CLI (default: /usr/bin/docker, or the docker beside ECI_DOCKERD_BIN)
#   ECI_DOCKER_SELECT  enforce (default): the runc shim's name is ECI (`containerd-shim-eci-v2
#                      enforce install`), every engine; default-runtime: daemon.json
#                      "default-runtime": "io.containerd.eci.v2" with the real runc shim and
#                      runc beside it (Docker 23+), so `--runtime runc` is still runc
#   ECI_DOCKER_STORE   overlay2 (default): dockerd's graph driver; containerd: the containerd
#                      image store (daemon.json features.containerd-snapshotter, Docker 24+;
#                      Docker 29's default on a new install)
set -euo pipefail
ROOT=${ECI_DOCKER_ROOT:-/tmp/eci-docker}
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${ECI_BIN_DIR:-$REPO/target/release}
SOCK=$ROOT/containerd.sock
HOST=unix://$ROOT/docker.sock
IMAGE=eci.test/busybox:latest
DOCKERD=${ECI_DOCKERD_BIN:-$(command -v dockerd || true)}
if [ -n "${ECI_DOCKER_CLI_BIN:-}" ]; then
  DOCKER=$ECI_DOCKER_CLI_BIN
elif [ -n "${ECI_DOCKERD_BIN:-}" ] && [ -x "$(dirname "$ECI_DOCKERD_BIN")/docker" ]; then
  DOCKER=$(dirname "$ECI_DOCKERD_BIN")/docker
elif [ -x /usr/bin/docker ]; then
  DOCKER=/usr/bin/docker
else
  # No pipe into head: under pipefail, `command -v a b | head -1` ends the script with 141
  # whenever head exits before the second line is written (7 of 300 runs, loaded).
  DOCKER=$(command -v docker || true)
fi
SELECT=${ECI_DOCKER_SELECT:-enforce}
STORE=${ECI_DOCKER_STORE:-overlay2}
RUNC=${ECI_DOCKER_RUNC:-/opt/eci-tools/runc-1.5.3/runc}
. "$REPO/scripts/containerd-bin.sh"

wait_for() { for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done; "$@" >/dev/null; }

start() {
  [ -x "$DOCKERD" ] || { echo "dockerd not found (apt-get install docker.io, or ECI_DOCKERD_BIN)" >&2; exit 1; }
  case "$SELECT" in enforce|default-runtime) ;; *) echo "ECI_DOCKER_SELECT: enforce or default-runtime, not $SELECT" >&2; exit 2 ;; esac
  case "$STORE" in overlay2|containerd) ;; *) echo "ECI_DOCKER_STORE: overlay2 or containerd, not $STORE" >&2; exit 2 ;; esac
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
    if [ "$SELECT" = enforce ]; then
      # dockerd asks for io.containerd.runc.v2 unless told otherwise: enforcement makes that
      # name ECI.
      "$BIN/containerd-shim-eci-v2" enforce install --bin-dir "$ROOT/bin" >/dev/null
    else
      # ECI by its own name; the runc shim and runc stay what they are.
      ln -sf "$BIN/containerd-shim-eci-v2" "$ROOT/bin/containerd-shim-eci-v2"
      ln -sf "$RUNC_SHIM" "$ROOT/bin/containerd-shim-runc-v2"
      ln -sf "$RUNC" "$ROOT/bin/runc"
    fi
    ln -sf "$CTR" "$ROOT/bin/ctr"
    nohup env PATH="$ROOT/bin" "$CONTAINERD" --config "$ROOT/containerd.toml" \
      > "$ROOT/containerd.log" 2>&1 &
    echo $! > "$ROOT/containerd.pid"
    wait_for "$CTR" --address "$SOCK" version || { tail -20 "$ROOT/containerd.log" >&2; exit 1; }
  fi
  if ! "$DOCKER" -H "$HOST" version >/dev/null 2>&1; then
    # What an admin writes into /etc/docker/daemon.json (here a file of our own).
    local json='{'
    [ "$SELECT" = default-runtime ] && json+='"default-runtime": "io.containerd.eci.v2", '
    if [ "$STORE" = containerd ]; then
      json+='"features": {"containerd-snapshotter": true}'
    else
      json+='"storage-driver": "overlay2"'
      # Docker 29 uses the containerd image store on a new install unless told otherwise.
      local major
      major=$("$DOCKERD" --version | sed -n 's/^Docker version \([0-9]*\).*/\1/p')
      [ "${major:-0}" -ge 29 ] && json+=', "features": {"containerd-snapshotter": false}'
    fi
    json+='}'
    printf '%s\n' "$json" > "$ROOT/daemon.json"
    nohup env PATH="$ROOT/bin:$PATH" "$DOCKERD" --config-file "$ROOT/daemon.json" --containerd "$SOCK" \
      --data-root "$ROOT/docker" --exec-root "$ROOT/exec" \
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
