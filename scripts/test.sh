#!/usr/bin/env bash
# Set up everything the tests need and run the whole suite. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
bash scripts/bootstrap.sh --test
exec "$ROOT/.venv/bin/python" -m pytest "$@"
