"""server.py as a real process: its command line, bad settings stop it, old names are
warned about, it binds loopback unless told otherwise, SIGTERM drains it."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from core.config import LEGACY, Settings
from tests.procs import ROOT, ServerProcess, free_port, http, start_server


def run_server(*args: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess:
    """`server.py ARGS` to its end, with only `env` (and PATH) set."""
    return subprocess.run([sys.executable, "server.py", *args], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}, timeout=timeout)


def accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def test_help_lists_every_setting_with_its_default_and_does_not_listen(tmp_path):
    port = free_port()
    result = run_server("--help", PORT=str(port), DATA_DIR=str(tmp_path / "data"))
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    for env, default, text in Settings.describe():
        (row,) = [n for n, line in enumerate(lines) if line.split()[:1] == [env]]
        assert f"default: {default or '(empty)'}" in lines[row] and text in lines[row + 1]
    for old in LEGACY:
        assert old.env in result.stdout
    assert "--port" in result.stdout and "--check-config" in result.stdout
    assert not accepts("127.0.0.1", port)
    assert not (tmp_path / "data").exists()  # not even the data directory was touched


def test_version_prints_the_version():
    from core import __version__
    result = run_server("--version")
    assert result.returncode == 0 and result.stdout.split() == ["server.py", __version__]


def test_check_config_prints_the_effective_settings_without_secrets(tmp_path):
    result = run_server("--check-config", "--port", "5123", OPENAI_API_KEY="sk-test-upstream-key-0009",
                        RATE_LIMIT_PER_MINUTE="7", DATA_DIR=str(tmp_path))
    assert result.returncode == 0
    assert {"PORT=5123", "RATE_LIMIT_PER_MINUTE=7", "OPENAI_API_KEY=<set>", "BIND_ADDRESS=127.0.0.1"} \
        <= set(result.stdout.splitlines())
    assert "sk-test-upstream-key-0009" not in result.stdout + result.stderr


@pytest.mark.parametrize("args, env, name", [
    (["--check-config"], {"MAX_CONCURRENT_REQUESTS": "abc"}, "MAX_CONCURRENT_REQUESTS"),
    (["--check-config", "--port", "99999"], {}, "PORT"),
    (["--check-config", "--bind", "not-an-address"], {}, "BIND_ADDRESS"),
    (["--check-config"], {"GUNICORN_WORKERS": "many"}, "GUNICORN_WORKERS"),
])
def test_check_config_exits_2_naming_the_bad_value(args, env, name):
    result = run_server(*args, **env)
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert name in line and result.stdout == ""


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


@pytest.mark.slow
def test_bind_and_port_on_the_command_line_win_over_the_environment(tmp_path):
    port = free_port()
    server = ServerProcess({"PORT": str(free_port()), "BIND_ADDRESS": "127.0.0.1", "DATA_DIR": str(tmp_path)},
                           tmp_path / "server-1.log", args=("--bind", "127.0.0.2", "--port", str(port)))
    try:
        deadline = time.monotonic() + 30
        while not accepts("127.0.0.2", port) and server.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        # 127.0.0.2 is loopback too, but a socket bound to 127.0.0.1 would not answer there.
        assert accepts("127.0.0.2", port) and not accepts("127.0.0.1", port)
    finally:
        server.stop()


def test_the_docker_image_listens_on_every_interface():
    # Loopback, the default, would be unreachable from outside the container while its
    # HEALTHCHECK (run inside) still passed.
    assert Settings().host == "127.0.0.1"
    assert re.search(r"^ENV [^#]*\bBIND_ADDRESS=0\.0\.0\.0\b", (ROOT / "Dockerfile").read_text(), re.M | re.S)


# The variables of the Flask/gunicorn deployment guide's .env, as operators bring them.
OLD_GUIDE_ENV = {
    "PORT": "5001", "FLASK_ENV": "production", "LOG_LEVEL": "INFO",
    "MAX_CONCURRENT_REQUESTS": "10", "REQUEST_TIMEOUT": "30", "RATE_LIMIT_PER_MINUTE": "60",
    "ENABLE_RESPONSE_CACHE": "true", "CACHE_TTL_SECONDS": "300", "MAX_CACHE_SIZE": "100",
    "HEALTH_CHECK_ENABLED": "true", "SERVER_ID": "server-1",
    "ENABLE_METRICS": "true", "METRICS_COLLECTION_INTERVAL": "60",
    "GUNICORN_WORKERS": "4", "WORKER_CLASS": "gevent", "WORKER_CONNECTIONS": "1000",
    "DB_POOL_SIZE": "5", "DB_POOL_TIMEOUT": "30",
    "LOG_FORMAT": "%(asctime)s - %(name)s - %(levelname)s - %(message)s",
}
OLD_NAMES = ("FLASK_ENV", "GUNICORN_WORKERS", "WORKER_CLASS", "WORKER_CONNECTIONS", "DB_POOL_SIZE",
             "DB_POOL_TIMEOUT")


def test_the_old_guides_env_is_read_as_the_new_names(tmp_path):
    result = run_server("--check-config", **OLD_GUIDE_ENV, API_KEYS="client-key-for-tests-15b03",
                        DATA_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert {"APP_ENV=production", "INSTANCES=4"} <= set(result.stdout.splitlines())
    # Production without keys still refuses to start, whatever the name that said production.
    refused = run_server("--check-config", **OLD_GUIDE_ENV, DATA_DIR=str(tmp_path))
    assert refused.returncode == 2 and "API_KEYS" in refused.stderr


@pytest.mark.slow
def test_the_old_guides_env_starts_on_loopback_with_one_warning_per_old_name(tmp_path):
    env = {**OLD_GUIDE_ENV, "PORT": str(free_port()), "API_KEYS": "client-key-for-tests-15b04",
           "DATA_DIR": str(tmp_path)}
    server = start_server(tmp_path, **env)
    status, _, body = http("GET", server.url + "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    # Started by hand with no BIND_ADDRESS: loopback only (127.0.0.2 is loopback too, but
    # a socket bound to 127.0.0.1 does not answer there; one bound to 0.0.0.0 would).
    assert not accepts("127.0.0.2", server.port)
    assert server.stop() == 0
    warnings = [line for line in server.log().splitlines() if " - WARNING - " in line]
    for name in OLD_NAMES:
        (line,) = [w for w in warnings if name in w]
        said = "read as" if any(old.env == name and old.becomes for old in LEGACY) else "is ignored"
        assert said in line and "docs/migration.md" in line
    assert "read as APP_ENV=production" in server.log() and "read as INSTANCES=4" in server.log()


@pytest.mark.slow
def test_a_stream_to_a_closed_upstream_port_is_a_plain_502_and_health_says_failing(tmp_path):
    closed = free_port()  # nothing listens there
    server = start_server(tmp_path, DATA_DIR=str(tmp_path), OPENAI_BASE_URL=f"http://127.0.0.1:{closed}/v1")
    try:
        status, headers, body = http("POST", server.url + "/api/chat",
                                     {"message": "乡村振兴怎么写？", "stream": True})
        assert status == 502 and headers["Content-Type"].startswith("application/json")
        assert json.loads(body)["error"]["code"] == "upstream_error"
        status, _, body = http("GET", server.url + "/health")
        llm = json.loads(body)["llm"]
        assert status == 200 and llm["provider"] == "openai" and llm["state"] == "failing"
        assert llm["since"] and llm["error"] == "upstream_error"
    finally:
        server.stop()


_STARTUP_PROBE = """
import sys
import server
from core.config import Settings
app = server.make_app(Settings.from_env())
print(sorted(m for m in ("openai", "httpx", "pycurl", "redis", "pkg_resources") if m in sys.modules))
"""


def test_building_the_app_imports_neither_the_sdk_nor_redis_nor_pkg_resources(tmp_path):
    # An upstream is configured and the store is diskcache: what the server builds before
    # it starts loading needs no HTTP client library, no Redis client and no pkg_resources
    # (jieba's import of it costs ~0.15 s); the client and jieba's dictionary load in the
    # executor (ctx.warm_up).
    assert probe(tmp_path, _STARTUP_PROBE) == "[]"


def probe(data_dir: Path, script: str) -> str:
    """The last line `script` prints, run in a fresh interpreter with an upstream
    configured and the diskcache store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "STORE_", "API_KEYS"))}
    env.update(DATA_DIR=str(data_dir), OPENAI_BASE_URL="http://127.0.0.1:9/v1", OPENAI_API_KEY="sk-test")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=False,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split("\n")[-2]


_WARM_UP_PROBE = """
import importlib.util, sys
import server
from core.config import Settings
from core.context import build_context
ctx = build_context(Settings.from_env())
for loading in ctx.warm_up():
    loading.result()
import httpx
print(importlib.util.find_spec("rich") is not None, httpx.__name__ in sys.modules,
      sorted(m for m in ("httpx._main", "rich", "click", "pygments") if sys.modules.get(m)))
"""


def test_the_warm_up_leaves_out_the_http_clients_command_line_tools(tmp_path):
    # httpx imports its command-line client (click, rich, pygments: ~90 ms) whenever they
    # are installed, and this venv has them (dev tools): a server never runs it.
    assert probe(tmp_path, _WARM_UP_PROBE) == "True True []"


@pytest.mark.slow
def test_the_first_chat_and_search_sent_together_right_after_start_up_are_answered(tmp_path, fake_llm):
    server = start_server(tmp_path, DATA_DIR=str(tmp_path), OPENAI_BASE_URL=fake_llm.base_url,
                          OPENAI_API_KEY="sk-test")
    try:
        # Sent at once, together, as soon as the server listens.
        results: dict[str, tuple[int, bytes]] = {}

        def ask(name: str, method: str, path: str, body: object = None) -> None:
            status, _, payload = http(method, server.url + path, body)
            results[name] = (status, payload)

        threads = [threading.Thread(target=ask, args=("chat", "POST", "/api/chat",
                                                       {"message": "乡村振兴怎么写？", "use_knowledge": False})),
                   threading.Thread(target=ask, args=("search", "GET", "/api/knowledge/search?q=%E4%B9%A1%E6%9D%91%E6%8C%AF%E5%85%B4"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert results["chat"][0] == 200 and json.loads(results["chat"][1])["answer"]
        assert results["search"][0] == 200 and json.loads(results["search"][1])["total"] == 0
        assert fake_llm.calls == 1
    finally:
        server.stop()


def test_start_up_runs_without_the_cyclic_collector_and_freezes_what_it_built():
    import gc

    import server
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    try:
        with server.collector_paused_for_start_up():
            assert not gc.isenabled()
            built = [[i] for i in range(1000)]  # what start-up leaves behind
        assert gc.isenabled()
        assert gc.get_threshold()[0] == server.GC_YOUNG_THRESHOLD
        assert gc.get_freeze_count() >= frozen + len(built)
        # A start-up that fails (a damaged store, a bad dictionary) leaves the collector on.
        with pytest.raises(RuntimeError), server.collector_paused_for_start_up():
            raise RuntimeError("start-up failed")
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        gc.enable()
