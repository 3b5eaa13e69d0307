"""The session-end secrets check itself (tests/log_secrets.py) finds what it must.

Its sample logs are .txt files: the real check scans every *.log of the session."""
from __future__ import annotations

from tests.log_secrets import keys_in_tests, problems, scan

KEY = "sk-test-upstream-key-0001"


def test_a_key_or_a_bearer_token_in_any_log_is_a_problem(tmp_path):
    clean, leaky = tmp_path / "clean.txt", tmp_path / "leaky.txt"
    clean.write_text("GET /health 200 1.2ms\n")
    leaky.write_text(f"calling upstream with {KEY}\nAuthorization: Bearer abcdef123456\n")
    keys = keys_in_tests()
    assert KEY in keys and len(keys) >= 5
    result = scan([clean, leaky, tmp_path / "never-written.txt"], keys)
    assert result.logs == sorted([clean.resolve(), leaky.resolve()])
    assert [what for _, what in result.leaks] == [KEY, "Bearer abcdef123456"]
    assert len(problems(result, keys, server_logs=[], session_log=clean, apps_built=1)) == 2


def test_the_check_fails_when_it_read_nothing_it_should_have(tmp_path):
    empty_server_log, session_log = tmp_path / "server-1.txt", tmp_path / "session.txt"
    empty_server_log.write_text("")
    session_log.write_text("")
    keys = keys_in_tests()
    result = scan([empty_server_log, session_log], keys)
    found = problems(result, keys, server_logs=[empty_server_log], session_log=session_log, apps_built=2)
    assert any("server-1.txt" in p for p in found) and any("in-process apps" in p for p in found)
    assert problems(result, {"one-key"}, server_logs=[], session_log=None, apps_built=0) == [
        "KEY_PATTERNS found only 1 keys in tests/: the patterns no longer match the tests"]
