#!/usr/bin/env bash
# Start-to-exit time of `ctr run --rm IMAGE c true` under ECI and under the runc shim,
# interleaved in one run, and PSS/RSS per shim process over idle containers.
#   sudo bench/startup-and-memory.sh [runs] [idle]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-20}
IDLE=${2:-10}
# The containerd of ECI_CONTAINERD_BIN_DIR (default Debian's), its own ctr and runc shim, and
# runc 1.5 from scripts/install-go-tools.sh as the baseline when present (ECI_RUNC to choose).
eval "$(scripts/testenv.sh start)"
C="${ECI_CTR:-ctr} --address $ECI_CONTAINERD"
RUNC_BIN=${ECI_RUNC:-$( [ -x /opt/eci-tools/runc-1.5.3/runc ] && echo /opt/eci-tools/runc-1.5.3/runc || command -v runc)}
echo "containerd $($C version | awk '/^Server:/ { s = 1 } s && $1 == "Version:" { print $2; exit }'), runc $("$RUNC_BIN" --version | head -1 | awk '{print $3}')" >&2
ECI=(--runtime io.containerd.eci.v2)
RUNC=(--runtime io.containerd.runc.v2 --runc-binary "$RUNC_BIN")
out=$(mktemp -d)

now() { date +%s%N; }
for i in $(seq "$RUNS"); do
  for rt in eci runc; do
    if [ $rt = eci ]; then args=("${ECI[@]}"); else args=("${RUNC[@]}"); fi
    t0=$(now); $C run --rm "${args[@]}" "$ECI_TEST_IMAGE" "bench-$rt-$$-$i" true; t1=$(now)
    echo $(( (t1 - t0) / 1000 )) >> "$out/$rt"
  done
done

shim_mem() { # pattern → "pss_kb rss_kb" per process
  for pid in $(pgrep -f "$1"); do
    awk '/^Pss:/{p=$2} /^Rss:/{r=$2} END{print p, r}' "/proc/$pid/smaps_rollup"
  done
}
for rt in eci runc; do
  if [ $rt = eci ]; then args=("${ECI[@]}"); else args=("${RUNC[@]}"); fi
  for i in $(seq "$IDLE"); do $C run -d "${args[@]}" "$ECI_TEST_IMAGE" "idle-$rt-$$-$i" sleep 600 >/dev/null; done
done
sleep 1
shim_mem "containerd-shim-eci-v2 .*-id idle-eci-$$-" > "$out/mem-eci"
shim_mem "containerd-shim-runc-v2 .*-id idle-runc-$$-" > "$out/mem-runc"
for rt in eci runc; do
  for i in $(seq "$IDLE"); do
    $C task kill -s SIGKILL "idle-$rt-$$-$i" >/dev/null 2>&1 || true
  done
done
sleep 1
for rt in eci runc; do
  for i in $(seq "$IDLE"); do
    $C task delete "idle-$rt-$$-$i" >/dev/null 2>&1 || true
    $C container delete "idle-$rt-$$-$i" >/dev/null 2>&1 || true
  done
done

python3 - "$out" "$RUNS" "$IDLE" <<'PY'
import sys, statistics
out, runs, idle = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def load(name):
    return sorted(int(x) for x in open(f"{out}/{name}").read().split())
def pct(xs, p):
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]
eci, runc = load("eci"), load("runc")
print(f"ctr run --rm IMAGE c true, {runs} interleaved runs each (ms)")
print(f"  {'runtime':<24}{'median':>8}{'p95':>8}")
for name, xs in (("io.containerd.eci.v2", eci), ("io.containerd.runc.v2", runc)):
    print(f"  {name:<24}{statistics.median(xs)/1000:8.1f}{pct(xs, 95)/1000:8.1f}")
print(f"  ratio eci/runc: median {statistics.median(eci)/statistics.median(runc):.2f}, p95 {pct(eci,95)/pct(runc,95):.2f}")
print(f"shim memory over {idle} idle containers (MiB per shim process)")
for name, f in (("containerd-shim-eci-v2", "mem-eci"), ("containerd-shim-runc-v2", "mem-runc")):
    rows = [tuple(map(int, l.split())) for l in open(f"{out}/{f}") if l.strip()]
    if rows:
        pss = statistics.mean(r[0] for r in rows) / 1024
        rss = statistics.mean(r[1] for r in rows) / 1024
        print(f"  {name:<24} processes {len(rows):3d}  PSS {pss:6.2f}  RSS {rss:6.2f}")
PY
rm -rf "$out"
