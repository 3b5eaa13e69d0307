"""core.curl_transport: httpx requests carried by libcurl, through real HTTP on loopback
(the fake OpenAI-compatible server, or a raw socket where the test needs an upstream
that misbehaves), read through httpx and through the openai client as the service uses it."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import time

import httpx
import openai
import pytest
import tornado.httpserver
import tornado.web
from tornado.testing import bind_unused_port

from core.curl_transport import CurlTransport, curl_http_client
from testkit import free_port

BODY = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "你好"}]}


@pytest.fixture
def client(io_loop):
    http = curl_http_client(CurlTransport(max_clients=4), timeout=10)
    yield http
    io_loop.run_sync(http.aclose)


def deltas(body: bytes) -> str:
    text = ""
    for line in body.split(b"\n"):
        if line.startswith(b"data: {"):
            text += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
    return text


async def test_a_stream_arrives_in_pieces_with_its_status_headers_and_every_byte(client, fake_llm):
    fake_llm.reply = lambda body: "要点一：设施不足。要点二：宣传不够。" * 4
    fake_llm.chunk_delay = 0.01
    async with client.stream("POST", fake_llm.base_url + "/chat/completions", json=BODY) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        pieces = [piece async for piece in response.aiter_bytes()]
    assert len(pieces) > 1
    assert deltas(b"".join(pieces)) == fake_llm.reply({}) and pieces[-1].endswith(b"data: [DONE]\n\n")
    assert fake_llm.requests[-1] == BODY  # the body went out whole, as JSON


async def test_connections_are_kept_alive_between_calls(client, fake_llm):
    # One TCP connection for calls in a row, streamed or whole: libcurl's pool, not a
    # handshake per call.
    for _ in range(2):
        async with client.stream("POST", fake_llm.base_url + "/chat/completions", json=BODY) as response:
            assert b"[DONE]" in b"".join([piece async for piece in response.aiter_bytes()])
        response = await client.post(fake_llm.base_url + "/chat/completions", json={**BODY, "stream": False})
        assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
    assert len(fake_llm.client_ports) == 1


async def test_an_error_status_is_a_response_and_the_openai_client_raises_its_status_error(client, fake_llm):
    fake_llm.status = 503
    response = await client.post(fake_llm.base_url + "/chat/completions", json=BODY)
    assert response.status_code == 503 and response.json()["error"]["message"] == "fake failure"
    sdk = openai.AsyncOpenAI(api_key="sk-test", base_url=fake_llm.base_url, max_retries=0, http_client=client)
    with pytest.raises(openai.APIStatusError) as raised:
        await sdk.post("/chat/completions", body=BODY, cast_to=httpx.Response, stream=True)
    assert raised.value.status_code == 503


async def test_the_openai_client_sends_its_key_and_base_url_through_it(client, fake_llm):
    fake_llm.reply = lambda body: "好"
    sdk = openai.AsyncOpenAI(api_key="sk-test-upstream-key-0002", base_url=fake_llm.base_url,
                             max_retries=0, http_client=client)
    response = await sdk.post("/chat/completions", body={**BODY, "stream": False}, cast_to=httpx.Response)
    assert response.json()["choices"][0]["message"]["content"] == "好"
    assert fake_llm.headers[-1]["Authorization"] == "Bearer sk-test-upstream-key-0002"
    assert fake_llm.headers[-1]["User-Agent"].startswith("AsyncOpenAI/Python")


async def test_nothing_listening_is_a_connect_error_and_openai_s_connection_error(client):
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(httpx.ConnectError):
        await client.post(url + "/chat/completions", json=BODY)
    sdk = openai.AsyncOpenAI(api_key="sk-test", base_url=url, max_retries=0, http_client=client)
    with pytest.raises(openai.APIConnectionError):
        await sdk.post("/chat/completions", body=BODY, cast_to=httpx.Response)


async def test_a_stream_cut_midway_is_an_incomplete_message_after_the_bytes_sent_before_it(client, fake_llm):
    fake_llm.reply = lambda body: "很长的回答" * 20
    fake_llm.fail_after_chunks = 2
    got = b""
    with pytest.raises(httpx.RemoteProtocolError):  # as httpx's own transport says it
        async with client.stream("POST", fake_llm.base_url + "/chat/completions", json=BODY) as response:
            async for piece in response.aiter_bytes():
                got += piece
    assert deltas(got) == ("很长的回答" * 20)[:16]


async def test_an_upstream_silent_past_the_read_timeout_is_a_read_timeout(fake_llm):
    fake_llm.latency = 2.0
    http = curl_http_client(CurlTransport(max_clients=2), timeout=httpx.Timeout(10, read=0.5))
    sdk = openai.AsyncOpenAI(api_key="sk-test", base_url=fake_llm.base_url, max_retries=0, http_client=http)
    started = time.monotonic()
    try:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(fake_llm.base_url + "/chat/completions", json=BODY)
        assert time.monotonic() - started < 1.5  # we gave up, the upstream did not answer
        with pytest.raises(openai.APITimeoutError):
            await sdk.post("/chat/completions", body=BODY, cast_to=httpx.Response)
    finally:
        await http.aclose()


async def test_closing_a_stream_midway_hangs_up_on_the_upstream(client, fake_llm):
    fake_llm.reply = lambda body: "乙" * 400
    fake_llm.chunk_delay = 0.05
    async with client.stream("POST", fake_llm.base_url + "/chat/completions", json=BODY) as response:
        async for _ in response.aiter_bytes():
            break
    for _ in range(60):
        if fake_llm.disconnects:
            break
        await asyncio.sleep(0.05)
    assert fake_llm.disconnects == 1  # the upstream saw us hang up: generation stopped


async def test_giving_up_before_the_upstream_sent_anything_hangs_up_within_about_a_second():
    # An upstream that reads the request and never answers (a model still thinking).
    hung_up = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.read()  # the rest of the request, up to the end of the connection
        hung_up.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = CurlTransport(max_clients=2)
    http = httpx.AsyncClient(transport=transport, timeout=30)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):  # the caller's deadline, as the provider's
                await http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=BODY)
        await asyncio.wait_for(hung_up.wait(), 3)
    finally:
        await http.aclose()
        server.close()


async def test_a_proxy_in_the_environment_carries_the_calls(client, monkeypatch):
    # libcurl reads http_proxy itself (httpx, with trust_env off, does not look).
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
        response = await client.post("http://llm.invalid/v1/chat/completions", json=BODY)
    finally:
        server.close()
    assert response.json()["choices"][0]["message"]["content"] == "经代理"
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
    trusted = httpx.AsyncClient(transport=CurlTransport(max_clients=2, ca_certs=cert))
    untrusted = httpx.AsyncClient(transport=CurlTransport(max_clients=2))  # certifi's bundle
    try:
        for _ in range(2):
            response = await trusted.post(url + "/chat/completions", json=BODY)
            assert response.json()["choices"][0]["message"]["content"] == "加密连接"
        assert len(ports) == 1  # one TLS handshake for both calls
        with pytest.raises(httpx.ConnectError):
            await untrusted.post(url + "/chat/completions", json=BODY)
    finally:
        await trusted.aclose()
        await untrusted.aclose()


async def test_transfers_beyond_max_clients_wait_their_turn_and_all_arrive(fake_llm):
    # Two handles: five calls at once go out two at a time, on at most two connections.
    fake_llm.latency = 0.1
    fake_llm.reply = lambda body: body["messages"][-1]["content"]
    http = curl_http_client(CurlTransport(max_clients=2), timeout=10)
    try:
        started = time.monotonic()
        answers = await asyncio.gather(*(
            http.post(fake_llm.base_url + "/chat/completions",
                      json={**BODY, "stream": False, "messages": [{"role": "user", "content": f"第{i}问"}]})
            for i in range(5)))
        took = time.monotonic() - started
    finally:
        await http.aclose()
    assert [a.json()["choices"][0]["message"]["content"] for a in answers] == [f"第{i}问" for i in range(5)]
    assert len(fake_llm.client_ports) <= 2
    assert took >= 0.3  # three rounds of 0.1 s: never more than two at once


async def test_a_stream_given_up_while_queued_never_reaches_the_upstream(fake_llm):
    fake_llm.latency = 0.3
    transport = CurlTransport(max_clients=1)
    http = httpx.AsyncClient(transport=transport, timeout=10)
    try:
        first = asyncio.ensure_future(http.post(fake_llm.base_url + "/chat/completions",
                                                json={**BODY, "stream": False}))
        await asyncio.sleep(0.05)  # the first holds the one handle
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):  # waits behind the first for the one handle
                await http.post(fake_llm.base_url + "/chat/completions", json={**BODY, "stream": False})
        assert (await first).status_code == 200
        await asyncio.sleep(0.1)
    finally:
        await http.aclose()
    assert fake_llm.calls == 1


async def test_a_response_head_keeps_every_field_with_its_value_unparsed_until_asked(client, fake_llm):
    response = await client.post(fake_llm.base_url + "/chat/completions", json={**BODY, "stream": False})
    assert response.headers["content-type"].startswith("application/json")
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.extensions["http_version"] == b"HTTP/1.1"
