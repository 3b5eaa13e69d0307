"""HTTP calls over libcurl (pycurl's multi interface on the event loop), for the
OpenAI-compatible provider: the `openai` client builds the request once (auth, base URL,
headers) and maps error statuses to its error types (core/llm.py); libcurl carries every call.

Why libcurl: httpx's own transport (httpcore over anyio) is Python from the socket up,
and its pool walks every connection it holds on each request and release, O(n²) in the
connections in use (encode/httpcore#1035; the service used to spread calls over pool
shards of 8 connections). At 1,000 streamed answers in flight the service spent 8.3 ms
of CPU per answer with it, 4.6 ms over Tornado's CurlAsyncHTTPClient
(bench/b9_stream_relay.py, one run each, same machine). libcurl keeps HTTP/1.1
connections alive in its pool (one TLS handshake per connection, not per call), decodes
chunked bodies and speaks TLS in C, and honours the proxy variables of the environment
(`https_proxy`, `http_proxy` in lower case only, `no_proxy`).

Why not Tornado's client any more: it sets ~40 options on every request, parses each
header line in Python and copies every request into its own objects: ~0.4 ms of CPU per
call, a quarter of an LLM call's cost (bench/hit_costs.py). Here one `CurlMulti` per
transport is driven from the loop (`socket_action` on the sockets libcurl names, its
timer as a loop timer), and each easy handle is made once with its fixed options
(CA bundle, no signals, no trace, no redirects) and reused: a request sets its URL,
headers, body and callbacks, nothing else. Header lines are kept as bytes and split
into fields only when someone asks for them.

Protocol of one request (all on the event loop): `open()` starts the transfer (or
queues it while `max_clients` run) and returns its `CurlStream`; the head arrives
through the header callback (`await stream.head()`), body bytes through the write
callback (those of one `socket_action` together, drained by the reader). The end of
the transfer, or its failure as the httpx exception the openai client maps (httpx's
own transport raises the same), closes the stream. Closing the stream before that
removes the handle from the multi: libcurl stops the transfer at once and closes its
connection (never reused half read). The caller closes every stream it opens.

Imported by `OpenAIProvider.prepare()` only: pycurl, httpx and certifi load in the
executor (the warm-up before the server listens), never on the event loop.
"""
from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import AsyncIterator, Callable, Sequence

import certifi
import httpx
import pycurl

# libcurl's error numbers (curl/curl.h) as the httpx exceptions the openai client maps
# to APIConnectionError / APITimeoutError; any other is a ReadError.
_CONNECT_ERRORS = {pycurl.E_COULDNT_RESOLVE_PROXY, pycurl.E_COULDNT_RESOLVE_HOST,
                   pycurl.E_COULDNT_CONNECT, pycurl.E_SSL_CONNECT_ERROR,
                   pycurl.E_PEER_FAILED_VERIFICATION, pycurl.E_SSL_CACERT_BADFILE}
_PROTOCOL_ERRORS = {pycurl.E_UNSUPPORTED_PROTOCOL, pycurl.E_URL_MALFORMAT,
                    pycurl.E_FTP_WEIRD_SERVER_REPLY,  # 8, CURLE_WEIRD_SERVER_REPLY since 7.51
                    pycurl.E_GOT_NOTHING, pycurl.E_PARTIAL_FILE, pycurl.E_BAD_CONTENT_ENCODING}
# Request headers libcurl would add on its own: `Expect: 100-continue` holds a body of
# over 1 MiB back for a second, `Pragma` is noise (both off, as Tornado's client did).
_SUPPRESSED = ("Expect:", "Pragma:")


class CurlTransport:
    """HTTP calls through one libcurl multi handle of its own (`max_clients` transfers
    at once; more wait in a queue, first come first served).

    The multi belongs to the event loop it is driven from, so it is made by the first
    request, on the loop, not where the transport is built (the executor)."""

    def __init__(self, *, max_clients: int, ca_certs: str | None = None) -> None:
        self._max_clients = max_clients
        # The CA bundle httpx would use (SSL_CERT_FILE, else certifi's): the one built
        # into the pycurl wheel's libcurl points at a path the host may not have.
        self._ca_certs = ca_certs or os.environ.get("SSL_CERT_FILE") or certifi.where()
        self._multi: CurlMulti | None = None

    def open(self, method: str, url: str, headers: Sequence[str], body: bytes, *,
             connect_timeout: float | None = None, read_timeout: float | None = None) -> CurlStream:
        """Start one transfer (on the loop); `headers` are "Name: value" lines. The
        stream's `head()` is awaited for the status, then the stream read for the body."""
        if self._multi is None:
            self._multi = CurlMulti(self._max_clients, self._ca_certs)
        stream = CurlStream(read_timeout)
        self._multi.start(stream, method, url, [*headers, *_SUPPRESSED], body, connect_timeout or 0)
        return stream

    async def aclose(self) -> None:
        """Stop every transfer and free libcurl's state (a later `open()` starts afresh)."""
        if self._multi is not None:
            self._multi.close()
            self._multi = None


class CurlMulti:
    """One `pycurl.CurlMulti` driven by the running loop, and its reusable easy handles.

    libcurl tells us which sockets to watch (SOCKETFUNCTION) and when to call it back
    (TIMERFUNCTION); the loop calls `socket_action` for each, and finished transfers are
    collected after every call. Never re-entered: its callbacks only record and schedule."""

    def __init__(self, max_clients: int, ca_certs: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._watch)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._set_timer)
        self._max_clients = max_clients
        self._ca_certs = ca_certs
        self._handles: list[pycurl.Curl] = []  # made as transfers need them, up to max_clients
        self._free: list[pycurl.Curl] = []
        self._queue: collections.deque[tuple[CurlStream, str, str, list[str], bytes, float]] = \
            collections.deque()
        self._running: dict[pycurl.Curl, CurlStream] = {}
        self._watched: dict[int, int] = {}  # fd → the pycurl.POLL_* libcurl asked for
        self._timer: asyncio.TimerHandle | None = None

    @staticmethod
    def _easy(ca_certs: str) -> pycurl.Curl:
        curl = pycurl.Curl()
        curl.setopt(pycurl.NOSIGNAL, 1)
        # Off for good: libcurl's trace holds the request's headers, the API key among them.
        curl.setopt(pycurl.VERBOSE, 0)
        curl.setopt(pycurl.CAINFO, ca_certs)
        curl.setopt(pycurl.FOLLOWLOCATION, 0)
        curl.setopt(pycurl.TIMEOUT_MS, 0)
        return curl

    def start(self, stream: CurlStream, method: str, url: str, headers: list[str], body: bytes,
              connect_timeout: float) -> None:
        """Run the transfer now if a handle is free, else when one is."""
        if not self._free and len(self._handles) < self._max_clients:
            self._handles.append(self._easy(self._ca_certs))
            self._free.append(self._handles[-1])
        if not self._free:
            self._queue.append((stream, method, url, headers, body, connect_timeout))
            stream.dequeue = self._dequeue
            return
        curl = self._free.pop()
        curl.setopt(pycurl.URL, url)
        curl.setopt(pycurl.HTTPHEADER, headers)
        curl.setopt(pycurl.CUSTOMREQUEST, method)
        curl.setopt(pycurl.NOBODY, method == "HEAD")
        if body or method not in ("GET", "HEAD"):
            curl.setopt(pycurl.POSTFIELDS, body)
        else:
            curl.setopt(pycurl.HTTPGET, 1)
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, int(connect_timeout * 1000))
        curl.setopt(pycurl.HEADERFUNCTION, stream.header_line)
        curl.setopt(pycurl.WRITEFUNCTION, stream.feed)
        stream.abort = lambda: self._abort(curl, stream)
        self._running[curl] = stream
        self._multi.add_handle(curl)  # calls _set_timer(0): the transfer starts from the loop

    def _dequeue(self, stream: CurlStream) -> None:
        self._queue = collections.deque(item for item in self._queue if item[0] is not stream)

    def _abort(self, curl: pycurl.Curl, stream: CurlStream) -> None:
        # Only while the handle still carries this stream's transfer (not a later one's).
        if self._running.get(curl) is stream:
            del self._running[curl]
            self._multi.remove_handle(curl)  # stops the transfer; its connection is closed
            self._release(curl)

    def _release(self, curl: pycurl.Curl) -> None:
        # The stream's callbacks go with it (a finished stream is not kept alive by
        # the handle); the options set once stay.
        curl.setopt(pycurl.HEADERFUNCTION, _ignore)
        curl.setopt(pycurl.WRITEFUNCTION, _ignore)
        self._free.append(curl)
        while self._free and self._queue:
            self.start(*self._queue.popleft())

    # --- libcurl's callbacks: record, schedule, never call back into the multi ---

    def _watch(self, what: int, fd: int, multi: object, data: object) -> None:
        before = self._watched.pop(fd, 0)
        if before in (pycurl.POLL_IN, pycurl.POLL_INOUT):
            self._loop.remove_reader(fd)
        if before in (pycurl.POLL_OUT, pycurl.POLL_INOUT):
            self._loop.remove_writer(fd)
        if what == pycurl.POLL_REMOVE or what == pycurl.POLL_NONE:
            return
        self._watched[fd] = what
        if what in (pycurl.POLL_IN, pycurl.POLL_INOUT):
            self._loop.add_reader(fd, self._act, fd, pycurl.CSELECT_IN)
        if what in (pycurl.POLL_OUT, pycurl.POLL_INOUT):
            self._loop.add_writer(fd, self._act, fd, pycurl.CSELECT_OUT)

    def _set_timer(self, timeout_ms: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if timeout_ms >= 0:
            self._timer = self._loop.call_later(timeout_ms / 1000, self._on_timer)

    # --- from the loop ---

    def _on_timer(self) -> None:
        self._timer = None
        self._act(pycurl.SOCKET_TIMEOUT, 0)

    def _act(self, fd: int, events: int) -> None:
        while True:
            try:
                code, _ = self._multi.socket_action(fd, events)
            except pycurl.error as exc:
                code = exc.args[0]
            if code != pycurl.E_CALL_MULTI_PERFORM:
                break
        self._collect()

    def _collect(self) -> None:
        while True:
            queued, ok, failed = self._multi.info_read()
            for curl in ok:
                self._finished(curl, None)
            for curl, errno, message in failed:
                self._finished(curl, (errno, message))
            if not queued:
                return

    def _finished(self, curl: pycurl.Curl, error: tuple[int, str] | None) -> None:
        stream = self._running.pop(curl, None)
        if stream is None:  # stopped by its reader already
            return
        self._multi.remove_handle(curl)
        self._release(curl)
        stream.fetched(error)

    def close(self) -> None:
        """Stop every transfer (their streams end as failed reads) and free libcurl's state."""
        for curl, stream in list(self._running.items()):
            self._running.pop(curl)
            self._multi.remove_handle(curl)
            stream.fetched((pycurl.E_ABORTED_BY_CALLBACK, "the HTTP client was closed"))
        for fd in list(self._watched):
            self._watch(pycurl.POLL_REMOVE, fd, None, None)
        if self._timer is not None:
            self._timer.cancel()
        self._queue.clear()
        for curl in self._handles:
            curl.close()
        self._multi.close()


def _ignore(*_: object) -> None:
    """A callback that does nothing (a released handle's, a stream's before it runs)."""


class CurlStream:
    """One transfer: its head as it arrives, then its body chunks, then its end.

    The read timeout is kept here, not by libcurl (whose low-speed limit averages
    over several seconds, so it would fire late after an upload): one timer per
    transfer, pushed back lazily to the last byte's time plus the timeout."""

    def __init__(self, read_timeout: float | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._status = 0
        self._lines: list[bytes] = []  # the head's field lines, as libcurl passed them
        self._head: asyncio.Future[int] = self._loop.create_future()
        self._chunks: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._done = False     # the transfer ended (or failed, or timed out)
        self._closed = False   # the reader is gone
        self._error: httpx.TransportError | None = None
        self._read_timeout = read_timeout
        self._last_read = self._loop.time()
        self._watch = self._loop.call_at(self._last_read + read_timeout, self._check_read) \
            if read_timeout else None
        self.abort: Callable[[], None] = _ignore  # set by the multi once the transfer runs
        self.dequeue: Callable[[CurlStream], None] | None = None  # while it waits for a handle

    # --- from libcurl, during socket_action ---

    def header_line(self, line: bytes) -> None:
        """One header line (the status line, a field, or the blank line that ends a
        head; an interim 1xx head is skipped)."""
        self._last_read = self._loop.time()
        if line.startswith(b"HTTP/"):
            code = line.partition(b" ")[2][:3]
            self._status = int(code) if code.isdigit() else 0
            self._lines = []
        elif line.strip():
            self._lines.append(line)
        elif self._status >= 200 and not self._head.done():
            self._head.set_result(self._status)

    def feed(self, chunk: bytes) -> None:
        """Body bytes."""
        self._last_read = self._loop.time()
        self._chunks.append(chunk)
        self._wake()

    # --- from the multi, on the loop ---

    def fetched(self, error: tuple[int, str] | None) -> None:
        """The transfer ended: the body is complete (`error` None), or it failed
        (libcurl's error number and message)."""
        if self._done:
            return  # closed, or timed out: the reader has its answer
        self._end(_as_httpx_error(*error, headers_in=self._head.done()) if error is not None else None)

    def _check_read(self) -> None:
        if self._done:
            return
        due = self._last_read + (self._read_timeout or 0)
        if self._loop.time() < due:
            self._watch = self._loop.call_at(due, self._check_read)
            return
        self._stop()
        self._end(httpx.ReadTimeout(f"no bytes from the upstream in {self._read_timeout} s"))

    def _stop(self) -> None:
        """Stop the transfer where it is: waiting for a handle, or running."""
        if self.dequeue is not None:
            self.dequeue(self)
            self.dequeue = None
        self.abort()

    def _end(self, error: httpx.TransportError | None) -> None:
        self._done = True
        self._error = error
        if self._watch is not None:
            self._watch.cancel()
        if not self._head.done() and not self._closed:
            self._head.set_exception(error or httpx.RemoteProtocolError("no response head"))
        self._wake()

    # --- from the reader ---

    async def head(self) -> int:
        """The status once the head is in; the transfer's error if it failed first."""
        return await self._head

    def fields(self) -> list[tuple[bytes, bytes]]:
        """The head's fields as (name, value) pairs, split on demand."""
        fields: list[tuple[bytes, bytes]] = []
        for line in self._lines:
            if line[:1] in (b" ", b"\t") and fields:  # an obsolete folded continuation
                name, value = fields.pop()
                fields.append((name, value + b" " + line.strip()))
                continue
            name, _, value = line.partition(b":")
            fields.append((name.strip(), value.strip()))
        return fields

    async def read(self) -> bytes:
        """The whole body (for a short answer or an error status)."""
        return b"".join([chunk async for chunk in self])

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
        """Stop reading; a transfer still running is stopped at once, its connection
        closed (an upstream that has sent nothing yet, a model still thinking, is hung
        up on too)."""
        self._closed = True
        self._chunks = []
        if not self._done:
            self._stop()
            self._end(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _as_httpx_error(errno: int, message: str, *, headers_in: bool) -> httpx.TransportError:
    """A failed transfer (libcurl's error number) as the httpx exception httpx's own
    transport would raise."""
    message = message or f"libcurl error {errno}"
    if errno == pycurl.E_OPERATION_TIMEDOUT:
        return httpx.ReadTimeout(message) if headers_in or "onnect" not in message \
            else httpx.ConnectTimeout(message)
    if errno in _CONNECT_ERRORS:
        return httpx.ConnectError(message)
    if errno in _PROTOCOL_ERRORS:
        return httpx.RemoteProtocolError(message)
    return httpx.ReadError(message)

