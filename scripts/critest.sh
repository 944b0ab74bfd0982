#!/usr/bin/env bash
# critest, Kubernetes' CRI validation suite (cri-tools v1.37.0), against a CRI containerd 2.x of
# its own with two runtime handlers: `runc` (runc 1.5.3, the baseline) and `eci` (this shim).
# No registry can be reached here, so the images critest pulls (pkg/validate/consts.go) are
# built from busybox-static with umoci and served by Debian's docker-registry on localhost, which
# a hosts.toml makes the only host of registry.k8s.io, gcr.io and k8s.gcr.io.
#
#   scripts/critest.sh              # full suite, both handlers, prints the table (~40 min)
#   scripts/critest.sh --ci         # a named subset (CI_FOCUS below), both handlers (~2.5 min);
#                                   # exits 1 if a spec fails under eci but not under runc
#   scripts/critest.sh --handlers eci --focus 'Streaming'   # any ginkgo focus / skip
#   scripts/critest.sh start|stop   # just the containerd (prints the environment to source)
#
# Environment: ECI_CRITEST_ROOT (/tmp/eci-critest), ECI_CRITEST_CONTAINERD (2.4.2: a directory
# under /opt/eci-tools/containerd-<ver>, or a path), ECI_CRITEST_TOOLS (cri-tools binaries),
# ECI_CRITEST_RUNC, ECI_BIN_DIR (the shim), ECI_CRITEST_PORT (registry port, 5237).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${ECI_CRITEST_ROOT:-/tmp/eci-critest}
BIN=${ECI_BIN_DIR:-$REPO/target/release}
CTRD_VER=${ECI_CRITEST_CONTAINERD:-2.4.2}
case "$CTRD_VER" in /*) CTRD_DIR=$CTRD_VER ;; *) CTRD_DIR=/opt/eci-tools/containerd-$CTRD_VER ;; esac
TOOLS=${ECI_CRITEST_TOOLS:-/opt/eci-tools/cri-tools-1.37.0}
RUNC=${ECI_CRITEST_RUNC:-/opt/eci-tools/runc-1.5.3/runc}
CNI_BIN=${ECI_CNI_BIN:-/usr/lib/cni}
PORT=${ECI_CRITEST_PORT:-5237}
REG=127.0.0.1:$PORT
SOCK=$ROOT/containerd.sock
# Not crienv.sh's eci-cri0 / 10.233.0.0/24: both may run at once.
BRIDGE=eci-crit0
SUBNET=10.234.0.0/24
SANDBOX_IMAGE=registry.k8s.io/pause:3.10.1
POLICY=${ECI_CRITEST_POLICY:-/etc/containerd-shim-eci/critest.toml}

# What CI runs: one spec group per CRI area the shim implements, ~40 specs, a few minutes.
CI_FOCUS='Container (should support|runtime should support (exec|execSync|attach|log))|PodSandbox runtime should support (removing|running|stopping)|Multiple Containers|Streaming runtime should support (exec|attach)|Security Context (SeccompProfile|NoNewPrivs|bucket|RunAsUser|RunAsGroup|SupplementalGroups)|Networking runtime should support (DNS|set hostname|port mapping with only container port)|Runtime info'
# ... less what ECI refuses by design or this image cannot do (see the README's table).
CI_SKIP='unconfined|nil profile|Privileged is true|adding capability|MaskedPaths'

ctr_() { "$CTRD_DIR/ctr" --address "$SOCK" "$@"; }

# ---------------------------------------------------------------- images
recipe() { { cat "$REPO/scripts/critest/images.c"; declare -f build_images; } | sha256sum | cut -c1-16; }

# name in the registry -> how it differs from the busybox base (see build_images)
build_images() {
  local work=$ROOT/images
  rm -rf "$work"; mkdir -p "$work"
  gcc -static -O2 -Wall -o "$work/critest-images" "$REPO/scripts/critest/images.c"
  local oci=$work/oci
  umoci init --layout "$oci" >/dev/null
  umoci new --image "$oci:base" >/dev/null
  umoci unpack --image "$oci:base" "$work/bundle" >/dev/null
  local rootfs=$work/bundle/rootfs
  mkdir -p "$rootfs"/{bin,sbin,etc,tmp,root,proc,sys,dev,var/run,var/www,home/default-user,usr/local/bin,usr/sbin}
  cp /bin/busybox "$rootfs/bin/busybox"
  # Hard links, as in the e2e busybox image: masking /bin/ls must not mask busybox itself.
  for applet in $("$rootfs/bin/busybox" --list); do
    [ -e "$rootfs/bin/$applet" ] || ln "$rootfs/bin/busybox" "$rootfs/bin/$applet"
  done
  chmod 1777 "$rootfs/tmp"
  cp "$work/critest-images" "$rootfs/usr/sbin/nginx"
  ln -s nginx "$rootfs/usr/sbin/pause"
  mkdir -p "$rootfs/usr/bin"
  ln -s ../sbin/nginx "$rootfs/usr/bin/pgrep"
  ln -s ../sbin/nginx "$rootfs/usr/bin/ipcs"
  ln -s ../../sbin/nginx "$rootfs/usr/local/bin/nnp"
  # nnp must be its own file to be setuid: a copy, owned by root, mode 4755.
  rm "$rootfs/usr/local/bin/nnp"; cp "$work/critest-images" "$rootfs/usr/local/bin/nnp"
  chown 0:0 "$rootfs/usr/local/bin/nnp"; chmod 4755 "$rootfs/usr/local/bin/nnp"
  cat > "$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
www-data:x:33:33:www-data:/var/www:/bin/false
default-user:x:1000:1000:default-user:/home/default-user:/bin/sh
nobody:x:65534:65534:nobody:/:/bin/false
EOF
  cat > "$rootfs/etc/group" <<'EOF'
root:x:0:
www-data:x:33:
default-user:x:1000:
group-defined-in-image:x:50000:default-user
nogroup:x:65534:
EOF
  chown 1000:1000 "$rootfs/home/default-user"
  umoci repack --image "$oci:base" "$work/bundle" >/dev/null
  umoci config --image "$oci:base" --config.cmd /bin/sh --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin >/dev/null

  # local tag | registry path | umoci config arguments. Every path is an image of its own (the
  # image specs count repo tags per image ID) except the three test-image-tags.
  local -a images=(
    "busybox|e2e-test-images/busybox:1.29-2|"
    "pause|pause:3.9|--config.cmd /usr/sbin/pause"
    "sandbox|pause:3.10.1|--config.cmd /usr/sbin/pause --config.label critest=sandbox"
    "nginx|e2e-test-images/nginx:1.14-2|--config.cmd /usr/sbin/nginx --config.cmd -g --config.cmd daemon_off;"
    "httpd|e2e-test-images/httpd:2.4.39-4|--config.cmd /usr/sbin/nginx --config.cmd -g --config.cmd daemon_off; --config.env SERVER=httpd"
    "hostnet|k8s-staging-cri-tools/hostnet-nginx-amd64:latest|--config.cmd /usr/sbin/nginx --config.cmd -g --config.cmd daemon_off; --config.env PORT=12003"
    "nnp|e2e-test-images/nonewprivs:1.3|--config.cmd /usr/local/bin/nnp"
    "latest|k8s-staging-cri-tools/test-image-latest:latest|--config.label critest=latest"
    "tagtest|k8s-staging-cri-tools/test-image-tag:test|--config.label critest=tag-test"
    "tagall|k8s-staging-cri-tools/test-image-tag:all|--config.label critest=tag-all"
    "i1|k8s-staging-cri-tools/test-image-1:latest|--config.label critest=1"
    "i2|k8s-staging-cri-tools/test-image-2:latest|--config.label critest=2"
    "i3|k8s-staging-cri-tools/test-image-3:latest|--config.label critest=3"
    "tags|k8s-staging-cri-tools/test-image-tags:1|--config.label critest=tags"
    "tags|k8s-staging-cri-tools/test-image-tags:2|"
    "tags|k8s-staging-cri-tools/test-image-tags:3|"
    "uid|k8s-staging-cri-tools/test-image-user-uid:latest|--config.user 1002"
    "username|k8s-staging-cri-tools/test-image-user-username:latest|--config.user www-data"
    "uidgroup|k8s-staging-cri-tools/test-image-user-uid-group:latest|--config.user 1003:1003"
    "usernamegroup|k8s-staging-cri-tools/test-image-user-username-group:latest|--config.user www-data:www-data"
    "predefined|k8s-staging-cri-tools/test-image-predefined-group:latest|--config.user 1000"
  )
  local entry tag path args made=" base "
  for entry in "${images[@]}"; do
    IFS='|' read -r tag path args <<<"$entry"
    if [[ $made != *" $tag "* ]]; then
      # shellcheck disable=SC2086 # args are words
      umoci config --image "$oci:base" --tag "$tag" $args >/dev/null
      made+="$tag "
    fi
  done
  tar -C "$oci" -cf "$work/images.tar" .
  ctr_ -n critest-build images import --base-name critest.local/img "$work/images.tar" >/dev/null 2>>"$work/ctr.log"
  for entry in "${images[@]}"; do
    IFS='|' read -r tag path args <<<"$entry"
    ctr_ -n critest-build images push --plain-http "$REG/$path" "critest.local/img:$tag" >/dev/null 2>>"$work/ctr.log"
  done
  recipe > "$ROOT/registry/.built"
}

# critest pulls an image only when CRI does not have it yet, so what containerd pulled from an
# earlier build of the registry would stay in use after a rebuild: an httpd image from before
# it logged "httpd" timed out "should support container log" under every handler. Forget every
# image of the three registry hosts (all of them come from ours), and CRI's references by image
# ID, whenever the recipe changes.
forget_pulled_images() {
  local refs
  refs=$(ctr_ -n k8s.io images ls -q 2>/dev/null | grep -E '^(registry\.k8s\.io/|gcr\.io/|k8s\.gcr\.io/|sha256:)' || true)
  mkdir -p "$ROOT/images"
  # shellcheck disable=SC2086 # one reference per word
  [ -z "$refs" ] || ctr_ -n k8s.io images rm $refs >/dev/null 2>>"$ROOT/images/ctr.log"
  recipe > "$ROOT/root/.critest-images"
}

start_registry() {
  mkdir -p "$ROOT/registry"
  if ! curl -fs "http://$REG/v2/" >/dev/null 2>&1; then
    cat > "$ROOT/registry.yml" <<YAML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $ROOT/registry}
  delete: {enabled: true}
http: {addr: "$REG"}
YAML
    nohup docker-registry serve "$ROOT/registry.yml" > "$ROOT/registry.log" 2>&1 &
    echo $! > "$ROOT/registry.pid"
    for _ in $(seq 50); do curl -fs "http://$REG/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -fs "http://$REG/v2/" >/dev/null || { tail "$ROOT/registry.log" >&2; exit 1; }
  fi
}

# ---------------------------------------------------------------- containerd
start() {
  command -v docker-registry >/dev/null || { echo "docker-registry not found (apt-get install docker-registry)" >&2; exit 1; }
  [ -x "$CNI_BIN/bridge" ] || { echo "CNI plugins not found in $CNI_BIN (apt-get install containernetworking-plugins)" >&2; exit 1; }
  [ -x "$CTRD_DIR/containerd" ] || { echo "containerd not found in $CTRD_DIR (scripts/install-go-tools.sh)" >&2; exit 1; }
  mkdir -p "$ROOT"
  start_registry
  if ! ctr_ version >/dev/null 2>&1; then
    mkdir -p "$ROOT/cni" "$ROOT/bin" "$ROOT/certs.d"
    cat > "$ROOT/cni/10-eci-critest.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "eci-critest",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$SUBNET"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$ROOT/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
    local host
    for host in registry.k8s.io gcr.io k8s.gcr.io; do
      mkdir -p "$ROOT/certs.d/$host"
      # The local registry is the server itself, not a mirror in front of the real one: nothing
      # is ever fetched from the network.
      cat > "$ROOT/certs.d/$host/hosts.toml" <<TOML
server = "http://$REG"
[host."http://$REG"]
  capabilities = ["pull", "resolve"]
TOML
    done
    cat > "$ROOT/config.toml" <<TOML
version = 3
root = "$ROOT/root"
state = "$ROOT/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins.'io.containerd.cri.v1.images']
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$SANDBOX_IMAGE"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "$ROOT/certs.d"
[plugins.'io.containerd.cri.v1.runtime']
  # The kubelet asks -998 for a sandbox; below containerd's own value that needs
  # CAP_SYS_RESOURCE, which a sandboxed CI machine may not grant.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$CNI_BIN"]
    conf_dir = "$ROOT/cni"
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$RUNC"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.eci]
      runtime_type = "io.containerd.eci.v2"
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
TOML
    # ECI's pool kept apart from the kubelet's user-namespace blocks (README, "User-namespaced
    # pods"): 1000 blocks from 100000, the same leases as the default pool's first 1000.
    mkdir -p "$(dirname "$POLICY")"
    printf '[id_pool]\nfirst = 100000\nblocks = 1000\n' > "$POLICY"
    # The shims on PATH; runc only through BinaryName.
    ln -sf "$BIN/containerd-shim-eci-v2" "$ROOT/bin/containerd-shim-eci-v2"
    ln -sf "$CTRD_DIR/containerd-shim-runc-v2" "$ROOT/bin/containerd-shim-runc-v2"
    ln -sf "$CTRD_DIR/ctr" "$ROOT/bin/ctr"
    # iptables for the portmap plugin.
    # ECI_POLICY, not the handler's ConfigPath: containerd 2 starts a hostUsers: false pod's
    # containers with runc's options and fails on a handler configured with runtimeoptions.
    nohup env PATH="$ROOT/bin:/usr/sbin:/usr/bin:/sbin:/bin" ECI_POLICY="$POLICY" ${ECI_HELPER_LOG:+ECI_HELPER_LOG=$ECI_HELPER_LOG} \
      "$CTRD_DIR/containerd" --config "$ROOT/config.toml" > "$ROOT/containerd.log" 2>&1 &
    echo $! > "$ROOT/containerd.pid"
    for _ in $(seq 100); do ctr_ version >/dev/null 2>&1 && break; sleep 0.1; done
    ctr_ version >/dev/null || { tail -20 "$ROOT/containerd.log" >&2; exit 1; }
  fi
  [ "$(cat "$ROOT/registry/.built" 2>/dev/null)" = "$(recipe)" ] || build_images >&2
  [ "$(cat "$ROOT/root/.critest-images" 2>/dev/null)" = "$(recipe)" ] || forget_pulled_images
  echo "export CONTAINER_RUNTIME_ENDPOINT=unix://$SOCK ECI_CRITEST_ROOT=$ROOT ECI_CRITEST_IMAGE=registry.k8s.io/e2e-test-images/busybox:1.29-2"
}

stop() {
  local f
  for f in containerd registry; do
    if [ -f "$ROOT/$f.pid" ]; then
      kill "$(cat "$ROOT/$f.pid")" 2>/dev/null || true
      rm -f "$ROOT/$f.pid"
    fi
  done
  sleep 1
  ip link delete "$BRIDGE" 2>/dev/null || true
}

# ---------------------------------------------------------------- the suite
# One row per top-level spec group: passed/failed/skipped per handler.
table() {
  local handlers=("$@") h
  printf '| spec group |'; for h in "${handlers[@]}"; do printf ' %s passed / failed / skipped |' "$h"; done; echo
  printf '| --- |'; for h in "${handlers[@]}"; do printf ' --- |'; done; echo
  jq -r -s '
    [ .[] as $r | $r.report[0].SpecReports[] | select(.LeafNodeType == "It")
      | {h: $r.handler, g: (.ContainerHierarchyTexts[0] | sub("^\\[sig-node\\] "; "")), s: .State} ]
    | group_by(.g)[] | . as $g
    | [$g[0].g] + [ $ARGS.positional[] as $h | [$g[] | select(.h == $h)]
        | "\(map(select(.s == "passed")) | length) / \(map(select(.s == "failed" or .s == "panicked" or .s == "timedout")) | length) / \(map(select(.s == "skipped" or .s == "pending")) | length)" ]
    | "| " + join(" | ") + " |"' \
    --args "${handlers[@]}" < <(for h in "${handlers[@]}"; do
      jq -c --arg h "$h" '{handler: $h, report: .}' "$ROOT/report-$h.json"; done)
  printf '| **total** |'
  for h in "${handlers[@]}"; do
    jq -r '[.[0].SpecReports[] | select(.LeafNodeType == "It") | .State]
      | " \(map(select(. == "passed")) | length) / \(map(select(. == "failed" or . == "panicked" or . == "timedout")) | length) / \(map(select(. == "skipped" or . == "pending")) | length) |"' \
      "$ROOT/report-$h.json" | tr -d '\n'
  done
  echo
}

failures() {
  local h=$1
  jq -r '.[0].SpecReports[] | select(.LeafNodeType == "It" and (.State == "failed" or .State == "panicked" or .State == "timedout"))
    | "- " + (.ContainerHierarchyTexts | join(" ")) + " " + .LeafNodeText + ": " + ((.Failure.Message // "") | split("\n")[0:3] | join(" ") | .[0:300])' \
    "$ROOT/report-$h.json"
}

failed_specs() {
  jq -r '.[0].SpecReports[] | select(.LeafNodeType == "It" and (.State == "failed" or .State == "panicked" or .State == "timedout"))
    | (.ContainerHierarchyTexts | join(" ")) + " " + .LeafNodeText' "$ROOT/report-$1.json" | sort -u
}

run() {
  local handlers=(runc eci) focus="" skip="" ci=0 extra=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --ci) ci=1 ;;
      --handlers) IFS=' ,' read -r -a handlers <<<"$2"; shift ;;
      --focus) focus=$2; shift ;;
      --skip) skip=$2; shift ;;
      --) shift; extra=("$@"); break ;;
      *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
  done
  if [ "$ci" = 1 ] && [ -z "$focus" ]; then focus=$CI_FOCUS; skip=${skip:-$CI_SKIP}; fi
  eval "$(start)"
  local h t0 rc=0
  for h in "${handlers[@]}"; do
    t0=$(date +%s)
    echo "== critest --runtime-handler $h ${focus:+--ginkgo.focus '$focus'}" >&2
    "$TOOLS/critest" --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" \
      --runtime-handler "$h" --ginkgo.no-color --ginkgo.timeout 2h \
      ${focus:+--ginkgo.focus "$focus"} ${skip:+--ginkgo.skip "$skip"} \
      --ginkgo.json-report "$ROOT/report-$h.json" "${extra[@]}" > "$ROOT/critest-$h.log" 2>&1 || true
    echo "   $h: $(( $(date +%s) - t0 )) s, log $ROOT/critest-$h.log" >&2
    [ -s "$ROOT/report-$h.json" ] || { tail -30 "$ROOT/critest-$h.log" >&2; exit 1; }
  done
  table "${handlers[@]}"
  for h in "${handlers[@]}"; do
    if [ -n "$(failures "$h")" ]; then
      echo; echo "$h failures:"; failures "$h"
    fi
  done
  # CI: no spec fails under eci that passes under runc in the same run (a failure of both is
  # this machine's, not the shim's; without a runc run every eci failure counts).
  if [[ " ${handlers[*]} " == *" eci "* ]]; then
    local only
    if [[ " ${handlers[*]} " == *" runc "* ]]; then
      only=$(comm -23 <(failed_specs eci) <(failed_specs runc))
    else
      only=$(failed_specs eci)
    fi
    if [ -n "$only" ]; then
      echo; echo "failing under eci only:"; sed 's/^/- /' <<<"$only"
      rc=1
    fi
  fi
  [ "$ci" = 1 ] && return $rc
  return 0
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  images) build_images ;;
  table) shift; [ $# -gt 0 ] || set -- runc eci; table "$@" ;;
  *) run "$@" ;;
esac
