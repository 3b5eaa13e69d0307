#!/usr/bin/env bash
# The Docker image's entry point: build the knowledge base when DATA_DIR holds no document
# yet (a fresh volume), then become the server. `docker run … shenlun-backend ARGS` passes
# ARGS to server.py. Outside Docker, SHENLUN_PYTHON names the interpreter (the tests do so).
#
# --if-empty makes the import run once per volume: documents added through the API, and a
# base an operator built with scripts/reindex.py, are never imported over. docker-compose.yml
# starts server-2 and server-3 once server-1 is healthy, so only server-1 builds.
set -euo pipefail
ROOT="$(cd -P "$(dirname "$0")/.." && pwd)"
PY="${SHENLUN_PYTHON:-python}"
cd "$ROOT"
"$PY" scripts/reindex.py --if-empty
# exec: the server replaces this shell, so `docker stop`'s SIGTERM reaches it and it drains.
exec "$PY" server.py "$@"
