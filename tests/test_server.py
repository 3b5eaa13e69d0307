"""server.py as a real process: bad settings stop it, SIGTERM drains it."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from tests.procs import ROOT, free_port, start_server


def test_bad_setting_exits_2_naming_the_variable(tmp_path):
    result = subprocess.run([sys.executable, "server.py"], cwd=ROOT, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "MAX_CONCURRENT_REQUESTS": "abc",
                                 "PORT": str(free_port()), "DATA_DIR": str(tmp_path)}, timeout=30)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "MAX_CONCURRENT_REQUESTS" in lines[0]


def test_sigterm_lets_a_slow_request_finish(tmp_path, fake_llm):
    fake_llm.latency = 1.5
    server = start_server(tmp_path, DATA_DIR=str(tmp_path), OPENAI_BASE_URL=fake_llm.base_url,
                          OPENAI_API_KEY="sk-test-upstream-key-0002", SHUTDOWN_GRACE_SECONDS="10")
    outcome: dict = {}

    def call() -> None:
        request = urllib.request.Request(
            server.url + "/api/chat", method="POST",
            data=json.dumps({"message": "慢一点的问题", "use_knowledge": False}).encode())
        with urllib.request.urlopen(request, timeout=20) as response:
            outcome["status"] = response.status
            outcome["body"] = json.loads(response.read())

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 10
    while fake_llm.calls == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    server.proc.send_signal(signal.SIGTERM)
    caller.join(20)
    assert outcome.get("status") == 200
    assert outcome["body"]["answer"].startswith("这是模拟大模型的回答")
    assert server.proc.wait(20) == 0
    assert "shutting down" in server.log() and "stopped" in server.log()


def test_json_logs_have_one_access_line_per_request_and_no_user_text(tmp_path, fake_llm):
    server = start_server(tmp_path, DATA_DIR=str(tmp_path), LOG_FORMAT="json", LOG_LEVEL="INFO",
                          OPENAI_BASE_URL=fake_llm.base_url, OPENAI_API_KEY="sk-test-upstream-key-0004")
    secret_question = "这是一段不应出现在INFO日志里的考生作文内容"
    from tests.procs import http
    status, headers, _ = http("POST", server.url + "/api/chat",
                              {"message": secret_question, "use_knowledge": False},
                              {"X-Request-ID": "log-test-1"})
    assert status == 200
    assert server.stop() == 0
    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    access = [entry for entry in lines if entry["logger"] == "shenlun.access"]
    assert len(access) == 1
    entry = access[0]
    assert entry["request_id"] == "log-test-1" and entry["status"] == 200
    assert entry["method"] == "POST" and entry["path"] == "/api/chat"
    assert entry["cache"] == "MISS" and entry["latency_ms"] > 0 and entry["client"] == "127.0.0.1"
    assert entry["server_id"] == "server-1"
    assert secret_question not in server.log()
    assert "sk-test-upstream-key-0004" not in server.log()


def test_debug_logs_cut_user_text_short(tmp_path):
    server = start_server(tmp_path, DATA_DIR=str(tmp_path), LOG_LEVEL="DEBUG")
    from tests.procs import http
    essay = "乡村振兴" * 200
    assert http("POST", server.url + "/api/chat", {"message": essay, "use_knowledge": False})[0] == 200
    server.stop()
    assert "乡村振兴" * 10 in server.log()   # the start of it, at DEBUG
    assert "乡村振兴" * 20 not in server.log()  # never the whole essay
