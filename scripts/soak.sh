#!/usr/bin/env bash
# Soak and fault suite, for ECI and (beside it, in the same run) the runc shim:
#   1. SEQ sequential runs, a mix of plain, privileged (tmpfs mount + unmount), exec, and bind
#      mount work;
#   2. PAR parallel run + exec + kill + delete;
#   3. kill -9 of the shim, the create helper (mid-create: ECI only), the mount agent (ECI
#      only), the container's init, and containerd itself.
# Each phase is followed by an account of what the host holds for this run's containers: host
# mounts, ID lease files, cgroup directories, shim processes, zombies, containerd's fds, the
# shims' sockets, /run/containerd-shim-eci entries and containerd's containers. It must equal
# the account taken before the phase, or the suite fails.
#   sudo scripts/soak.sh [SEQ] [PAR]          # defaults 50 20: the CI run (a few minutes)
#   SOAK_RUNTIMES="eci" scripts/soak.sh …     # ECI only (default: "eci runc")
# Runs on the newest containerd, 2.4.2 from /opt/eci-tools, whatever ECI_CONTAINERD_BIN_DIR
# says (scripts/test.sh leaves the last matrix entry's there); SOAK_CONTAINERD_BIN_DIR names
# another ("system": Debian's 1.6 on PATH). Its private containerd (scripts/testenv.sh, started
# if needed) has a root of its own, SOAK_ROOT (default /tmp/eci-soak-<containerd dir name>),
# never ECI_TEST_ROOT's; and a containerd namespace of its own; every container id starts with
# this run's prefix, so other users of the machine are never counted.
set -euo pipefail
cd "$(dirname "$0")/.."
SEQ=${1:-50}
PAR=${2:-20}
RUNTIMES=${SOAK_RUNTIMES:-eci runc}
SOAK_CONTAINERD=${SOAK_CONTAINERD_BIN_DIR:-/opt/eci-tools/containerd-2.4.2}
if [ "$SOAK_CONTAINERD" = system ]; then
  unset ECI_CONTAINERD_BIN_DIR
  SOAK_CONTAINERD=$(dirname "$(command -v containerd)")
else
  [ -x "$SOAK_CONTAINERD/containerd" ] || {
    echo "soak: no containerd in $SOAK_CONTAINERD (scripts/install-go-tools.sh installs it; SOAK_CONTAINERD_BIN_DIR=system runs Debian's)" >&2
    exit 1
  }
  export ECI_CONTAINERD_BIN_DIR=$SOAK_CONTAINERD
fi
export ECI_TEST_ROOT=${SOAK_ROOT:-/tmp/eci-soak-$(basename "$SOAK_CONTAINERD")}
eval "$(scripts/testenv.sh start)"
SOCK=$ECI_CONTAINERD
ROOT=$ECI_TEST_ROOT
IMG=$ECI_TEST_IMAGE
NS=eci-soak
P=sk$$
BASE=/run/containerd-shim-eci
RUNC_BIN=${RUNC_BIN:-$(command -v runc || echo /usr/sbin/runc)}
SHIM=$PWD/target/release/containerd-shim-eci-v2
C=(ctr --address "$SOCK" -n "$NS")
W=$(mktemp -d /tmp/eci-soak.XXXXXX)
mkdir -p "$W/shared"
: > "$W/ids"
: > "$W/sockets"
trap 'rm -rf "$W"' EXIT

rt_args() { # runtime → ctr run flags
  case $1 in
    eci) echo "--runtime io.containerd.eci.v2" ;;
    runc) echo "--runtime io.containerd.runc.v2 --runc-binary $RUNC_BIN" ;;
  esac
}
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# Phases run in subshells (their output is captured): failures are counted in a file.
# runc's shim is the reference: its differences are reported, not failures of the suite.
CUR_RT=eci
fail() {
  if [ "$CUR_RT" = runc ]; then echo "runc (reference, not a failure): $*" >&2; return 0; fi
  echo "FAIL: $*" >&2; echo x >> "$W/failures"
}
ctrd_pid() { cat "$ROOT/containerd.pid"; }
# Every id used, and the socket containerd expects its shim at (hashed once, here).
id_of() { local id="$P-$1"; note_id "$id"; echo "$id"; }
note_id() {
  echo "$1" >> "$W/ids"
  echo "/run/containerd/s/$(printf %s "$SOCK/$NS/$1" | sha256sum | cut -c1-64)" >> "$W/sockets"
}

# The image, in this run's namespace.
if ! "${C[@]}" images ls -q | grep -qx "$IMG"; then
  ctr --address "$SOCK" images export "$W/image.tar" "$IMG" >/dev/null
  "${C[@]}" images import "$W/image.tar" >/dev/null
  rm -f "$W/image.tar"
fi

shim_pids() { pgrep -f "containerd-shim-(eci|runc)-v2 .*-id $P-" || true; }

account() {
  local shims ctrd
  shims=$(shim_pids | tr '\n' ' ')
  ctrd=$(ctrd_pid)
  echo "mounts $(grep -c -- "$P-" /proc/self/mountinfo || true)"
  # A deleted task's block stays parked for its container until the next allocation or a
  # sweep frees it (issue 14); the sweep frees those of containers that no longer exist, so
  # what is left after it is what leaked.
  "$SHIM" leases sweep >/dev/null 2>&1 || true
  echo "leases $(grep -l -- "\"container\":\"$P-" "$BASE"/leases/* 2>/dev/null | wc -l)"
  echo "cgroups $(find /sys/fs/cgroup -maxdepth 8 -type d -path "*/$P-*" 2>/dev/null | wc -l)"
  echo "shims $(echo "$shims" | wc -w)"
  # Zombies of our shims and containerd, and any left with a dead shim's name on them.
  echo "zombies $(ps -eo stat=,ppid= | awk -v p=" $shims $ctrd " '$1 ~ /^Z/ && index(p, " " $2 " ") {n++} END {print n+0}')"
  echo "containerd-fds $(ls "/proc/$ctrd/fd" | wc -l)"
  echo "eci-state $(find "$BASE" -path "*$P-*" 2>/dev/null | wc -l)"
  echo "stale-fd-sockets $(for s in "$BASE"/sockets/*.sock; do [ -e "$s" ] || continue; o=${s##*/}; o=${o%%-*}; [ -d /proc/$o ] || echo; done | wc -l)"
  echo "shim-sockets $(sort -u "$W/sockets" | while read -r s; do [ -e "$s" ] && echo; done | wc -l)"
  echo "containers $("${C[@]}" containers ls -q | grep -c -- "^$P-" || true)"
}

# Wait (up to 20 s) until the account equals $1; else report the difference.
settle() {
  local want=$1 what=$2 got
  for _ in $(seq 100); do
    got=$(account)
    [ "$got" = "$want" ] && return 0
    sleep 0.2
  done
  fail "$what: the host holds more (or less) than before"
  diff <(echo "$want") <(echo "$got") | sed 's/^/    /' >&2 || true
  return 0
}

remove() { # id
  "${C[@]}" task kill -s SIGKILL "$1" >/dev/null 2>&1 || true
  for _ in $(seq 100); do
    "${C[@]}" task ls 2>/dev/null | awk -v id="$1" '$1 == id {print $3}' | grep -q RUNNING || break
    sleep 0.05
  done
  "${C[@]}" task delete "$1" >/dev/null 2>&1 || true
  "${C[@]}" containers delete "$1" >/dev/null 2>&1 || true
}

# One sequential run of kind $2 under runtime $1; exits non-zero when the container misbehaved.
one_run() {
  local rt=$1 kind=$2 id=$3 out
  case $kind in
    plain)
      out=$("${C[@]}" run --rm $(rt_args "$rt") "$IMG" "$id" sh -c 'echo plain') || return 1
      [ "$out" = plain ] ;;
    privileged)
      out=$("${C[@]}" run --rm --privileged $(rt_args "$rt") "$IMG" "$id" \
        sh -c 'mkdir -p /tmp/m && mount -t tmpfs t /tmp/m && echo x > /tmp/m/f && umount /tmp/m && echo ok') || return 1
      [ "$out" = ok ] ;;
    exec)
      "${C[@]}" run -d $(rt_args "$rt") "$IMG" "$id" sleep 60 >/dev/null || return 1
      out=$("${C[@]}" task exec --exec-id e "$id" sh -c 'echo exec') || { remove "$id"; return 1; }
      remove "$id"
      [ "$out" = exec ] ;;
    mount)
      out=$("${C[@]}" run --rm --mount "type=bind,src=$W/shared,dst=/shared,options=rbind:rw" \
        $(rt_args "$rt") "$IMG" "$id" sh -c "echo $id > /shared/$id && cat /shared/$id && rm /shared/$id") || return 1
      [ "$out" = "$id" ] ;;
  esac
}

sequential() { # runtime → "total_s median_ms"
  local rt=$1 kinds=(plain privileged exec mount) t0 t1 i kind bad=0
  : > "$W/seq-$rt"
  for i in $(seq "$SEQ"); do
    kind=${kinds[$((i % 4))]}
    t0=$(now_ms)
    one_run "$rt" "$kind" "$(id_of "$rt-seq-$i")" >/dev/null 2>"$W/err" || { bad=$((bad + 1)); fail "$rt sequential run $i ($kind): $(head -c 300 "$W/err")"; }
    t1=$(now_ms)
    echo $((t1 - t0)) >> "$W/seq-$rt"
  done
  sort -n "$W/seq-$rt" | awk -v bad=$bad '{a[NR]=$1; s+=$1} END {printf "%.1f s, median %d ms/run, %d failed", s/1000, a[int((NR+1)/2)], bad}'
}

parallel() { # runtime → wall seconds
  local rt=$1 t0 i
  t0=$(now_ms)
  for i in $(seq "$PAR"); do
    (
      id=$P-$rt-par-$i
      "${C[@]}" run -d $(rt_args "$rt") "$IMG" "$id" sleep 60 >/dev/null &&
      [ "$("${C[@]}" task exec --exec-id e "$id" echo par)" = par ] || echo "$id" >> "$W/par-bad"
      remove "$id"
    ) 2>>"$W/par-err" &
    note_id "$P-$rt-par-$i"
  done
  wait
  local bad=0
  [ -f "$W/par-bad" ] && bad=$(wc -l < "$W/par-bad") && rm -f "$W/par-bad"
  [ "$bad" = 0 ] || fail "$rt parallel: $bad of $PAR failed: $(head -c 300 "$W/par-err")"
  echo "$(( $(now_ms) - t0 )) $bad" | awk '{printf "%.2f s wall, %d failed", $1/1000, $2}'
}

task_pid() { "${C[@]}" task ls | awk -v id="$1" '$1 == id {print $2}'; }
task_status() { "${C[@]}" task ls | awk -v id="$1" '$1 == id {print $3}'; }
wait_status() { # id status
  for _ in $(seq 200); do [ "$(task_status "$1")" = "$2" ] && return 0; sleep 0.05; done
  return 1
}
shim_of() { pgrep -f "containerd-shim-(eci|runc)-v2 .*-id $1( |\$)" | head -1; }

fault_shim() {
  local rt=$1 id; id=$(id_of "$rt-f-shim")
  "${C[@]}" run -d $(rt_args "$rt") "$IMG" "$id" sleep 60 >/dev/null
  kill -9 "$(shim_of "$id")"
  # containerd notices the dead shim, runs `shim delete` and reports the task stopped.
  wait_status "$id" STOPPED || [ -z "$(task_status "$id")" ] || fail "$rt kill shim: task is $(task_status "$id")"
  remove "$id"
}

fault_init() {
  local rt=$1 id; id=$(id_of "$rt-f-init")
  "${C[@]}" run -d $(rt_args "$rt") "$IMG" "$id" sleep 60 >/dev/null
  kill -9 "$(task_pid "$id")"
  wait_status "$id" STOPPED || fail "$rt kill init: task is $(task_status "$id")"
  remove "$id"
}

fault_agent() {
  local id agent out; id=$(id_of "eci-f-agent")
  "${C[@]}" run -d --privileged $(rt_args eci) "$IMG" "$id" sh -c 'mkdir -p /tmp/m; mount -t tmpfs t /tmp/m; sleep 60' >/dev/null
  for _ in $(seq 100); do
    agent=$(pgrep -P "$(shim_of "$id")" -f "containerd-shim-eci-v2 agent" | head -1 || true)
    [ -n "$agent" ] && break; sleep 0.05
  done
  [ -n "$agent" ] || { fail "eci kill agent: no agent started"; remove "$id"; return; }
  kill -9 "$agent"
  # The first mount operation after the agent's death is served by a new agent.
  out=$("${C[@]}" task exec --exec-id e "$id" sh -c 'umount /tmp/m && echo ok' 2>&1) || true
  [ "$out" = ok ] || fail "eci kill agent: umount after the agent died said: $out"
  remove "$id"
}

fault_helper() {
  # The helper lives for tens of milliseconds: watch for it and kill it as soon as it exists.
  local id helper t0 code=0 out; id=$(id_of "eci-f-helper")
  t0=$(now_ms)
  ( timeout 60 "${C[@]}" run -d $(rt_args eci) "$IMG" "$id" sleep 60 >/dev/null 2>"$W/helper-err"; echo $? > "$W/helper-rc" ) &
  for _ in $(seq 2000); do
    helper=$(pgrep -f "containerd-shim-eci-v2 helper create $id\$" | head -1 || true)
    [ -n "$helper" ] && { kill -9 "$helper" 2>/dev/null || true; break; }
  done
  wait
  code=$(cat "$W/helper-rc")
  if [ -z "$helper" ]; then
    echo "(helper not caught)" >&2
  elif [ "$code" = 124 ]; then
    fail "eci kill helper: create hung (ctr timed out after 60 s)"
  elif [ "$code" = 0 ]; then
    echo "(helper killed after it answered)" >&2
  else
    out=$(cat "$W/helper-err")
    case $out in *helper*) ;; *) fail "eci kill helper: create failed without naming the helper: $out" ;; esac
  fi
  echo "$(( $(now_ms) - t0 ))" > "$W/helper-ms"
  remove "$id"
}

fault_exec_helper() {
  # A terminal exec's helper killed between its fork and its answer, deterministically: its
  # first child freezes on joining the paused container's cgroup, the helper is stopped, the
  # container thawed, and once the process runs the helper is killed. The exec must fail
  # naming the helper, and its process (which ignores SIGHUP) must end.
  local id shim helper child out mark=4749
  id=$(id_of "eci-f-exechelper")
  "${C[@]}" run -d $(rt_args eci) "$IMG" "$id" sleep 60 >/dev/null
  shim=$(shim_of "$id")
  "${C[@]}" task pause "$id"
  ( timeout 60 script -qec "${C[*]} task exec -t --exec-id e $id sh -c \"trap '' HUP; exec sleep $mark\"" /dev/null \
      > "$W/exec-helper-out" 2>&1 ) &
  for _ in $(seq 400); do
    helper=$(pgrep -P "$shim" -f "containerd-shim-eci-v2 helper .*exec-e\.json" | head -1 || true)
    [ -n "$helper" ] && child=$(pgrep -P "$helper" | head -1 || true)
    [ -n "${child:-}" ] && grep -q "$id" "/proc/$child/cgroup" 2>/dev/null && break
    sleep 0.05
  done
  if [ -z "${child:-}" ]; then
    fail "eci kill exec helper: no helper caught"; "${C[@]}" task resume "$id"; wait; remove "$id"; return
  fi
  # Until the helper has let its first child go and waits on the child's report (a read on
  # its seqpacket channel; the 10 s of this loop were spent in full when it looked for a pipe).
  for _ in $(seq 200); do grep -qE "skb_wait_for_more_packets|skb_recv" "/proc/$helper/wchan" 2>/dev/null && break; sleep 0.05; done
  kill -STOP "$helper"
  "${C[@]}" task resume "$id"
  for _ in $(seq 200); do pgrep -x -f "sleep $mark" >/dev/null && break; sleep 0.05; done
  kill -9 "$helper"
  wait
  out=$(tr -d '\r' < "$W/exec-helper-out")
  case $out in *"exec helper"*SIGKILL*) ;; *) fail "eci kill exec helper: the exec said: $out" ;; esac
  for _ in $(seq 100); do pgrep -x -f "sleep $mark" >/dev/null || break; sleep 0.05; done
  if pgrep -x -f "sleep $mark" >/dev/null; then
    fail "eci kill exec helper: its process survived"; kill -9 $(pgrep -x -f "sleep $mark") 2>/dev/null || true
  fi
  remove "$id"
}

fault_containerd() {
  local ids=() rt id
  for rt in $RUNTIMES; do
    id=$(id_of "$rt-f-ctrd"); ids+=("$id")
    "${C[@]}" run -d $(rt_args "$rt") "$IMG" "$id" sleep 60 >/dev/null
  done
  kill -9 "$(ctrd_pid)"
  sleep 0.5
  eval "$(scripts/testenv.sh start)" >/dev/null
  for id in "${ids[@]}"; do
    wait_status "$id" RUNNING || fail "kill containerd: $id is $(task_status "$id") after the restart"
    [ "$("${C[@]}" task exec --exec-id e "$id" echo up 2>&1)" = up ] || fail "kill containerd: exec in $id failed after the restart"
    remove "$id"
  done
}

phase() { # name command…: run it between two accounts
  local name=$1; shift
  local before t0 result
  before=$(account)
  t0=$(now_ms)
  result=$("$@")
  settle "$before" "$name"
  printf '  %-34s %s (%d ms)\n' "$name" "$result" $(( $(now_ms) - t0 ))
}

# A first container of each runtime, so that what containerd creates once (namespace
# directories, plugin state) is in the baseline.
for rt in $RUNTIMES; do
  "${C[@]}" run --rm $(rt_args "$rt") "$IMG" "$(id_of "$rt-warm")" true >/dev/null
done
sleep 1

echo "soak: $SEQ sequential, $PAR parallel, every fault once; runtimes: $RUNTIMES; containerd $(ctr --address "$SOCK" version | awk '/Server/{s=1} s && /Version/{print $2; exit}') ($SOAK_CONTAINERD/containerd, root $ROOT)"
for rt in $RUNTIMES; do
  CUR_RT=$rt
  echo "$rt:"
  phase "sequential x$SEQ" sequential "$rt"
  phase "parallel x$PAR" parallel "$rt"
  phase "kill -9 shim" fault_shim "$rt"
  phase "kill -9 init" fault_init "$rt"
  if [ "$rt" = eci ]; then
    phase "kill -9 agent" fault_agent
    phase "kill -9 helper (mid-create)" fault_helper
    phase "kill -9 exec helper (tty, after fork)" fault_exec_helper
  fi
done
CUR_RT=eci
# containerd's own fds start over with the new process: re-measured after one clean run.
before=$(account | grep -v '^containerd-fds')
t0=$(now_ms)
fault_containerd
for rt in $RUNTIMES; do "${C[@]}" run --rm $(rt_args "$rt") "$IMG" "$(id_of "$rt-after")" true >/dev/null; done
after=$(account | grep -v '^containerd-fds')
[ "$before" = "$after" ] || { fail "kill -9 containerd"; diff <(echo "$before") <(echo "$after") | sed 's/^/    /' >&2 || true; }
printf '  %-34s %s (%d ms)\n' "kill -9 containerd (all runtimes)" "done" $(( $(now_ms) - t0 ))
fds=$(account | awk '/^containerd-fds/{print $2}')
"${C[@]}" run --rm $(rt_args eci) "$IMG" "$(id_of eci-after2)" true >/dev/null
sleep 1
[ "$fds" = "$(account | awk '/^containerd-fds/{print $2}')" ] || fail "the restarted containerd's fds grew over one run"

# No failures file is no failure (a plain `cat` of it would end the run under pipefail).
failures=0
[ -f "$W/failures" ] && failures=$(wc -l < "$W/failures")
if [ "$failures" -gt 0 ]; then
  echo "soak: $failures failure(s)"
  exit 1
fi
echo "soak: nothing leaked"
