"""The secrets-in-logs check run when the test session ends (tests/conftest.py's
pytest_sessionfinish): no key used anywhere in the tests appears in any log written
during the session.

The in-process apps log at DEBUG without the scrubbing filter and every server process
at DEBUG with it, so this checks what the code logs, not only the filter. It must not pass
by reading nothing: when servers or in-process apps ran, their logs must have been read.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

TESTS = Path(__file__).resolve().parent
KEY_PATTERNS = [
    re.compile(r"sk-test-upstream-key-\d{4}"),   # OPENAI_API_KEY values
    re.compile(r"(?:client|admin)-key-(?:for-tests|new)-[0-9a-f]+"),  # API_KEYS / ADMIN_API_KEYS
]
BEARER = re.compile(r"(?i)bearer\s+[A-Za-z0-9._\-]{6,}")


def keys_in_tests(root: Path = TESTS) -> set[str]:
    """Every key the tests use (found by KEY_PATTERNS in their source)."""
    keys: set[str] = set()
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for pattern in KEY_PATTERNS:
            keys.update(pattern.findall(text))
    return keys


@dataclass
class Scan:
    logs: list[Path] = field(default_factory=list)
    size: int = 0
    leaks: list[tuple[str, str]] = field(default_factory=list)  # (log, what leaked)


def scan(paths: Iterable[Path], keys: set[str]) -> Scan:
    """Read each log once; every key or bearer token found in one is a leak."""
    result = Scan()
    for path in sorted({p.resolve() for p in paths if p.is_file()}):
        text = path.read_text(encoding="utf-8", errors="replace")
        result.logs.append(path)
        result.size += len(text)
        result.leaks += [(str(path), key) for key in sorted(keys) if key in text]
        result.leaks += [(str(path), token) for token in BEARER.findall(text)]
    return result


def problems(result: Scan, keys: set[str], *, server_logs: list[Path], session_log: Path | None,
             apps_built: int) -> list[str]:
    """What is wrong with this session's logs: leaks, or a check that read nothing it should have."""
    found = [f"{what!r} in {log}" for log, what in result.leaks]
    if len(keys) < 5:
        found.append(f"KEY_PATTERNS found only {len(keys)} keys in tests/: the patterns no longer match the tests")
    read = set(result.logs)
    for path in server_logs:
        if path.resolve() not in read or not path.stat().st_size:
            found.append(f"server log {path} was not read or is empty")
    if apps_built and (session_log is None or session_log.resolve() not in read or not session_log.stat().st_size):
        found.append(f"{apps_built} in-process apps ran but the session log {session_log} is empty or unread")
    return found
