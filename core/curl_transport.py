"""An `httpx` transport over Tornado's `CurlAsyncHTTPClient` (libcurl), for the
`openai` client: the SDK still builds every request (auth, base URL, headers) and
maps the answers to its error types; libcurl carries them.

Why: httpx's own transport (httpcore over anyio) is Python from the socket up, and its
pool walks every connection it holds on each request and release, O(n²) in the
connections in use (encode/httpcore#1035; the service used to spread calls over pool
shards of 8 connections). At 1,000 streamed answers in flight the service spent 8.3 ms
of CPU per answer with it, 4.6 ms with this transport (bench/b9_stream_relay.py, one
run each, same machine). libcurl keeps HTTP/1.1 connections alive in its pool (one
TLS handshake per connection, not per call), decodes chunked bodies and speaks TLS in
C, and honours the proxy variables of the environment (`https_proxy`, `http_proxy` in
lower case only, `no_proxy`).

Protocol of one request (all on the event loop): `handle_async_request` starts the
fetch and returns the `httpx.Response` as soon as libcurl has passed the status line
and headers (header_callback); body chunks (streaming_callback, delivered by Tornado
from the loop, those of one loop iteration together) go into the response's
`CurlStream`, which the reader drains. The fetch's end (or failure) closes the stream.
Closing the response before that aborts the transfer (see `CurlStream.aclose`).

Imported by `OpenAIProvider.prepare()` only: pycurl, httpx and certifi load in the
executor, never while the server starts.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable

import certifi
import httpx
import pycurl
from tornado.curl_httpclient import CurlAsyncHTTPClient, CurlError
from tornado.httpclient import HTTPClientError, HTTPRequest, HTTPResponse
from tornado.httputil import HTTPHeaders, HTTPInputError, parse_response_start_line

# libcurl's error numbers (curl/curl.h) as the httpx exceptions the openai client maps
# to APIConnectionError / APITimeoutError; any other is a ReadError.
_CONNECT_ERRORS = {pycurl.E_COULDNT_RESOLVE_PROXY, pycurl.E_COULDNT_RESOLVE_HOST,
                   pycurl.E_COULDNT_CONNECT, pycurl.E_SSL_CONNECT_ERROR,
                   pycurl.E_PEER_FAILED_VERIFICATION, pycurl.E_SSL_CACERT_BADFILE}
_PROTOCOL_ERRORS = {pycurl.E_UNSUPPORTED_PROTOCOL, pycurl.E_URL_MALFORMAT,
                    pycurl.E_FTP_WEIRD_SERVER_REPLY,  # 8, CURLE_WEIRD_SERVER_REPLY since 7.51
                    pycurl.E_GOT_NOTHING, pycurl.E_PARTIAL_FILE, pycurl.E_BAD_CONTENT_ENCODING}


class CurlTransport(httpx.AsyncBaseTransport):
    """httpx requests through one `CurlAsyncHTTPClient` of its own (`max_clients`
    transfers at once; more wait in Tornado's queue).

    The Tornado client belongs to the event loop it was made on, so it is made by the
    first request, on the loop, not where the transport is built (the executor)."""

    def __init__(self, *, max_clients: int, ca_certs: str | None = None) -> None:
        self._max_clients = max_clients
        # The CA bundle httpx would use (SSL_CERT_FILE, else certifi's): the one built
        # into the pycurl wheel's libcurl points at a path the host may not have.
        self._ca_certs = ca_certs or os.environ.get("SSL_CERT_FILE") or certifi.where()
        self._client: CurlAsyncHTTPClient | None = None

    def _curl(self) -> CurlAsyncHTTPClient:
        if self._client is None:
            self._client = CurlAsyncHTTPClient(force_instance=True, max_clients=self._max_clients)
        return self._client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`; the response once its headers are in (the body streams on)."""
        timeouts = request.extensions.get("timeout") or {}
        body = await request.aread()
        stream = CurlStream(timeouts.get("read"))
        curl_request = HTTPRequest(
            # A dict: fetch() copies the headers into its own HTTPHeaders anyway.
            str(request.url), method=request.method, headers=dict(request.headers.items()),
            body=body or None,
            # httpx decodes the body by its Content-Encoding (it asked for the encodings
            # it reads); httpx follows redirects itself.
            decompress_response=False, follow_redirects=False,
            connect_timeout=timeouts.get("connect") or 0, request_timeout=0,
            header_callback=stream.header_line, streaming_callback=stream.feed,
            prepare_curl_callback=stream.prepared(),
            ca_certs=self._ca_certs, allow_nonstandard_methods=True)
        fetch = self._curl().fetch(curl_request, raise_error=False)
        fetch.add_done_callback(stream.fetched)
        try:
            status, fields = await stream.headers()
        except BaseException:  # cancelled (the caller's deadline), or the transfer failed
            await stream.aclose()
            raise
        return httpx.Response(status, headers=fields, stream=stream, request=request,
                              extensions={"http_version": b"HTTP/1.1"})

    async def aclose(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class CurlStream(httpx.AsyncByteStream):
    """One transfer: its headers as they arrive, then its body chunks, then its end.

    httpx's read timeout is kept here, not by libcurl (whose low-speed limit averages
    over several seconds, so it would fire late after an upload): one timer per
    transfer, pushed back lazily to the last byte's time plus the timeout."""

    def __init__(self, read_timeout: float | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._status = 0
        self._fields = HTTPHeaders()
        self._head: asyncio.Future[tuple[int, list[tuple[str, str]]]] = self._loop.create_future()
        self._chunks: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._done = False     # the transfer ended (or failed, or timed out)
        self._closed = False   # the reader is gone
        self._aborted = False  # libcurl is to stop the transfer
        self._error: httpx.TransportError | None = None
        self._read_timeout = read_timeout
        self._last_read = self._loop.time()
        self._watch = self._loop.call_at(self._last_read + read_timeout, self._check_read) \
            if read_timeout else None

    # --- from Tornado, on the loop ---

    def header_line(self, line: str) -> None:
        """One header line as libcurl passed it (the status line, a field, or the blank
        line that ends a head; an interim 1xx head is skipped)."""
        self._last_read = self._loop.time()
        line = line.rstrip("\r\n")
        if line.startswith("HTTP/"):
            try:
                self._status = parse_response_start_line(line).code
            except HTTPInputError:
                self._status = 0
            self._fields = HTTPHeaders()
        elif line:
            self._fields.parse_line(line)
        elif self._status >= 200 and not self._head.done():
            self._head.set_result((self._status, list(self._fields.get_all())))

    def feed(self, chunk: bytes) -> None:
        """Body bytes (streaming_callback)."""
        self._last_read = self._loop.time()
        self._chunks.append(chunk)
        self._wake()

    def fetched(self, fetch: asyncio.Future[HTTPResponse]) -> None:
        """The transfer ended: the body is complete, or the transfer failed."""
        # Tornado raises transport errors even with raise_error=False; taken here even
        # when nobody reads on, so asyncio does not log them as never retrieved.
        error = fetch.exception() or fetch.result().error
        if self._done:
            return  # closed, or timed out: the reader has its answer
        if isinstance(error, HTTPClientError) and not isinstance(error, CurlError):
            error = None  # an error status: httpx has it from the head
        self._end(_as_httpx_error(error, headers_in=self._head.done()) if error is not None else None)

    def prepared(self) -> Callable[[pycurl.Curl], None]:
        """Tornado's prepare_curl_callback: the options it does not set itself."""
        def prepare(curl: pycurl.Curl) -> None:
            # Tornado turns on libcurl's trace when its logger is at DEBUG: that trace
            # holds the request's headers, the API key among them.
            curl.setopt(pycurl.VERBOSE, False)
            # The abort switch (see aclose): libcurl calls this as bytes move, and, with
            # a low-speed limit set, once a second while the connection is idle (that
            # limit's own check; a day is never reached: the read timeout comes first).
            curl.setopt(pycurl.NOPROGRESS, False)
            curl.setopt(pycurl.XFERINFOFUNCTION, self._progress)
            curl.setopt(pycurl.LOW_SPEED_LIMIT, 1)
            curl.setopt(pycurl.LOW_SPEED_TIME, 86400)
        return prepare

    def _progress(self, *_: int) -> bool:
        return self._aborted

    def _check_read(self) -> None:
        if self._done:
            return
        due = self._last_read + (self._read_timeout or 0)
        if self._loop.time() < due:
            self._watch = self._loop.call_at(due, self._check_read)
            return
        self._aborted = True
        self._end(httpx.ReadTimeout(f"no bytes from the upstream in {self._read_timeout} s"))

    def _end(self, error: httpx.TransportError | None) -> None:
        self._done = True
        self._error = error
        if self._watch is not None:
            self._watch.cancel()
        if not self._head.done() and not self._closed:
            self._head.set_exception(error or httpx.RemoteProtocolError("no response head"))
        self._wake()

    # --- from the reader ---

    async def headers(self) -> tuple[int, list[tuple[str, str]]]:
        """(status, header fields) once the head is in; the transfer's error if it
        failed first."""
        return await self._head

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                chunks, self._chunks = self._chunks, []
                yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
            elif self._error is not None:
                raise self._error
            elif self._done:
                return
            else:
                self._waiter = self._loop.create_future()
                await self._waiter

    async def aclose(self) -> None:
        """Stop reading; a transfer still running is aborted by libcurl's next progress
        call: at once when bytes arrive, else within a second (an upstream that has
        sent nothing yet, a model still thinking, is hung up on then). An aborted
        transfer's connection is closed, not reused."""
        self._closed = True
        self._chunks = []
        if not self._done:
            self._aborted = True
            self._end(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _as_httpx_error(error: BaseException, *, headers_in: bool) -> httpx.TransportError:
    """A failed transfer as the httpx exception httpx's own transport would raise."""
    if not isinstance(error, CurlError):
        return httpx.ReadError(str(error)) if headers_in else httpx.ConnectError(str(error))
    errno, message = error.errno, error.message or str(error)
    if errno == pycurl.E_OPERATION_TIMEDOUT:
        return httpx.ReadTimeout(message) if headers_in or "onnect" not in message \
            else httpx.ConnectTimeout(message)
    if errno in _CONNECT_ERRORS:
        return httpx.ConnectError(message)
    if errno in _PROTOCOL_ERRORS:
        return httpx.RemoteProtocolError(message)
    return httpx.ReadError(message)


def curl_http_client(*, max_clients: int, timeout: float | httpx.Timeout) -> httpx.AsyncClient:
    """An httpx client for the openai SDK, carried by a `CurlTransport`; proxies are
    libcurl's to find (from the environment), so httpx looks for none itself."""
    return httpx.AsyncClient(transport=CurlTransport(max_clients=max_clients), timeout=timeout,
                             follow_redirects=True, trust_env=False)
