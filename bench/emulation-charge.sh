#!/bin/bash
# Where the work of serving a container's emulated /proc files is charged (issue 11, item 9).
# A container at --cpus 0.2 first writes 1 MiB (one write(2)) to every emulated knob it can,
# then reads a knob in 4 KiB reads in a loop. Over SECONDS seconds this prints the shim's CPU time (all its threads), the
# container's own CPU usage (cpuacct, which now includes the FUSE threads serving it), and the
# shim's resident memory. Needs the environment of scripts/testenv.sh (ECI_CONTAINERD,
# ECI_TEST_IMAGE, ECI_CTR) and a host with the cgroup v1 cpuacct controller.
#
#   eval "$(scripts/testenv.sh start)"; bench/emulation-charge.sh
set -euo pipefail
SECONDS_TO_RUN=${SECONDS_TO_RUN:-10}
ID=${ID:-emucharge-$$}
CTR=("${ECI_CTR:-ctr}" --address "$ECI_CONTAINERD")
hz=$(getconf CLK_TCK)

cleanup() {
  "${CTR[@]}" task kill -s SIGKILL "$ID" >/dev/null 2>&1 || true
  sleep 1
  "${CTR[@]}" task delete "$ID" >/dev/null 2>&1 || true
  "${CTR[@]}" container delete "$ID" >/dev/null 2>&1 || true
}
trap cleanup EXIT

knobs='/proc/sys/kernel/panic /proc/sys/kernel/panic_on_oops /proc/sys/kernel/printk
/proc/sys/kernel/sysrq /proc/sys/kernel/kptr_restrict /proc/sys/kernel/dmesg_restrict
/proc/sys/kernel/pid_max /proc/sys/vm/overcommit_memory /proc/sys/vm/mmap_min_addr
/proc/sys/fs/file-max /proc/sys/fs/nr_open /proc/sys/fs/protected_hardlinks
/proc/sys/fs/protected_symlinks /sys/kernel/mm/transparent_hugepage/enabled
/sys/kernel/mm/transparent_hugepage/defrag'
script="head -c 1048576 /dev/zero | tr '\\0' 1 > /tmp/big; ok=0
for k in $(echo $knobs); do dd if=/tmp/big of=\$k bs=1M 2>/dev/null && ok=\$((ok+1)); done
echo \$ok > /tmp/written
while :; do dd if=/proc/sys/kernel/panic of=/dev/null bs=4k 2>/dev/null; done"
"${CTR[@]}" run -d --runtime io.containerd.eci.v2 --cpus 0.2 "$ECI_TEST_IMAGE" "$ID" sh -c "$script" >/dev/null

shim=""
for _ in $(seq 50); do
  shim=$(ps -eo pid,args | awk -v id="-id $ID " 'index($0, "containerd-shim-eci-v2") && index($0, id) {print $1; exit}')
  [ -n "$shim" ] && break
  sleep 0.1
done
cg=/sys/fs/cgroup/cpuacct/default/$ID
sleep 3
written=$("${CTR[@]}" task exec --exec-id w "$ID" cat /tmp/written 2>/dev/null || echo '?')

shim_ticks() { awk '{print $14 + $15}' "/proc/$shim/stat"; }
# The FUSE threads serving the container (fuser-N), wherever their cgroup is.
fuse_ticks() {
  local sum=0 t
  for t in /proc/$shim/task/*; do
    case "$(cat "$t/comm" 2>/dev/null)" in fuser-*) sum=$((sum + $(awk '{print $14 + $15}' "$t/stat"))) ;; esac
  done
  echo $sum
}
t0=$(shim_ticks); f0=$(fuse_ticks); u0=$(cat "$cg/cpuacct.usage"); rss0=$(awk '/^VmRSS/ {print $2}' "/proc/$shim/status")
sleep "$SECONDS_TO_RUN"
t1=$(shim_ticks); f1=$(fuse_ticks); u1=$(cat "$cg/cpuacct.usage"); rss1=$(awk '/^VmRSS/ {print $2}' "/proc/$shim/status")
where=$(for t in /proc/$shim/task/*; do
  case "$(cat "$t/comm" 2>/dev/null)" in fuser-*) echo "$(cat "$t/comm") in cpuacct:$(awk -F: '$2 ~ /(^|,)cpuacct(,|$)/ {print $3}' "$t/cgroup")" ;; esac
done | sort | tr '\n' ' ')

awk -v t0="$t0" -v t1="$t1" -v u0="$u0" -v u1="$u1" -v hz="$hz" -v s="$SECONDS_TO_RUN" \
  -v r0="$rss0" -v r1="$rss1" -v w="$written" -v f0="$f0" -v f1="$f1" 'BEGIN {
  printf "knobs that took 1 MiB: %s of 15\n", w
  printf "shim CPU: %.2f s in %d s (%.0f %% of a core), of which its FUSE threads %.2f s\n", (t1 - t0) / hz, s, 100 * (t1 - t0) / hz / s, (f1 - f0) / hz
  printf "container cgroup CPU (cpuacct): %.2f s (%.0f %% of a core; quota 20 %%)\n", (u1 - u0) / 1e9, 100 * (u1 - u0) / 1e9 / s
  printf "shim VmRSS: %d KiB at start of the loop, %d KiB after\n", r0, r1
}'
echo "FUSE threads: $where"
