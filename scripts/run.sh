#!/usr/bin/env bash
# Set up and run 申论助手 on this machine.
#   scripts/run.sh          one instance on $PORT (default 5001)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
bash scripts/bootstrap.sh
PY="$ROOT/.venv/bin/python"

case "${1:-single}" in
  single)
    exec "$PY" server.py
    ;;
  *)
    echo "usage: scripts/run.sh" >&2
    exit 2
    ;;
esac
