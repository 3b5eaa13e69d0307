"""POST /api/chat: whole JSON answers and Server-Sent Events streams."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

from tornado.iostream import StreamClosedError

from core.auth import CLIENT
from core.chat.service import ChatRequest
from core.errors import ServiceError
from core.grading import is_grade_request
from handlers.base import BaseHandler, log

# What json.dumps(..., ensure_ascii=False) writes for a str (the C encoder), for the
# delta event's one field.
_json_string = json.encoder.encode_basestring


class EventStreamHandler(BaseHandler):
    """Relays a core event stream (`ChatService.stream`) as Server-Sent Events.

    Subclasses say how each event is written (`format_event`); the relay owns the
    rest: nothing goes out before the first delta, so an error before it is a plain
    error answer, and a client that goes away cancels the relay and with it the
    upstream call.

    The relay runs in the request's own task, not in one of its own (a task, its wait
    and their callbacks per stream add up at 1,000 streams): `on_connection_close`
    cancels that task while it relays, and the relay takes the cancellation back
    (`uncancel`), so the request ends as a normal one."""

    _relaying: asyncio.Task[Any] | None = None  # the request's task, while it relays
    _client_left = False

    def format_event(self, kind: str, data: dict[str, Any]) -> str:
        """The SSE text for one event ("" to send nothing)."""
        raise NotImplementedError

    async def relay(self, events: AsyncGenerator[tuple[str, dict[str, Any]], None]) -> None:
        """Stream `events` to the client until they end or the client leaves."""
        # The first event ("start") comes once the answer is committed: an error before
        # it (busy) is raised here and answered with its own status.
        try:
            first = await events.__anext__()
        except BaseException:
            await events.aclose()
            raise
        self.cache_status = first[1]["cache"]
        task = asyncio.current_task()
        self._relaying = task
        try:
            await self._send_events(first, events)
        except asyncio.CancelledError:
            if not self._client_left or task is None:
                raise  # a cancellation of someone else's (shutdown): it goes on
            task.uncancel()
        finally:
            self._relaying = None

    def _start_stream(self) -> None:
        self.set_header("X-Cache", self.cache_status or "BYPASS")
        self.set_header("Content-Type", "text/event-stream; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")

    async def _send_events(self, first: tuple[str, dict[str, Any]],
                           events: AsyncGenerator[tuple[str, dict[str, Any]], None]) -> None:
        # Nothing goes out before the first delta (start and sources wait for it): an
        # upstream that fails before it, unreachable say, is then a plain error answer
        # (502 that Nginx may retry elsewhere), not a 200 stream that only carries an error.
        held: list[tuple[str, dict[str, Any]]] | None = [first]
        try:
            async for kind, data in events:
                if held is not None and kind == "sources":
                    held.append((kind, data))
                    continue
                if held is not None:
                    self._start_stream()
                    self.write("".join(self.format_event(*early) for early in held))
                    held = None
                await self._send(kind, data)
        except StreamClosedError:
            pass
        except Exception as exc:
            if held is not None:
                raise  # nothing sent yet: write_error answers with the error's status
            # Headers are sent: the error travels as an event.
            if not isinstance(exc, ServiceError):
                log.exception("chat stream failed (request %s)", self.request_id)
                exc = ServiceError()
            self.error_code = exc.code
            try:
                await self._send("error", self.error_object(exc.code, exc.message, exc.status))
            except StreamClosedError:
                pass
        finally:
            await events.aclose()

    async def _send(self, kind: str, data: dict[str, Any]) -> None:
        text = self.format_event(kind, data)
        if text:
            self.write(text)
        await self.flush()

    def on_connection_close(self) -> None:
        super().on_connection_close()
        if self._relaying is not None and not self._relaying.done():
            self._client_left = True
            self._relaying.cancel()


class ChatHandler(EventStreamHandler):
    auth = {"POST": CLIENT}

    async def post(self) -> None:
        raw = self.body_bytes()
        recent = self.ctx.chat.recent_requests
        req = recent.get(raw)
        if req is None:
            payload = self.json_body()
            if is_grade_request(payload):
                await self._grade(payload)
                return
            req = ChatRequest.from_payload(payload)
            recent.put(raw, req)
        # User text only at DEBUG, and cut short: essays do not belong in logs.
        log.debug("chat %s mode=%s stream=%s question=%.60r", self.request_id, req.mode,
                  req.stream, req.question)
        if not req.stream:
            result = await self.ctx.chat.answer(req)
            self.cache_status = result.cache_status
            self.set_header("X-Cache", result.cache_status)
            self.finish(result.encoded())
            return
        await self.relay(self.ctx.chat.stream(req))

    async def _grade(self, payload: dict[str, Any]) -> None:
        body = await self.ctx.grading.grade_in_chat(payload)
        self.cache_status = "BYPASS"
        self.set_header("X-Cache", "BYPASS")
        self.write_json(body)

    def format_event(self, kind: str, data: dict[str, Any]) -> str:
        if kind == "delta":  # most events: the one field spliced in, no dict walked
            return f'data: {{"delta": {_json_string(data["delta"])}}}\n\n'
        if kind == "start":
            return ""
        return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


default_handlers = [(r"/api/chat", ChatHandler)]
