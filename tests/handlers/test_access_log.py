"""The access line of a request, in the seed's format and as JSON, through real HTTP."""
from __future__ import annotations

import io
import json
import logging
import re
import sys

import pytest

from core.config import DEFAULT_LOG_FORMAT
from core.ops.logs import JsonFormatter, SecretFilter, SeedFormatter, access_record
from tests.conftest import post_json

CHAT = {"message": "如何答好归纳概括题？", "use_knowledge": False}


@pytest.fixture
def access_lines():
    """What the access logger writes, in the seed's format and as JSON lines."""
    logger = logging.getLogger("shenlun.access")
    streams = {"seed": io.StringIO(), "json": io.StringIO()}
    handlers = []
    for name, formatter in (("seed", SeedFormatter(DEFAULT_LOG_FORMAT)), ("json", JsonFormatter("server-a"))):
        handler = logging.StreamHandler(streams[name])
        handler.setFormatter(formatter)
        handler.addFilter(SecretFilter(["sk-test-upstream-key-0001"]))
        logger.addHandler(handler)
        handlers.append(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield lambda name: streams[name].getvalue().splitlines()
    logger.setLevel(level)
    for handler in handlers:
        logger.removeHandler(handler)


async def test_one_access_line_per_request_with_its_fields(http_server_client, fake_llm, access_lines):
    for _ in range(2):
        response = await post_json(http_server_client, "/api/chat", CHAT, headers={"X-Request-ID": "req-17"})
        assert response.code == 200
    seed, entries = access_lines("seed"), [json.loads(line) for line in access_lines("json")]
    assert len(seed) == len(entries) == 2
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    for line, cache in zip(seed, ("MISS", "HIT"), strict=True):
        assert re.fullmatch(rf"{stamp} - shenlun\.access - INFO - req-17 127\.0\.0\.1 POST /api/chat 200 "
                            rf"\d+\.\dms cache={cache}", line), line
    for entry, cache in zip(entries, ("MISS", "HIT"), strict=True):
        assert {k: entry[k] for k in ("request_id", "client", "method", "path", "status", "cache")} == {
            "request_id": "req-17", "client": "127.0.0.1", "method": "POST", "path": "/api/chat",
            "status": 200, "cache": cache}
        assert entry["logger"] == "shenlun.access" and entry["server_id"] == "server-a"
        assert entry["latency_ms"] >= 0 and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", entry["ts"])
    assert CHAT["message"] not in "\n".join(seed + access_lines("json"))


async def test_a_key_sent_as_request_id_is_scrubbed_from_the_access_line(http_server_client, access_lines):
    await http_server_client.fetch("/health", headers={"X-Request-ID": "sk-test-upstream-key-0001"})
    line = access_lines("seed")[-1]
    assert "sk-test-upstream-key-0001" not in line and "*** 127.0.0.1 GET /health 200" in line


def test_the_seed_formatter_writes_what_logging_formatter_writes():
    ours, stock = SeedFormatter(DEFAULT_LOG_FORMAT), logging.Formatter(DEFAULT_LOG_FORMAT)
    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.0005, 1_700_003_600.5):
        record = logging.LogRecord("shenlun.access", logging.INFO, __file__, 1, "line", None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.format(record) == stock.format(record)
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("shenlun.http", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info())
    traced = logging.LogRecord("shenlun.http", logging.INFO, __file__, 1, "here", None, None, sinfo="Stack (x)")
    for record in (failed, traced):
        assert ours.format(record) == stock.format(record)
    assert "ValueError: boom" in ours.format(failed) and ours.format(traced).endswith("Stack (x)")


def test_an_access_record_holds_what_a_stock_record_holds():
    fields = {"request_id": "r-1", "status": 200, "cache": None}
    ours = access_record("shenlun.access", logging.INFO, __file__, "the line", fields)
    stock = logging.LogRecord("shenlun.access", logging.INFO, __file__, 0, "the line", None, None)
    stock.__dict__.update(fields)
    timed = ("created", "msecs", "relativeCreated")
    assert {k: v for k, v in vars(ours).items() if k not in timed} == \
        {k: v for k, v in vars(stock).items() if k not in timed}
    assert abs(ours.created - stock.created) < 1 and abs(ours.relativeCreated - stock.relativeCreated) < 1000
    assert ours.msecs == int((ours.created - int(ours.created)) * 1000)
    again = access_record("shenlun.access", logging.ERROR, __file__, "another", {})  # per level
    assert (again.levelname, again.getMessage(), hasattr(again, "request_id")) == ("ERROR", "another", False)
