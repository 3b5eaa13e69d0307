"""core.curl_transport: HTTP calls carried by libcurl, through `CurlTransport.open()` as
the provider makes them, on loopback (the fake OpenAI-compatible server, or a raw socket
where the test needs an upstream that misbehaves). The openai client's part (its headers,
its error types) is tests/core/test_llm.py's."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import time

import httpx
import pytest
import tornado.httpserver
import tornado.web
from tornado.testing import bind_unused_port

from core.curl_transport import CurlStream, CurlTransport
from testkit import free_port

BODY = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "你好"}]}
WHOLE = {**BODY, "stream": False}


@pytest.fixture
def transport(io_loop):
    transport = CurlTransport(max_clients=4)
    yield transport
    io_loop.run_sync(transport.aclose)


def post(transport: CurlTransport, url: str, body: dict = BODY, **timeouts: float) -> CurlStream:
    """One JSON POST, as the provider opens it."""
    return transport.open("POST", url, ["Content-Type: application/json"],
                          json.dumps(body, ensure_ascii=False).encode(), **timeouts)


async def call(transport: CurlTransport, url: str, body: dict = WHOLE, **timeouts: float) -> tuple[int, bytes]:
    """(status, whole body) of one POST; the stream closed whatever happens."""
    stream = post(transport, url, body, **timeouts)
    try:
        return await stream.head(), await stream.read()
    finally:
        await stream.aclose()


def deltas(body: bytes) -> str:
    text = ""
    for line in body.split(b"\n"):
        if line.startswith(b"data: {"):
            text += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
    return text


def content(body: bytes) -> str:
    return json.loads(body)["choices"][0]["message"]["content"]


async def test_a_stream_arrives_in_pieces_with_its_status_headers_and_every_byte(transport, fake_llm):
    fake_llm.reply = lambda body: "要点一：设施不足。要点二：宣传不够。" * 4
    fake_llm.chunk_delay = 0.01
    stream = post(transport, fake_llm.base_url + "/chat/completions")
    try:
        assert await stream.head() == 200
        assert dict(stream.fields())[b"Content-Type"] == b"text/event-stream"
        pieces = [piece async for piece in stream]
    finally:
        await stream.aclose()
    assert len(pieces) > 1
    assert deltas(b"".join(pieces)) == fake_llm.reply({}) and pieces[-1].endswith(b"data: [DONE]\n\n")
    assert fake_llm.requests[-1] == BODY  # the body went out whole, as sent


async def test_connections_are_kept_alive_between_calls(transport, fake_llm):
    # One TCP connection for calls in a row, streamed or whole: libcurl's pool, not a
    # handshake per call.
    for _ in range(2):
        status, body = await call(transport, fake_llm.base_url + "/chat/completions", BODY)
        assert status == 200 and b"[DONE]" in body
        status, body = await call(transport, fake_llm.base_url + "/chat/completions")
        assert status == 200 and content(body)
    assert len(fake_llm.client_ports) == 1


async def test_an_error_status_is_a_head_and_its_body_not_an_exception(transport, fake_llm):
    fake_llm.status = 503
    status, body = await call(transport, fake_llm.base_url + "/chat/completions")
    assert status == 503 and json.loads(body)["error"]["message"] == "fake failure"


async def test_nothing_listening_is_a_connect_error(transport):
    with pytest.raises(httpx.ConnectError):
        await call(transport, f"http://127.0.0.1:{free_port()}/v1/chat/completions")


async def test_a_stream_cut_midway_is_an_incomplete_message_after_the_bytes_sent_before_it(transport, fake_llm):
    fake_llm.reply = lambda body: "很长的回答" * 20
    fake_llm.fail_after_chunks = 2
    got = b""
    stream = post(transport, fake_llm.base_url + "/chat/completions")
    try:
        with pytest.raises(httpx.RemoteProtocolError):  # as httpx's own transport says it
            assert await stream.head() == 200
            async for piece in stream:
                got += piece
    finally:
        await stream.aclose()
    assert deltas(got) == ("很长的回答" * 20)[:16]


async def test_an_upstream_silent_past_the_read_timeout_is_a_read_timeout(transport, fake_llm):
    fake_llm.latency = 2.0
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        await call(transport, fake_llm.base_url + "/chat/completions", connect_timeout=10, read_timeout=0.5)
    assert time.monotonic() - started < 1.5  # we gave up, the upstream did not answer


async def test_closing_a_stream_midway_hangs_up_on_the_upstream(transport, fake_llm):
    fake_llm.reply = lambda body: "乙" * 400
    fake_llm.chunk_delay = 0.05
    stream = post(transport, fake_llm.base_url + "/chat/completions")
    assert await stream.head() == 200
    async for _ in stream:
        break
    await stream.aclose()
    for _ in range(60):
        if fake_llm.disconnects:
            break
        await asyncio.sleep(0.05)
    assert fake_llm.disconnects == 1  # the upstream saw us hang up: generation stopped


async def test_giving_up_before_the_upstream_sent_anything_hangs_up_within_about_a_second(transport):
    # An upstream that reads the request and never answers (a model still thinking).
    hung_up = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.read()  # the rest of the request, up to the end of the connection
        hung_up.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):  # the caller's deadline, as the provider's
                await call(transport, f"http://127.0.0.1:{port}/v1/chat/completions", read_timeout=30)
        await asyncio.wait_for(hung_up.wait(), 3)
    finally:
        server.close()


async def test_a_proxy_in_the_environment_carries_the_calls(transport, monkeypatch):
    # libcurl reads http_proxy itself.
    seen: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b"\r\n")[0])
        answer = json.dumps({"choices": [{"message": {"content": "经代理"}}]}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(answer), answer))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    try:
        status, body = await call(transport, "http://llm.invalid/v1/chat/completions")
    finally:
        server.close()
    assert status == 200 and content(body) == "经代理"
    assert seen == [b"POST http://llm.invalid/v1/chat/completions HTTP/1.1"]


@pytest.fixture
def tls_server(tmp_path, io_loop):
    """A Tornado HTTPS server on loopback with a self-signed certificate for 127.0.0.1:
    (base URL, the certificate, the client ports its requests came from)."""
    if shutil.which("openssl") is None:
        # scripts/test.sh installs it: in CI a missing openssl fails.
        (pytest.fail if os.environ.get("CI") else pytest.skip)("openssl is needed to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=30)
    ports: set[int] = set()

    class Hello(tornado.web.RequestHandler):
        def post(self) -> None:
            ports.add(self.request.connection.stream.socket.getpeername()[1])
            self.finish({"choices": [{"message": {"content": "加密连接"}}]})

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    sock, port = bind_unused_port()
    server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/v1/chat/completions", Hello)]),
                                           ssl_options=context)
    server.add_sockets([sock])
    yield f"https://127.0.0.1:{port}/v1", str(cert), ports
    server.stop()


async def test_tls_is_verified_and_its_connection_kept_alive(tls_server):
    url, cert, ports = tls_server
    trusted = CurlTransport(max_clients=2, ca_certs=cert)
    untrusted = CurlTransport(max_clients=2)  # certifi's bundle
    try:
        for _ in range(2):
            status, body = await call(trusted, url + "/chat/completions")
            assert status == 200 and content(body) == "加密连接"
        assert len(ports) == 1  # one TLS handshake for both calls
        with pytest.raises(httpx.ConnectError):
            await call(untrusted, url + "/chat/completions")
    finally:
        await trusted.aclose()
        await untrusted.aclose()


async def test_transfers_beyond_max_clients_wait_their_turn_and_all_arrive(fake_llm):
    # Two handles: five calls at once go out two at a time, on at most two connections.
    fake_llm.latency = 0.1
    fake_llm.reply = lambda body: body["messages"][-1]["content"]
    transport = CurlTransport(max_clients=2)
    try:
        started = time.monotonic()
        answers = await asyncio.gather(*(
            call(transport, fake_llm.base_url + "/chat/completions",
                 {**WHOLE, "messages": [{"role": "user", "content": f"第{i}问"}]})
            for i in range(5)))
        took = time.monotonic() - started
    finally:
        await transport.aclose()
    assert [content(body) for _, body in answers] == [f"第{i}问" for i in range(5)]
    assert len(fake_llm.client_ports) <= 2
    assert took >= 0.3  # three rounds of 0.1 s: never more than two at once


async def test_a_stream_given_up_while_queued_never_reaches_the_upstream(fake_llm):
    fake_llm.latency = 0.3
    transport = CurlTransport(max_clients=1)
    try:
        first = asyncio.ensure_future(call(transport, fake_llm.base_url + "/chat/completions"))
        await asyncio.sleep(0.05)  # the first holds the one handle
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):  # waits behind the first for the one handle
                await call(transport, fake_llm.base_url + "/chat/completions")
        assert (await first)[0] == 200
        await asyncio.sleep(0.1)
    finally:
        await transport.aclose()
    assert fake_llm.calls == 1


async def test_a_response_head_keeps_every_field_with_its_value_unparsed_until_asked(transport, fake_llm):
    stream = post(transport, fake_llm.base_url + "/chat/completions", WHOLE)
    try:
        assert await stream.head() == 200
        body = await stream.read()
        fields = dict(stream.fields())
    finally:
        await stream.aclose()
    assert fields[b"Content-Type"].startswith(b"application/json")
    assert int(fields[b"Content-Length"]) == len(body)


async def test_closing_the_transport_ends_the_transfers_in_flight_as_failed_reads(fake_llm):
    fake_llm.reply = lambda body: "丙" * 400
    fake_llm.chunk_delay = 0.05
    transport = CurlTransport(max_clients=2)
    stream = post(transport, fake_llm.base_url + "/chat/completions")
    try:
        assert await stream.head() == 200
        await transport.aclose()
        with pytest.raises(httpx.ReadError):
            async for _ in stream:
                pass
    finally:
        await stream.aclose()
