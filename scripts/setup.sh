#!/usr/bin/env bash
# Creates or refreshes the two Python environments. Idempotent: an environment is rebuilt only when
# its requirements file changed. Usage: scripts/setup.sh [--browser]  (--browser: Debian's chromium too)
set -euo pipefail
cd "$(dirname "$0")/.."

find_python310() {
  local candidate
  for candidate in "${PYTHON310:-}" python3.10 "$(command -v pyenv >/dev/null && echo "$(pyenv root)/versions/"3.10*/bin/python3.10)" /usr/bin/python3.10 /usr/local/bin/python3.10; do
    [ -n "$candidate" ] || continue
    for c in $candidate; do
      if "$c" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then
        echo "$c"; return 0
      fi
    done
  done
  return 1
}

PY310=$(find_python310) || {
  echo "error: Python 3.10 is required (Rasa 3.6.21 supports Python 3.8-3.10) but was not found." >&2
  echo "       Install it (e.g. 'pyenv install 3.10') or set PYTHON310=/path/to/python3.10." >&2
  exit 1
}

make_env() {  # make_env <dir> <requirements file> [file of packages to install without their dependencies]
  local dir=$1 req=$2 nodeps=${3:-} want have=""
  want=$(cat "$req" ${nodeps:+"$nodeps"} | sha256sum | cut -d' ' -f1)
  [ -f "$dir/.requirements.sha256" ] && have=$(cat "$dir/.requirements.sha256")
  if [ "$want" = "$have" ] && [ -x "$dir/bin/python" ]; then
    return 0
  fi
  echo "==> creating $dir from $req (Python: $PY310)"
  rm -rf "$dir"
  "$PY310" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --upgrade pip
  "$dir/bin/python" -m pip install --quiet -r "$req"
  if [ -n "$nodeps" ]; then "$dir/bin/python" -m pip install --quiet --no-deps -r "$nodeps"; fi
  echo "$want" > "$dir/.requirements.sha256"
}

make_env .venv-rasa requirements/rasa.txt requirements/rasa-models.txt &
rasa_pid=$!
make_env .venv-app requirements/app.txt
wait "$rasa_pid"

# Debian packages: Mosquitto (make run starts its own broker when none is configured), HAProxy (the load
# balancer of make run-production), docker-compose (validates deploy/compose.yaml offline; no engine
# needed) and, for the browser tests, Chromium.
packages=()
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null || packages+=(mosquitto)
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null || packages+=(haproxy)
command -v docker-compose >/dev/null || packages+=(docker-compose)
if [ "${1:-}" = "--browser" ] && [ ! -x /usr/bin/chromium ]; then packages+=(chromium); fi
if [ "${#packages[@]}" -gt 0 ]; then
  echo "==> installing Debian's ${packages[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${packages[@]}" >/dev/null
fi
# The devices' CA and the broker's / HTTPS server certificate (var/pki, never committed): made once, reused,
# renewed when due; scripts/run_stack.py does the same at every start.
PYTHONPATH=. .venv-app/bin/python -m device_hooks.pki --dir var/pki >/dev/null
echo "==> environments ready (.venv-rasa, .venv-app); device CA var/pki/ca.crt"
