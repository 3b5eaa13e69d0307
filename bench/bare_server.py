"""The reference of the cache-hit benchmark: a bare Tornado JSON handler.

    python bench/bare_server.py --port N --answer FILE

POST /api/chat parses the JSON body and answers the object in FILE (serialized per
request, like any JSON handler), with nothing else: no auth, limits, cache, logging or
metrics. GET /health answers {"status": "ok"}. One process, like one instance.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

import tornado.web


class ChatHandler(tornado.web.RequestHandler):
    def initialize(self, answer: dict) -> None:
        self.answer = answer

    def post(self) -> None:
        json.loads(self.request.body)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(self.answer, ensure_ascii=False))


class HealthHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish({"status": "ok"})


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--answer", required=True)
    args = parser.parse_args()
    with open(args.answer, encoding="utf-8") as fh:
        answer = json.load(fh)
    asyncio.run(serve_until_signalled([(r"/api/chat", ChatHandler, {"answer": answer})], args.port))
    return 0


async def serve_until_signalled(routes: list, port: int) -> None:
    """Serve `routes` plus GET /health on 127.0.0.1:`port` until SIGTERM or SIGINT."""
    app = tornado.web.Application([*routes, (r"/health", HealthHandler)])
    server = app.listen(port, address="127.0.0.1")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()


if __name__ == "__main__":
    sys.exit(main())
