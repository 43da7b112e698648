# Sourced by scripts/test: make the system tools some tests need available,
# installing Debian's packages with apt-get when they are missing and apt-get
# runs as root or via passwordless sudo; otherwise it says so and those tests
# skip (or fail under CI=true). Idempotent (nothing to do once a tool is there)
# and bounded (10 minutes per package).
#   etcd   (etcd-server): the etcd backend's tests start throwaway clusters
#   nft    (nftables):    the nemesis suite's network partition
#   ip, ss (iproute2):    the nemesis suite checks no socket escapes a partition
#   prometheus, promtool (prometheus): deploy/prometheus against a live mesh
#   node, npm (nodejs, npm): the Node.js and TypeScript clients in examples/

# ensure_tool COMMAND PACKAGE
ensure_tool() {
  local command="$1" package="$2"
  if command -v "$command" >/dev/null 2>&1 || [[ -x "/usr/bin/$command" || -x "/usr/sbin/$command" ]]; then
    return 0
  fi
  local why=""
  local -a as_root=()
  if ! command -v apt-get >/dev/null 2>&1; then
    why="no apt-get"
  elif [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      as_root=(sudo -n)
    else
      why="apt-get needs root or passwordless sudo"
    fi
  fi
  if [[ -n "$why" ]]; then
    echo "== $package: not installed and cannot install it ($why); its tests will skip" >&2
    return 0
  fi
  echo "== $package: installing with apt-get"
  local log
  log=$(mktemp)
  local -a apt=(timeout 600 ${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive
    apt-get -q -y -o Dpkg::Use-Pty=0)
  # A fresh machine may have no package lists yet: update once if needed.
  if ! "${apt[@]}" install --no-install-recommends "$package" >"$log" 2>&1; then
    if ! { "${apt[@]}" update && "${apt[@]}" install --no-install-recommends "$package"; } \
      >"$log" 2>&1; then
      echo "== $package: apt-get failed; its tests will skip (last lines below)" >&2
      tail -n 5 "$log" >&2
    fi
  fi
  rm -f "$log"
}

ensure_system_tools() {
  ensure_tool etcd etcd-server
  ensure_tool nft nftables
  ensure_tool ss iproute2
  ensure_tool prometheus prometheus
  ensure_tool node nodejs
  ensure_tool npm npm
}
