# Sourced by scripts/run and scripts/test: create .venv and install from constraints.txt.
# Usage: ensure_venv EXTRAS   (EXTRAS is "" or "[dev]")
ensure_venv() {
  local extras="$1"
  if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
  fi
  # Reinstall only when the dependency definitions changed since the last install.
  local stamp=".venv/.praxis-installed${extras}"
  local digest
  digest=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$digest" ]]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
      -c constraints.txt -e ".${extras}"
    echo "$digest" > "$stamp"
  fi
}
