"""The base handler: JSON in, JSON out, one error shape, request ids.

Every error, ours or Tornado's (404, 405, uncaught exceptions), leaves through
`write_error` in the contract's shape: {"error": {code, message, status, request_id}}.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
from typing import TYPE_CHECKING, Any

import tornado.web
from tornado.web import HTTPError

from core.auth import ADMIN, PUBLIC, Access, allows
from core.errors import Forbidden, InvalidJson, PayloadTooLarge, RateLimited, ServiceError, Unauthorized
from core.ops.logs import access_record
from core.traffic.clients import client_identity
from core.traffic.ratelimit import Decision
from handlers.proxies import TrustedProxies, header_value

if TYPE_CHECKING:  # the type only: the HTTP layer does not import every core module
    from core.context import AppContext
from core.errors import CATALOGUE, for_status

log = logging.getLogger("shenlun.http")
access_log = logging.getLogger("shenlun.access")

# The status of each code of the catalogue (core/errors.py).
STATUS_BY_CODE = {code: cls.status for code, cls in CATALOGUE.items()}
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# The rate limit covers the chat and the knowledge endpoints; grading
# spends LLM calls like a chat, so it is covered too, and so is the OpenAI door to both.
RATE_LIMITED_PREFIXES = ("/api/chat", "/api/grade", "/api/knowledge", "/v1/chat/")
CORS_ALLOW_HEADERS = "Content-Type, Authorization, X-API-Key, X-Request-ID"
CORS_EXPOSE_HEADERS = ("X-Request-ID, X-Server-ID, X-Cache, Retry-After, "
                       "X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset")


def rate_limit_headers(decision: Decision) -> tuple[tuple[str, str], ...]:
    """The `X-RateLimit-*` headers of one rate-limit decision."""
    return (("X-RateLimit-Limit", str(decision.limit)),
            ("X-RateLimit-Remaining", str(decision.remaining)),
            ("X-RateLimit-Reset", str(decision.reset_seconds)))


@tornado.web.stream_request_body
class BaseHandler(tornado.web.RequestHandler):
    """JSON API handler. Bodies are streamed in so an oversized one is refused
    without being held in memory."""

    _request_id: str | None = None
    _body_parts: list[bytes]
    _body_size = 0
    _body_too_large = False
    cache_status: str | None = None  # X-Cache of this answer, for the access log
    error_code: str | None = None    # code of the error answered, for metrics
    _limit_headers: tuple[tuple[str, str], ...] = ()
    # Scope each method needs when keys are configured ("public", "client", "admin").
    # A method left out needs an admin key: the default fails closed.
    auth: dict[str, str] = {}
    access = Access(None)
    _cors_allowed = False

    # --- shared resources ---

    @functools.cached_property
    def ctx(self) -> AppContext:
        """The process's `AppContext` (built once in `server.py`); looked up once per
        request, which reads it a dozen times."""
        return self.application.settings["ctx"]

    @property
    def request_id(self) -> str:
        if self._request_id is None:
            given = header_value(self.request.headers, "X-Request-ID")
            # 32 random hex digits, as uuid4().hex gave, for a third of its cost.
            self._request_id = given if _REQUEST_ID.fullmatch(given) else os.urandom(16).hex()
        return self._request_id

    # --- request ---

    def set_default_headers(self) -> None:
        # Straight into the header map where the value is ours and safe (constants, the
        # request id checked against _REQUEST_ID, digits): set_header's per-value type
        # and character checks are for values from elsewhere, like SERVER_ID.
        headers = self._headers
        del headers["Server"]
        headers["Content-Type"] = "application/json; charset=UTF-8"
        headers["X-Content-Type-Options"] = "nosniff"
        headers["X-Request-ID"] = self.request_id
        self.set_header("X-Server-ID", self.ctx.settings.server_id)
        # Rate-limit headers survive the clear() that precedes an error answer.
        for name, value in self._limit_headers:
            headers[name] = value
        if self.ctx.settings.cors_origins:
            self._set_cors_headers()

    def _set_cors_headers(self) -> None:
        allowed = self.ctx.settings.cors_origins
        self.add_header("Vary", "Origin")
        origin = header_value(self.request.headers, "Origin")
        if origin and ("*" in allowed or origin in allowed):
            # Keys travel in headers, never cookies: credentials are never allowed.
            self.set_header("Access-Control-Allow-Origin", "*" if "*" in allowed else origin)
            self.set_header("Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS)
            self._cors_allowed = True

    def options(self, *args: str) -> None:
        """CORS preflight: which methods and headers a browser may use here."""
        methods = self._allowed_methods()
        self.set_header("Allow", methods)
        if self._cors_allowed:
            self.set_header("Access-Control-Allow-Methods", methods)
            self.set_header("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS)
            self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()

    _counted = False

    @property
    def client_address(self) -> str:
        """The client's address; forwarded headers only believed from trusted proxies."""
        proxies: TrustedProxies = self.application.settings["proxies"]
        return proxies.client_address(self.request.remote_ip or "", self.request.headers)

    @property
    def endpoint(self) -> str:
        """The route, with path arguments replaced by {id}, for metrics labels."""
        path = self.request.path
        for arg in self.path_args or ():
            path = path.replace(arg, "{id}", 1)
        return path

    _in_prepare = False
    _body_timer: asyncio.TimerHandle | None = None

    async def prepare(self) -> None:
        # A coroutine: Tornado awaits it before reading the body, and an exception
        # raised here still leaves through send_error/write_error.
        self._in_prepare = True  # cleared when prepare returns; still set if it raised
        ctx = self.ctx
        ctx.inflight_requests += 1
        ctx.metrics.request_started(self.request.path)
        self._counted = True
        self._body_parts = []
        self._watch_body(ctx.settings.body_timeout)
        declared = header_value(self.request.headers, "Content-Length")
        if declared.isdigit() and int(declared) > self._body_limit:
            raise self._too_large()
        if self.request.method == "OPTIONS":
            self._in_prepare = False
            return  # preflights carry no credentials and cost nothing
        self.access = ctx.keys.identify(self._presented_key())
        if self.request.path.startswith(RATE_LIMITED_PREFIXES):
            await self._check_rate_limit()
        self.require(self.auth.get(self.request.method, ADMIN))
        self._in_prepare = False

    def _watch_body(self, seconds: float) -> None:
        """Close the connection unless the body is in within `seconds` (BODY_TIMEOUT).

        Here rather than HTTPServer's body_timeout (server.py), which wraps every
        body read in a task, a chained future and a timeout: ~160 Python calls and
        several loop turns per request (bench/hit_costs.py --calls). This is one timer,
        cancelled when Tornado resolves the body (prepare runs before any of it is read)."""
        body = self.request._body_future  # set for @stream_request_body handlers: all of ours
        if body.done():
            return
        self._body_timer = timer = asyncio.get_running_loop().call_later(seconds, self._body_too_slow)
        body.add_done_callback(lambda _: timer.cancel())

    def _body_too_slow(self) -> None:
        log.info("Timeout reading body from %s (request %s)", self.request.remote_ip, self.request_id)
        self.request.connection.close()  # type: ignore[union-attr]  # a live request's

    def _presented_key(self) -> str | None:
        header = header_value(self.request.headers, "Authorization")
        if header[:7].lower() == "bearer ":
            return header[7:].strip()
        return header_value(self.request.headers, "X-API-Key").strip() or None

    def require(self, scope: str) -> None:
        """401/403 unless the request's key meets `scope` (no-op when no keys are set)."""
        if not self.ctx.keys.enabled or allows(self.access.scope, scope):
            return
        if self.access.scope is None:
            raise Unauthorized()
        raise Forbidden()

    async def _check_rate_limit(self) -> None:
        limiter = self.ctx.limiter
        if not limiter.enabled:
            return
        # A valid key is the client; anything else (no key, a wrong one) is its address,
        # so guessing keys spends the guesser's own bucket.
        key_digest = self.access.key_digest.hex() if self.access.key_digest else None
        decision = await limiter.check(client_identity(self.client_address, key_digest))
        self._limit_headers = headers = rate_limit_headers(decision)
        for name, value in headers:
            self._headers[name] = value
        if not decision.allowed:
            raise RateLimited(retry_after=decision.retry_after)

    @property
    def _body_limit(self) -> int:
        return self.ctx.settings.max_body_bytes

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"{PayloadTooLarge.message}（上限 {self._body_limit} 字节）")

    def data_received(self, chunk: bytes) -> None:
        if self._body_too_large:
            return
        self._body_size += len(chunk)
        if self._body_size > self._body_limit:
            self._body_too_large = True
            self._body_parts = []
        else:
            self._body_parts.append(chunk)

    def body_bytes(self) -> bytes:
        """The body as received (b"" when it was too large: `json_body` refuses it)."""
        if len(self._body_parts) != 1:
            self._body_parts = [b"".join(self._body_parts)]
        return self._body_parts[0]

    def json_body(self) -> Any:
        """The decoded JSON body; 413 when too large, 400 `invalid_json` when not JSON."""
        if self._body_too_large:
            raise self._too_large()
        raw = self.body_bytes()
        try:
            text = raw.decode("utf-8")
            value = json.loads(text)
            # A \ud800-style escape decodes to a lone surrogate, which no UTF-8 answer,
            # log line or store can hold: refuse it here, once.
            if _SURROGATE_ESCAPE.search(text):
                json.dumps(value, ensure_ascii=False).encode("utf-8")
            return value
        except UnicodeError:
            raise InvalidJson("请求体不是合法的 UTF-8 编码") from None
        except (ValueError, RecursionError):
            raise InvalidJson() from None

    def on_finish(self) -> None:
        self._account()

    def on_connection_close(self) -> None:
        # A client gone before its body arrived never reaches on_finish: account here,
        # or the drain would wait its whole grace period for a request that is no more.
        self._account()

    def _account(self) -> None:
        """Record the request as over, exactly once."""
        if self._body_timer is not None:  # a client gone mid-body leaves the body unresolved
            self._body_timer.cancel()
        if not self._counted:
            return
        self._counted = False
        self.ctx.inflight_requests -= 1
        self.ctx.metrics.request_finished(
            path=self.request.path, endpoint=self.endpoint, method=self.request.method,
            status=self.get_status(), seconds=self.request.request_time(),
            cache=self.cache_status, error_code=self.error_code)

    # --- response ---

    def write_json(self, obj: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(obj, ensure_ascii=False))

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ServiceError):
            status_code = exc.status
        super().send_error(status_code, **kwargs)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ServiceError):
            code, message = exc.code, exc.message
            for name, value in exc.headers.items():
                self.set_header(name, value)
            if exc.retry_after is not None:
                self.set_header("Retry-After", str(max(1, int(exc.retry_after + 0.999))))
        else:  # Tornado's own (unknown method, malformed request, …) or uncaught
            kind = for_status(exc.status_code if isinstance(exc, HTTPError) else status_code)
            code, message = kind.code, kind.message
        self.error_code = code
        if self._in_prepare:
            # Refused before the body was read: Tornado closes the connection after
            # this answer, so say so and the client will not reuse it.
            self.set_header("Connection", "close")
        if status_code == 405:
            self.set_header("Allow", self._allowed_methods())
        self.finish(json.dumps(self.error_object(code, message, status_code), ensure_ascii=False))

    def error_object(self, code: str, message: str, status: int) -> dict[str, Any]:
        """The contract's error JSON."""
        return {"error": {"code": code, "message": message, "status": status,
                          "request_id": self.request_id}}

    def _allowed_methods(self) -> str:
        """The methods this route answers, for `Allow` (405 and preflights)."""
        return ", ".join(m for m in self.SUPPORTED_METHODS
                         if m not in ("HEAD", "OPTIONS") and self._implements(m))

    def _implements(self, method: str) -> bool:
        return getattr(type(self), method.lower()) is not getattr(tornado.web.RequestHandler, method.lower())

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ServiceError):
            return  # an expected answer, not a fault: the access line records it
        super().log_exception(typ, value, tb)


class NotFoundHandler(BaseHandler):
    """Unknown paths: a JSON 404 instead of Tornado's HTML page."""

    endpoint = "(unmatched)"  # one label for every scanner's path
    auth = {m: PUBLIC for m in tornado.web.RequestHandler.SUPPORTED_METHODS}

    def _not_found(self, *args: str) -> None:
        raise HTTPError(404)

    get = post = put = patch = delete = head = _not_found


def log_request(handler: tornado.web.RequestHandler) -> None:
    """One access line per request: id, client, method, path, status, latency, cache.

    The query string is left out: it may carry user text (search queries)."""
    status = handler.get_status()
    level = logging.INFO if status < 500 else logging.ERROR
    if not access_log.isEnabledFor(level):
        return
    request = handler.request
    request_id = getattr(handler, "request_id", "-")
    cache = getattr(handler, "cache_status", None)
    client, method, path = request.remote_ip, request.method, request.path
    latency_ms = round(1000.0 * request.request_time(), 1)
    # The record is built here rather than by Logger.log, which looks up the calling
    # frame and %-formats the message twice (filter, formatter): 26 → 11 µs a line.
    access_log.handle(access_record(
        access_log.name, level, __file__,
        f"{request_id} {client} {method} {path} {status} {latency_ms:.1f}ms cache={cache or '-'}",
        {"request_id": request_id, "client": client, "method": method, "path": path,
         "status": status, "latency_ms": latency_ms, "cache": cache}))
