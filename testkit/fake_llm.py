"""A fake OpenAI-compatible server for tests: real HTTP on 127.0.0.1.

It runs its own Tornado loop in a thread, so in-process app tests and server
subprocesses can both talk to it through the real `openai` client. Behaviour is
set per test through attributes (latency, error status, garbage bodies, a stream
that fails midway); `calls` counts requests and `requests` keeps their bodies.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.testing import bind_unused_port


class FakeLLM:
    def __init__(self) -> None:
        self.reset()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def reset(self) -> None:
        self.latency = 0.0            # seconds before the answer (or the first chunk)
        self.chunk_delay = 0.0        # seconds between stream chunks
        self.status = 200             # an error status to answer with
        self.garbage = False          # answer 200 with a body that is not JSON
        self.refuse_json_mode = False  # 400 to a request with `response_format`, as some servers do
        self.fail_after_chunks: int | None = None  # drop the stream after n chunks
        self.chunk_chars = 8          # characters per stream chunk
        self.reply: Callable[[dict[str, Any]], str] = lambda body: "这是模拟大模型的回答：" + \
            body["messages"][-1]["content"][:40]
        self.calls = 0
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # each request's headers
        self.client_ports: set[int] = set()     # one per TCP connection the requests came on
        self.disconnects = 0          # streams whose client went away before the end

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # --- lifecycle ---

    def start(self) -> FakeLLM:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            sock, self.port = bind_unused_port()
            app = tornado.web.Application([(r"/v1/chat/completions", _Completions, {"fake": self})])
            server = HTTPServer(app)
            server.add_sockets([sock])
            ready.set()
            self._loop.run_forever()
            server.stop()

        self._thread = threading.Thread(target=run, name="fake-llm", daemon=True)
        self._thread.start()
        ready.wait(5)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)


def _chunk(model: str, content: str | None, finish: str | None = None) -> str:
    delta = {"content": content} if content is not None else {}
    return json.dumps({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
        "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }, ensure_ascii=False)


class _Completions(tornado.web.RequestHandler):
    def initialize(self, fake: FakeLLM) -> None:
        self.fake = fake

    async def post(self) -> None:
        fake = self.fake
        body = json.loads(self.request.body)
        fake.calls += 1
        fake.requests.append(body)
        fake.headers.append(dict(self.request.headers))
        fake.client_ports.add(self.request.connection.stream.socket.getpeername()[1])
        if fake.latency:
            await asyncio.sleep(fake.latency)
        if fake.status != 200:
            self.set_status(fake.status)
            self.finish({"error": {"message": "fake failure", "type": "server_error"}})
            return
        if fake.refuse_json_mode and "response_format" in body:
            self.set_status(400)
            self.finish({"error": {"message": "Unsupported parameter: response_format",
                                   "type": "invalid_request_error"}})
            return
        if fake.garbage:
            self.set_header("Content-Type", "application/json")
            self.finish("<html>this is not json")
            return
        text = fake.reply(body)
        model = body.get("model", "fake-model")
        if not body.get("stream"):
            self.finish({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 11, "completion_tokens": len(text),
                          "total_tokens": 11 + len(text)},
            })
            return
        self.set_header("Content-Type", "text/event-stream")
        size = fake.chunk_chars
        pieces = [text[i:i + size] for i in range(0, len(text), size)]
        try:
            for n, piece in enumerate(pieces):
                if fake.fail_after_chunks is not None and n >= fake.fail_after_chunks:
                    # Drop the connection mid-stream, as a crashed upstream would.
                    self.request.connection.stream.close()
                    return
                self.write(f"data: {_chunk(model, piece)}\n\n")
                await self.flush()
                if fake.chunk_delay:
                    await asyncio.sleep(fake.chunk_delay)
            self.write(f"data: {_chunk(model, None, 'stop')}\n\n")
            self.write("data: [DONE]\n\n")
            await self.flush()
        except StreamClosedError:
            fake.disconnects += 1
