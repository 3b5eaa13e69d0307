#!/usr/bin/env bash
# Set up and run 申论助手 on this machine.
#   scripts/run.sh          one instance on $PORT (default 5001)
#   scripts/run.sh fleet    supervisord fleet server-1..N (INSTANCES, default 3) behind Nginx
#                           on NGINX_PORT (default 8080); returns once every instance answers
#   scripts/run.sh stop     stop Nginx and the fleet (scripts/fleet.sh has status and more)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
bash scripts/bootstrap.sh
PY="$ROOT/.venv/bin/python"

case "${1:-single}" in
  single|fleet)
    # First run: build the knowledge base from the bundled corpus (data/knowledge/);
    # nothing happens once the document store holds documents.
    "$PY" scripts/reindex.py --if-empty
    ;;
esac

case "${1:-single}" in
  single)
    exec "$PY" server.py
    ;;
  fleet)
    exec bash scripts/fleet.sh start
    ;;
  stop)
    exec bash scripts/fleet.sh stop
    ;;
  *)
    echo "usage: scripts/run.sh [single|fleet|stop]" >&2
    exit 2
    ;;
esac
