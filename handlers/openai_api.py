"""The OpenAI-compatible API: POST /v1/chat/completions and GET /v1/models.

The same chat and grading services as `/api/chat`, behind the same keys, rate limit,
concurrency cap, cache, metrics and access log; only the shapes differ, and errors
use OpenAI's `{"error": {"message", "type", "code", "param"}}` so SDKs raise the
exception that matches the status.
"""
from __future__ import annotations

import json
from typing import Any

from core.auth import CLIENT
from core.chat.openai_compat import Completion, CompletionRequest, error_body, model_list
from core.grading import GradeRequest, render_text
from handlers.base import BaseHandler
from handlers.chat import EventStreamHandler


class OpenAIErrors:
    """Errors of `/v1/*` in OpenAI's shape (mixed in before BaseHandler)."""

    def error_object(self, code: str, message: str, status: int) -> dict[str, Any]:
        return error_body(code, message)


class ModelsHandler(OpenAIErrors, BaseHandler):
    auth = {"GET": CLIENT}

    def get(self) -> None:
        self.write_json(model_list())


class CompletionsHandler(OpenAIErrors, EventStreamHandler):
    auth = {"POST": CLIENT}
    _render: Completion

    async def post(self) -> None:
        req = CompletionRequest.from_payload(self.json_body())
        self._render = Completion(req.model, include_usage=req.include_usage)
        if req.grade is not None:
            await self._grade(req, req.grade)
            return
        chat = req.chat
        if not chat.stream:
            result = await self.ctx.chat.answer(chat)
            self.cache_status = result.cache_status
            self.set_header("X-Cache", result.cache_status)
            self.write_json(self._render.whole(result.body["answer"], result.body))
            return
        await self.relay(self.ctx.chat.stream(chat))

    async def _grade(self, req: CompletionRequest, payload: dict[str, Any]) -> None:
        """`shenlun-grade`: the grade rendered as text, the grade itself under `shenlun`."""
        grade = await self.ctx.grading.grade(GradeRequest.from_payload(payload))
        self.cache_status = "BYPASS"
        self.set_header("X-Cache", "BYPASS")
        text, meta = render_text(grade), {"mode": "grade", "char_count": grade.get("char_count")}
        if not req.stream:
            self.write_json(self._render.whole(text, meta, {"grade": grade}))
            return
        # Chat clients stream by default: the grade is whole already, so it goes as one chunk.
        self.set_header("Content-Type", "text/event-stream; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.write(self._sse(self._render.opening()) + self._sse(self._render.chunk({"content": text}))
                   + "".join(self._sse(c) for c in self._render.closing(meta, {"grade": grade}))
                   + "data: [DONE]\n\n")
        self.finish()

    def format_event(self, kind: str, data: dict[str, Any]) -> str:
        render = self._render
        if kind == "start":
            return self._sse(render.opening())
        if kind == "delta":
            return self._sse(render.chunk({"content": data["delta"]}))
        if kind == "sources":  # early, for frontends that show sources while the answer streams
            return self._sse(render.chunk({}, extra=data))
        if kind == "done":
            return "".join(self._sse(c) for c in render.closing(data)) + "data: [DONE]\n\n"
        if kind == "error":  # the openai SDK raises APIError on a data line with "error"
            return self._sse(data)
        return ""

    @staticmethod
    def _sse(obj: dict[str, Any]) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


default_handlers = [
    (r"/v1/chat/completions", CompletionsHandler),
    (r"/v1/models", ModelsHandler),
]
