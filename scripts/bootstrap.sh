#!/usr/bin/env bash
# Create .venv and install the Python dependencies when setup.cfg changed since the
# last install. Sourced by run.sh and test.sh; `--test` adds the test extra.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
extra="${1:-}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed${extra:+-test}"
want="$(sha256sum "$ROOT/setup.cfg" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing Python dependencies"
  "$VENV/bin/python" "$ROOT/scripts/deps.py" $extra > "$VENV/requirements.txt"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$VENV/requirements.txt"
  echo "$want" > "$stamp"
fi
