# Sourced by testenv.sh, dockerenv.sh and crienv.sh: which containerd the test environments run.
#   ECI_CONTAINERD_BIN_DIR=/opt/eci-tools/containerd-2.4.2   # containerd, ctr, containerd-shim-runc-v2
# Default: Debian's containerd 1.6 on PATH. Sets CONTAINERD, CTR, RUNC_SHIM, CONTAINERD_MAJOR
# and CONTAINERD_VERSION (e.g. 2.4.2).
if [ -n "${ECI_CONTAINERD_BIN_DIR:-}" ]; then
  CONTAINERD=$ECI_CONTAINERD_BIN_DIR/containerd
  CTR=$ECI_CONTAINERD_BIN_DIR/ctr
  RUNC_SHIM=$ECI_CONTAINERD_BIN_DIR/containerd-shim-runc-v2
  [ -x "$RUNC_SHIM" ] || RUNC_SHIM=$(command -v containerd-shim-runc-v2)
else
  CONTAINERD=$(command -v containerd)
  CTR=$(command -v ctr)
  RUNC_SHIM=$(command -v containerd-shim-runc-v2)
fi
[ -x "$CONTAINERD" ] && [ -x "$CTR" ] || { echo "no containerd/ctr in ${ECI_CONTAINERD_BIN_DIR:-PATH}" >&2; exit 1; }
# "containerd github.com/containerd/containerd/v2 2.4.2+unknown" / "… 1.6.20~ds1 …"
CONTAINERD_VERSION=$("$CONTAINERD" --version | awk '{ sub(/^v/, "", $3); print $3 }')
CONTAINERD_MAJOR=${CONTAINERD_VERSION%%.*}
# 2.x reads config version 3 (2.4 migrates it to its 4); 1.x reads 2. The CRI plugin of 1.x
# is one plugin, in 2.x it is split in three.
if [ "$CONTAINERD_MAJOR" -ge 2 ]; then
  CONFIG_VERSION=3
  CRI_PLUGINS='"io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images"'
else
  CONFIG_VERSION=2
  CRI_PLUGINS='"io.containerd.grpc.v1.cri"'
fi
