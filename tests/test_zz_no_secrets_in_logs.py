"""Runs last (file order): no key used anywhere in this test run appears in any log.

The in-process apps log at DEBUG without the scrubbing filter, and every server
process at DEBUG with it, so this checks what the code logs, not only the filter.
"""
from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import SESSION_LOGS
from tests.procs import ROOT, SERVER_LOGS

KEY_PATTERNS = [
    re.compile(r"sk-test-upstream-key-\d{4}"),   # OPENAI_API_KEY values
    re.compile(r"(?:client|admin)-key-(?:for-tests|new)-[0-9a-f]+"),  # API_KEYS / ADMIN_API_KEYS
]


def _keys_in_tests() -> set[str]:
    keys: set[str] = set()
    for path in (ROOT / "tests").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for pattern in KEY_PATTERNS:
            keys.update(pattern.findall(text))
    return keys


def test_no_key_is_ever_logged():
    keys = _keys_in_tests()
    assert len(keys) >= 5  # the patterns still find the keys the tests use
    logs = [p for p in (*SESSION_LOGS, *SERVER_LOGS) if Path(p).exists()]
    assert logs, "no logs were captured"
    leaks = []
    for path in logs:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        leaks += [(str(path), key) for key in keys if key in text]
        leaks += [(str(path), m) for m in re.findall(r"(?i)bearer\s+[A-Za-z0-9._\-]{6,}", text)]
    assert not leaks, leaks
