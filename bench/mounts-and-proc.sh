#!/usr/bin/env bash
# Supervisor and emulation costs, ECI beside runc in one run:
#   - mount -t tmpfs + umount x N in a privileged container: p50/p99 per operation
#   - a loop of getpid (a syscall the filter does not trap)
#   - open+read+close of /proc/uptime and /proc/meminfo: emulated (ECI), native (runc), LXCFS;
#     back to back (the page cache serves ECI within 10 ms) and 11 ms apart (every read reaches
#     the FUSE worker)
#   - sysinfo(2), answered by the supervisor under ECI
#   - memory of the per-container workers (shim and agent PSS)
#   sudo bench/mounts-and-proc.sh [mount-iterations] [read-iterations]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
READS=${2:-5000}
eval "$(scripts/testenv.sh start)"
C="ctr --address $ECI_CONTAINERD"
ECI=(--runtime io.containerd.eci.v2)
RUNC=(--runtime io.containerd.runc.v2 --runc-binary "$(command -v runc)")
probe=$(mktemp -d)
gcc -static -O2 -o "$probe/probe" tests/probes/probe.c
P=(--mount "type=bind,src=$probe,dst=/probe,options=rbind:ro")
run() { local name=$1; shift; $C run --rm "$@" "$ECI_TEST_IMAGE" "$name-$$" "${CMD[@]}"; }

mount_loop() {
  CMD=(sh -c "mkdir -p /r && /probe/probe mount-bench $N /r")
  echo "-- eci";  run mnt-eci$1  "${ECI[@]}"  --privileged "${P[@]}"
  echo "-- runc"; run mnt-runc$1 "${RUNC[@]}" --privileged "${P[@]}"
}
echo "== mount -t tmpfs + umount, $N iterations, privileged container"
mount_loop ""
# A VM guest booted with haltpoll.guest_halt_poll_ns=0 halts an idle vCPU at once, and waking
# a halted vCPU costs the waker tens of microseconds; every unmount waits for an expedited RCU
# grace period whose worker sleeps on the other vCPU. Measured again with the cpuidle-haltpoll
# driver's own default (poll 200 us before halting), restored afterwards. HALTPOLL=skip skips it.
HALTPOLL_NS=/sys/module/haltpoll/parameters/guest_halt_poll_ns
if [ "${HALTPOLL:-}" != skip ] && [ -w "$HALTPOLL_NS" ] && [ "$(cat "$HALTPOLL_NS")" = 0 ]; then
  trap 'echo 0 > "$HALTPOLL_NS"' EXIT
  echo 200000 > "$HALTPOLL_NS"
  echo "== the same, guest halt-polling at 200 us (this VM boots with 0)"
  mount_loop -poll
  echo 0 > "$HALTPOLL_NS"
  trap - EXIT
fi

echo "== getpid x 2000000 (not trapped): no profile, and both with containerd's default profile"
CMD=(/probe/probe getpid-bench 2000000)
for i in 1 2 3; do
  echo -n "eci            "; run gp-eci-$i   "${ECI[@]}"  "${P[@]}"
  echo -n "runc           "; run gp-runc-$i  "${RUNC[@]}" "${P[@]}"
  echo -n "eci --seccomp  "; run gps-eci-$i  "${ECI[@]}"  --seccomp "${P[@]}"
  echo -n "runc --seccomp "; run gps-runc-$i "${RUNC[@]}" --seccomp "${P[@]}"
done

echo "== open+read+close, $READS iterations (one process: reads/s is per core)"
SPACED=$(( READS / 20 ))
CMD=(sh -c "/probe/probe read-bench $READS /proc/uptime; /probe/probe read-bench $READS /proc/meminfo; \
  echo '   spaced 11 ms apart, $SPACED reads:'; /probe/probe read-bench $SPACED /proc/uptime 11000; /probe/probe read-bench $SPACED /proc/meminfo 11000")
echo "-- eci (emulated)"; run rd-eci  "${ECI[@]}"  --memory-limit 268435456 "${P[@]}"
echo "-- runc (native)";  run rd-runc "${RUNC[@]}" --memory-limit 268435456 "${P[@]}"
if command -v lxcfs >/dev/null || (apt-get install -y -qq lxcfs >/dev/null 2>&1 && command -v lxcfs >/dev/null); then
  lx=$(mktemp -d)
  lxcfs "$lx" >/dev/null 2>&1 &
  lxpid=$!
  for _ in $(seq 50); do [ -e "$lx/proc/uptime" ] && break; sleep 0.1; done
  echo "-- runc + lxcfs"
  run rd-lxcfs "${RUNC[@]}" --memory-limit 268435456 "${P[@]}" \
    --mount "type=bind,src=$lx/proc/uptime,dst=/proc/uptime,options=rbind:ro" \
    --mount "type=bind,src=$lx/proc/meminfo,dst=/proc/meminfo,options=rbind:ro" || true
  kill $lxpid 2>/dev/null || true; sleep 0.5; umount -l "$lx" 2>/dev/null || true
else
  echo "-- lxcfs not available"
fi

echo "== sysinfo(2) x $READS (what free and uptime call)"
CMD=(/probe/probe sysinfo-bench "$READS")
echo -n "eci  "; run si-eci  "${ECI[@]}"  --memory-limit 268435456 "${P[@]}"
echo -n "runc "; run si-runc "${RUNC[@]}" --memory-limit 268435456 "${P[@]}"

echo "== per-container worker memory (one idle container)"
$C run -d "${ECI[@]}" "$ECI_TEST_IMAGE" "mem-$$" sleep 60 >/dev/null
sleep 0.5
for pat in "containerd-shim-eci-v2 .*-id mem-$$ " "containerd-shim-eci-v2 agent"; do
  for pid in $(pgrep -f "$pat"); do
    awk -v who="$pat" '/^Pss:/{p=$2} /^Rss:/{r=$2} END{printf "%-45s PSS %6.2f MiB  RSS %6.2f MiB\n", who, p/1024, r/1024}' "/proc/$pid/smaps_rollup"
  done
done
$C task kill -s SIGKILL "mem-$$" >/dev/null; sleep 0.5
$C task delete "mem-$$" >/dev/null; $C container delete "mem-$$" >/dev/null
rm -rf "$probe"
