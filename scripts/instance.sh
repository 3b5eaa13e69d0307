#!/usr/bin/env bash
# One instance of the fleet, as supervisord starts it: `scripts/instance.sh N` runs
# server-N on port BASE_PORT+N (BASE_PORT defaults to 5000, so server-1 is on 5001).
# supervisord cannot do arithmetic in its config, hence this wrapper. It `exec`s
# scripts/stop_guard.py, which runs the server and, on supervisord's SIGTERM, passes it on
# (the drain runs) once another instance answers or none is on its way back.
#
# Settings: supervisord's environment, then the fleet's .env file (beside supervisord.conf,
# KEY=VALUE lines, # comments), read again at every start of the instance. So a setting such
# as API_KEYS changes without restarting supervisord: edit .env, then restart the instances
# one after another (docs/deployment.md). The fleet's shape (INSTANCES, BASE_PORT, PORT,
# SERVER_ID) is not taken from it: Nginx and the other instances must agree on it.
set -euo pipefail
n="${1:-}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"   # where supervisord.conf is (a test's copy too)
if [ -f "$HERE/.env" ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in ''|'#'*) continue ;; esac
    key="${line%%=*}" value="${line#*=}"
    case "$key" in
      INSTANCES|BASE_PORT|PORT|SERVER_ID) echo "instance.sh: $key in $HERE/.env ignored (the fleet's shape)" >&2 ;;
      ''|*[!A-Za-z0-9_]*) echo "instance.sh: $HERE/.env: not KEY=VALUE, ignored: ${key:0:40}" >&2 ;;
      *) value="${value%\"}" value="${value#\"}"; export "$key=$value" ;;
    esac
  done < "$HERE/.env"
fi
base="${BASE_PORT:-5000}"
case "$n" in ''|*[!0-9]*) echo "usage: scripts/instance.sh N   (N = 1, 2, …)" >&2; exit 2 ;; esac
case "$base" in ''|*[!0-9]*) echo "配置错误 / configuration error: BASE_PORT='$base': must be a whole number" >&2; exit 2 ;; esac

# -P: resolve symlinks, so a copy of supervisord.conf next to a symlinked scripts/
# (as the tests do) still runs this checkout's server.py.
ROOT="$(cd -P "$(dirname "$0")/.." && pwd)"
PY="${SHENLUN_PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"

export PORT=$((10#$base + 10#$n)) SERVER_ID="server-$((10#$n))"
# Behind Nginx on this machine: instances answer on loopback only, unless told otherwise.
export BIND_ADDRESS="${BIND_ADDRESS:-127.0.0.1}"
cd "$ROOT"
exec "$PY" scripts/stop_guard.py server.py
