#!/usr/bin/env bash
# Build, start a private containerd with the ECI shim registered, and show a container's
# isolation. Needs root. Usage: sudo scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --workspace
eval "$(scripts/testenv.sh start)"
C="ctr --address $ECI_CONTAINERD"
R="--runtime io.containerd.eci.v2"
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
id=$$

say "ctr run $R busybox first cat /proc/self/uid_map   (while 'second' also runs)"
$C run -d $R "$ECI_TEST_IMAGE" "second-$id" sleep 30 >/dev/null
$C run --rm $R "$ECI_TEST_IMAGE" "first-$id" cat /proc/self/uid_map
say "ctr task exec second cat /proc/self/uid_map"
$C task exec --exec-id show "second-$id" cat /proc/self/uid_map
$C task kill -s SIGKILL "second-$id" >/dev/null; sleep 0.5
$C task delete "second-$id" >/dev/null; $C container delete "second-$id" >/dev/null

say "ctr run $R busybox c id; stat -c '%u:%g %n' /home/user/file   (image owners kept, no chown)"
$C run --rm $R "$ECI_TEST_IMAGE" "own-$id" sh -c 'id; stat -c "%u:%g %n" /home/user/file'

say "ctr run $R --net-host busybox c true   (host network refused)"
$C run --rm $R --net-host "$ECI_TEST_IMAGE" "net-$id" true || true

say "ctr run $R --mount src=/etc/containerd,... busybox c true   (restricted host mount)"
mkdir -p /etc/containerd
$C run --rm $R --mount type=bind,src=/etc/containerd,dst=/x,options=rbind:ro "$ECI_TEST_IMAGE" "mnt-$id" true || true

say "ctr run $R --privileged busybox c sh -c 'ls /dev | wc -l; cat /proc/self/uid_map'   (privileged, contained)"
$C run --rm $R --privileged "$ECI_TEST_IMAGE" "priv-$id" sh -c 'echo "$(ls /dev | wc -l) device nodes"; cat /proc/self/uid_map'
vol=$(mktemp -d /var/tmp/eci-demo.XXXXXX)
say "ctr run $R --privileged --mount src=$vol,...,ro busybox c sh -c 'cat /proc/uptime; mount -o remount,rw /data'   (per-container uptime; read-only stays read-only)"
$C run --rm $R --privileged --mount "type=bind,src=$vol,dst=/data,options=rbind:ro" "$ECI_TEST_IMAGE" "ro-$id" \
  sh -c 'cat /proc/uptime; mount -o remount,rw /data; mkdir -p /t && mount -t tmpfs t /t && mount -o remount,ro /t /t && echo "own tmpfs: mounted and remounted ro"' || true
rmdir "$vol"

say "ctr run $R --memory-limit 268435456 --cpus 1 busybox c sh -c 'free; nproc'   (its own memory and CPUs)"
$C run --rm $R --memory-limit 268435456 --cpus 1 "$ECI_TEST_IMAGE" "limits-$id" sh -c 'free; nproc'
echo
echo "containerd: $ECI_CONTAINERD (stop it with scripts/testenv.sh stop)"
