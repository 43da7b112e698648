# Sourced by scripts/test: make the etcd binary available for the etcd backend's
# integration tests (tests/integration/test_consensus_etcd.py), which start a
# throwaway cluster on ephemeral ports. Installs Debian's etcd-server with
# apt-get when etcd is missing and apt-get runs as root or via passwordless
# sudo; otherwise it says so and the tests skip (or fail under CI=true).
# Idempotent (nothing to do once etcd is there) and bounded (10 minutes).
ensure_etcd() {
  if command -v etcd >/dev/null 2>&1 || [[ -x /usr/bin/etcd ]]; then
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
    echo "== etcd: not installed and cannot install it ($why); etcd tests will skip" >&2
    return 0
  fi
  echo "== etcd: installing etcd-server with apt-get"
  local log
  log=$(mktemp)
  local -a apt=(timeout 600 ${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive
    apt-get -q -y -o Dpkg::Use-Pty=0)
  # A fresh machine may have no package lists yet: update once if needed.
  if ! "${apt[@]}" install --no-install-recommends etcd-server >"$log" 2>&1; then
    if ! { "${apt[@]}" update && "${apt[@]}" install --no-install-recommends etcd-server; } \
      >"$log" 2>&1; then
      echo "== etcd: apt-get failed; etcd tests will skip (last lines below)" >&2
      tail -n 5 "$log" >&2
    fi
  fi
  rm -f "$log"
}
