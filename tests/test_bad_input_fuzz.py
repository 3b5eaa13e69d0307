"""Property-based bad input against a live server: never a 5xx, never a dropped
connection, every error in the contract's shape, and nothing changed that was refused.

Bounded: a few hundred examples per endpoint group, loopback only.
"""
from __future__ import annotations

import http.client
import json
import string
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.procs import http as http_call
from tests.procs import start_server

EXAMPLES = 300
FIELDS = ["message", "messages", "mode", "material", "question", "word_limit", "use_knowledge",
          "stream", "cache", "temperature", "max_tokens", "title", "content", "category", "tags",
          "source", "id", "documents", "answer", "reference", "full_score", "question_type",
          "practice_id"]

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(10 ** 30), max_value=10 ** 30)
                | st.floats(allow_nan=False) | st.text(max_size=200)
                | st.text(alphabet=st.characters(categories=["Cc", "Cs", "Co"]), max_size=20)
                | st.sampled_from(["", " ", "\x00", "chat", "essay", "grade", "乡村振兴", "x" * 9000]))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner,
                                             max_size=5), max_leaves=20)
field_objects = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8)
raw_bodies = st.one_of(
    st.binary(max_size=300),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.sampled_from([b"1e999999", b"-1e400", b'{"message": "\\ud800"}', b'{"message": NaN}',
                     b'{"message": Infinity}', b"\xef\xbb\xbf{}", b'{"message": "a"}' * 3, b""]),
)
bodies = st.one_of(field_objects.map(lambda o: json.dumps(o).encode()),
                   json_values.map(lambda v: json.dumps(v).encode()), raw_bodies)
header_text = st.text(alphabet=string.printable.strip("\r\n\x0b\x0c"), max_size=60)
headers = st.dictionaries(st.sampled_from(["Content-Type", "X-Request-ID", "Authorization", "X-API-Key",
                                           "X-Forwarded-For", "X-Real-IP", "Origin", "Accept"]),
                          header_text, max_size=4)
query_text = st.text(max_size=80)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    proc = start_server(tmp, DATA_DIR=str(tmp / "data"), RATE_LIMIT_PER_MINUTE="0",
                        LOG_LEVEL="WARNING", MAX_BODY_BYTES="65536")
    yield proc
    proc.stop()


class Client:
    """One keep-alive connection, reopened only when the server closes it on purpose."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def send(self, method: str, path: str, body: bytes | None, headers: dict[str, str]):
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
        except (ConnectionError, http.client.HTTPException) as exc:
            raise AssertionError(f"dropped connection on {method} {path}: {exc!r}") from None
        if response.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        return response.status, data


def check_answer(status: int, data: bytes, what: str) -> None:
    assert status < 500, f"{what} → {status} {data[:300]!r}"
    if status >= 400:
        error = json.loads(data)["error"]
        assert error["status"] == status and error["code"] and error["message"], what


fuzz = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@fuzz
@given(body=bodies, extra=headers, stream=st.booleans())
def test_chat_never_fails_on_bad_bodies(server, body, extra, stream):
    client = Client(server.port)
    if stream and body.startswith(b"{"):
        body = body[:-1] + (b', "stream": true}' if body != b"{}" else b'"stream": true}')
    status, data = client.send("POST", "/api/chat", body, {"Content-Type": "application/json", **extra})
    if status == 200 and data.startswith((b"data:", b"event:")):
        return  # a streamed answer: its own tests check the events
    check_answer(status, data, f"chat {body[:80]!r}")


@fuzz
@given(query=query_text, limit=st.one_of(st.none(), st.text(max_size=6), st.integers(-5, 100)),
       offset=st.one_of(st.none(), st.text(max_size=6), st.integers(-5, 10 ** 12)),
       category=st.one_of(st.none(), query_text), extra=headers)
def test_get_endpoints_never_fail_on_bad_queries(server, query, limit, offset, category, extra):
    client = Client(server.port)
    params = {"q": query}
    for name, value in (("limit", limit), ("offset", offset), ("category", category)):
        if value is not None:
            params[name] = str(value)
    qs = urllib.parse.urlencode(params)
    for path in (f"/api/knowledge/search?{qs}", f"/api/metrics?scope={urllib.parse.quote(query)}",
                 f"/health?{qs}", f"/api/knowledge/{urllib.parse.quote(query or 'x', safe='')}"):
        status, data = client.send("GET", path, None, extra)
        check_answer(status, data, path)


def test_server_is_healthy_afterwards(server):
    status, _, body = http_call("GET", server.url + "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert "Traceback" not in server.log()
