#!/usr/bin/env bash
# One instance of the fleet, as supervisord starts it: `scripts/instance.sh N` runs
# server-N on port BASE_PORT+N (BASE_PORT defaults to 5000, so server-1 is on 5001).
# supervisord cannot do arithmetic in its config, hence this wrapper; it `exec`s the
# server so supervisord's SIGTERM reaches Python directly and the drain runs.
set -euo pipefail
n="${1:-}"
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
exec "$PY" server.py
