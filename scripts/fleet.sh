#!/usr/bin/env bash
# The fleet: supervisord running server-1..N, and Nginx in front of it.
#   scripts/fleet.sh start | stop | status | rolling-restart | reload-nginx | ctl ARGS…
# (scripts/run.sh fleet / scripts/run.sh stop call start / stop.) See scripts/fleet.py.
set -euo pipefail
ROOT="$(cd -P "$(dirname "$0")/.." && pwd)"
PY="${SHENLUN_PYTHON:-$ROOT/.venv/bin/python}"
if [ ! -x "$PY" ]; then
  bash "$ROOT/scripts/bootstrap.sh"
  PY="$ROOT/.venv/bin/python"
fi
exec "$PY" "$ROOT/scripts/fleet.py" "$@"
