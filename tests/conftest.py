"""Shared fixtures: a fake LLM on loopback, settings on a temporary DATA_DIR, the app.

Mark a test `@pytest.mark.settings(name=value, …)` to override settings; by default
the app talks to the fake LLM. `@pytest.mark.settings(offline=True)` uses the
built-in offline provider instead; `@pytest.mark.upstream("fixture")` the server that
fixture returns (anything with a `base_url`, e.g. `unreachable_llm`).

Decorate a test with `@both_backends` to run it on the diskcache store and on Redis
(a session-wide `redis-server` on a free loopback port, emptied before each test).

`console(base_url)` opens a chromium tab on the web console (tests/browser.py).
When the session ends, every log it wrote is scanned for the keys the tests use
(tests/log_secrets.py): a key in a log fails the run.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from core.config import Settings
from server import make_app
from testkit import free_port
from testkit.fake_llm import FakeLLM
from tests import log_secrets
from tests.browser import CHROMIUM, CHROMIUM_ARGS, Console, missing_browser
from tests.procs import SERVER_LOGS
from tests.redis_server import RedisServer


def both_backends(test):
    """Run `test` once per store backend (diskcache, redis)."""
    test = pytest.mark.parametrize("store_backend", ["diskcache", "redis"], indirect=True)(test)
    return pytest.mark.usefixtures("store_backend")(test)

SESSION_LOGS: list[Path] = []
_APPS_BUILT = [0]  # in-process apps of this session: their records must reach SESSION_LOGS


@pytest.fixture(scope="session", autouse=True)
def session_log(tmp_path_factory):
    """Every log record of the in-process apps, at DEBUG, unfiltered, in one file."""
    path = tmp_path_factory.mktemp("logs") / "session.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    SESSION_LOGS.append(path)
    yield path
    root.removeHandler(handler)
    root.setLevel(previous)
    handler.close()


@pytest.fixture(scope="session")
def fake_llm_server():
    fake = FakeLLM().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_llm(fake_llm_server):
    fake_llm_server.reset()
    return fake_llm_server


@pytest.fixture
def unreachable_llm() -> SimpleNamespace:
    """An OpenAI-compatible base URL on a loopback port where nothing listens."""
    return SimpleNamespace(base_url=f"http://127.0.0.1:{free_port()}/v1")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One redis-server for the session (tests that stop Redis start their own)."""
    server = RedisServer(tmp_path_factory.mktemp("redis") / "redis.log").start()
    yield server
    server.stop()


@pytest.fixture
def store_backend(request) -> dict[str, str]:
    """Settings of the shared store: diskcache unless parametrised with "redis"."""
    backend = getattr(request, "param", "diskcache")
    if backend == "diskcache":
        return {"store_backend": "diskcache"}
    redis = request.getfixturevalue("redis_server")
    redis.flush()
    return {"store_backend": "redis", "redis_url": redis.url}


@pytest.fixture(scope="module")
def browser():
    """Chromium (tests/browser.py); the test is skipped where there is none, outside CI."""
    reason = missing_browser()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def console(browser, tmp_path):
    """`console(base_url, **context_options)` opens a tab (a Console); closed afterwards."""
    tabs: list[Console] = []

    def open_console(base_url: str, **options: Any) -> Console:
        tabs.append(Console(browser, base_url, tmp_path, **options))
        return tabs[-1]
    yield open_console
    for tab in tabs:
        if not tab.closed:
            tab.context.close()


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def settings(request, data_dir, fake_llm, store_backend) -> Settings:
    marker = request.node.get_closest_marker("settings")
    overrides: dict[str, Any] = dict(marker.kwargs) if marker else {}
    if overrides.pop("offline", False):
        llm = {"openai_api_key": "", "openai_base_url": ""}
    else:
        upstream = request.node.get_closest_marker("upstream")
        server = request.getfixturevalue(upstream.args[0]) if upstream else fake_llm
        llm = {"openai_api_key": "sk-test-upstream-key-0001", "openai_base_url": server.base_url}
    return Settings.from_env({}, **{"data_dir": data_dir, "llm_model": "fake-model",
                                    **llm, **store_backend, **overrides})


@pytest.fixture
def app(settings, io_loop):
    application = make_app(settings)
    _APPS_BUILT[0] += 1
    yield application
    io_loop.run_sync(application.settings["ctx"].close)


@pytest.fixture
def ctx(app):
    return app.settings["ctx"]


def pytest_configure(config):
    config.addinivalue_line("markers", "settings(**overrides): settings for the app fixture")


@pytest.hookimpl(trylast=True)  # after the session fixtures' teardown: every log is closed
def pytest_sessionfinish(session, exitstatus):
    """Fail the run when a log written during it holds a key, or when the check read
    none of the logs the servers and in-process apps of this session wrote."""
    if not SESSION_LOGS:  # no test ran (collection only, or every test deselected)
        return
    basetemp = SESSION_LOGS[0].parent.parent  # this session's tmp_path root
    keys = log_secrets.keys_in_tests()
    result = log_secrets.scan([*basetemp.rglob("*.log"), *SESSION_LOGS, *SERVER_LOGS], keys)
    found = log_secrets.problems(result, keys, server_logs=SERVER_LOGS, session_log=SESSION_LOGS[0],
                                 apps_built=_APPS_BUILT[0])
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        verdict = f"{len(found)} problem(s), the run fails" if found else "none found"
        reporter.write_line(f"\nsecrets in logs: {len(result.logs)} logs ({result.size} characters) scanned "
                            f"for {len(keys)} keys: {verdict}", red=bool(found))
        for problem in found:
            reporter.write_line(f"  {problem}", red=True)
    if found:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


async def post_json(client, path: str, body: Any, **kwargs):
    """POST a JSON body and return the response whatever its status."""
    data = body if isinstance(body, (bytes, str)) else json.dumps(body, ensure_ascii=False)
    return await client.fetch(path, method="POST", body=data, raise_error=False, **kwargs)


def error_of(response) -> dict[str, Any]:
    """The contract's error object of a response, checked for shape."""
    body = json.loads(response.body)
    error = body["error"]
    assert set(error) == {"code", "message", "status", "request_id"}
    assert error["status"] == response.code
    assert error["request_id"] == response.headers["X-Request-ID"]
    return error
