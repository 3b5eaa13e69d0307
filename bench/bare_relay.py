"""The reference of the streaming benchmark: a bare Tornado relay of an SSE stream.

    python bench/bare_relay.py --port N --upstream http://127.0.0.1:M/v1

POST /api/chat with `"stream": true` asks the upstream for a streamed completion and
relays each delta the least a gateway that understands the stream can: `json.loads` of
each upstream `data:` line, `json.dumps` of the delta, one write and flush per delta.
Without it (the reference of bench/b2_cache_miss.py), one non-streamed completion:
`json.loads` of the upstream's body, `json.dumps` of `{"answer": …}`. No auth, limits,
cache, logging or metrics. GET /health answers {"status": "ok"}.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys

import tornado.web
from bare_server import serve_until_signalled
from tornado.httpclient import AsyncHTTPClient


class RelayHandler(tornado.web.RequestHandler):
    def initialize(self, upstream: str) -> None:
        self.upstream = upstream
        self.buffer = b""

    def on_chunk(self, chunk: bytes) -> None:
        lines = (self.buffer + chunk).split(b"\n")
        self.buffer = lines.pop()
        for line in lines:
            if line.startswith(b"data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
                if delta:
                    self.write("data: " + json.dumps({"delta": delta}, ensure_ascii=False) + "\n\n")
                    self.flush()

    async def post(self) -> None:
        payload = json.loads(self.request.body)
        stream = bool(payload.get("stream"))
        body = json.dumps({"model": "fake-model", "stream": stream,
                           "messages": [{"role": "user", "content": payload["message"]}]})
        if not stream:
            answer = await AsyncHTTPClient().fetch(self.upstream + "/chat/completions", method="POST",
                                                   body=body, headers={"Content-Type": "application/json"})
            content = json.loads(answer.body)["choices"][0]["message"]["content"]
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(json.dumps({"answer": content}, ensure_ascii=False))
            return
        self.set_header("Content-Type", "text/event-stream; charset=UTF-8")
        await AsyncHTTPClient().fetch(self.upstream + "/chat/completions", method="POST", body=body,
                                      headers={"Content-Type": "application/json"},
                                      streaming_callback=self.on_chunk, request_timeout=600)
        self.finish("event: done\ndata: {}\n\n")


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    AsyncHTTPClient.configure(None, max_clients=2000)
    await serve_until_signalled([(r"/api/chat", RelayHandler, {"upstream": args.upstream})], args.port)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
