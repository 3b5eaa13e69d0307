#!/usr/bin/env bash
# Set up everything the tests need, run ruff and mypy, then the whole suite. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
bash scripts/bootstrap.sh --test
# Lint and types first (seconds, not minutes): any finding fails the run. Config: ruff.toml, setup.cfg [mypy].
"$ROOT/.venv/bin/ruff" check .
"$ROOT/.venv/bin/mypy"
# The fleet tests run a real Nginx: install it when missing (as root, quietly; CI is root).
bash scripts/install_nginx.sh || echo "==> Nginx missing: tests/test_fleet.py is skipped (and fails when CI is set)" >&2
# The Redis-backend tests start their own redis-server on a loopback port: install it when missing.
bash scripts/install_redis.sh || echo "==> redis-server missing: the Redis-backend tests are skipped (and fail when CI is set)" >&2
# The console's browser tests drive Debian's chromium through Playwright (never `playwright install`).
bash scripts/install_debian_package.sh chromium chromium || echo "==> chromium missing: tests/test_console.py is skipped (and fails when CI is set)" >&2
# The TLS test of the libcurl transport makes a self-signed certificate with openssl.
bash scripts/install_debian_package.sh openssl openssl || echo "==> openssl missing: the TLS transport test is skipped (and fails when CI is set)" >&2
exec "$ROOT/.venv/bin/python" -m pytest "$@"
