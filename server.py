"""申论助手 backend: one Tornado process on one port.

The start-up story: command line → settings (exit 2 on a bad one) → logging (and
one warning per old Flask/gunicorn name) → shared resources → application → listen →
wait for SIGTERM/SIGINT → drain → exit 0. `.venv/bin/python server.py --help` lists
every setting.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.ioloop import PeriodicCallback

from core import __version__
from core.config import LEGACY, ConfigError, Settings, legacy_notices
from core.ops.logs import configure_logging

# The start-up phases in the "listening" log line count from here, once Tornado is
# imported (bench/b8 prints them).
STARTED = time.perf_counter()
GC_YOUNG_THRESHOLD = 20_000  # allocations between young collections (Python: 700)

if TYPE_CHECKING:
    from core.context import AppContext

log = logging.getLogger("shenlun.server")


@contextlib.contextmanager
def collector_paused_for_start_up() -> Iterator[None]:
    """Run start-up with the cyclic collector off, then freeze what it built out of it.

    Start-up builds ~1,000 classes (the openai SDK's pydantic models) and jieba's tables
    and leaves next to no cycles: the collector would only walk that growing heap again
    and again (0.2–0.4 s of CPU, bench/b8_memory_startup.py --baseline). What start-up
    built lives as long as the process, so it is frozen out of later full collections
    too; and young collections run less often, since a request leaves few cycles but
    allocates many containers (bench/b9_stream_relay.py, bench/b1_cache_hit.py). No
    gc.collect() before the freeze: ~100 ms of start-up to spare the little garbage it
    leaves.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
        gc.enable()


def make_app(settings: Settings, ctx: AppContext | None = None) -> tornado.web.Application:
    """The Tornado application; builds the shared resources unless given them."""
    # The service's modules (jieba, Whoosh, diskcache: most of the start-up) load only to
    # serve, so --help, --version and --check-config answer at once.
    from core.context import build_context
    from handlers import all_handlers
    from handlers.base import NotFoundHandler, log_request
    from handlers.proxies import TrustedProxies

    ctx = ctx or build_context(settings)
    return tornado.web.Application(
        all_handlers(),
        ctx=ctx,
        proxies=TrustedProxies(settings.trusted_proxies),
        default_handler_class=NotFoundHandler,
        log_function=log_request,
        compress_response=False,
    )


def make_server(app: tornado.web.Application, settings: Settings) -> HTTPServer:
    """An HTTPServer with limits that keep slow or greedy clients in check."""
    return HTTPServer(
        app,
        # Our handlers answer 413 themselves; this is only a backstop for bodies
        # sent without a Content-Length.
        max_body_size=settings.max_body_bytes * 4 + 1024 * 1024,
        max_header_size=64 * 1024,
        # Tornado uses the idle timeout for reading headers too, so a slow-loris
        # client that trickles its headers is cut off after it.
        idle_connection_timeout=settings.idle_connection_timeout,
        # BODY_TIMEOUT is kept by the handlers (BaseHandler._watch_body), for less per request.
    )


async def publish_metrics(ctx: AppContext) -> None:
    """Put this instance's snapshot on the fleet board (skipped while the store is down)."""
    try:
        await ctx.fleet.publish(await ctx.metrics_snapshot())
    except Exception:
        log.warning("could not publish metrics to the fleet board", exc_info=True)


async def drain(server: HTTPServer, ctx: AppContext, grace: float) -> None:
    """Stop accepting, let in-flight requests finish (at most `grace` s), close."""
    server.stop()
    ctx.draining = True
    await ctx.fleet.withdraw()
    deadline = time.monotonic() + grace
    # A counter polled at 50 ms, not an event: a drain needs no finer grain.
    while ctx.inflight_requests > 0 and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    if ctx.inflight_requests:
        log.warning("grace period over, closing %d request(s) still in flight", ctx.inflight_requests)
    await server.close_all_connections()
    await ctx.close()


async def serve(settings: Settings) -> int:
    with collector_paused_for_start_up():
        from core.context import build_context
        from core.knowledge.store import CorruptStore

        modules = time.perf_counter()
        try:
            ctx = build_context(settings)
        except CorruptStore as exc:  # never rebuild the index from a damaged store, or from nothing
            log.critical("refusing to start: %s", exc)
            return 3
        resources = time.perf_counter()
        # What the first requests need (the LLM client, jieba's dictionaries) loads in the
        # CPU executor while the app is built, and is loaded before the first request is
        # taken: a balancer that sees /health 200 may send real traffic at once.
        warming = ctx.warm_up()
        app = make_app(settings, ctx)
        server = make_server(app, settings)
        await asyncio.gather(*map(asyncio.wrap_future, warming))
    # Before listening: a SIGTERM that follows the first answer must drain and exit 0, and
    # the first requests are answered while the metrics are first published below.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Tornado's default accept queue (128) drops the SYNs of a larger burst, and each
    # dropped client waits a 1 s+ retransmit: size it to the requests we admit.
    server.listen(settings.port, settings.host, backlog=max(1024, settings.max_concurrent_requests))
    listening = time.perf_counter()
    if not ctx.keys.enabled:
        log.warning("no API_KEYS configured: every endpoint is open to anyone who can reach port %d",
                    settings.port)
    log.info("%s %s listening on %s:%d (llm=%s, data=%s, store=%s; started in %.2fs: modules %.2f, "
             "resources %.2f, handlers %.2f)", settings.server_id, __version__,
             settings.host or "*", settings.port, settings.llm_provider, settings.data_dir,
             settings.store_backend, listening - STARTED, modules - STARTED, resources - modules,
             listening - resources)
    publisher = PeriodicCallback(lambda: publish_metrics(ctx),
                                 settings.metrics_collection_interval * 1000)
    if settings.enable_metrics:
        await publish_metrics(ctx)
        publisher.start()
    await stop.wait()
    publisher.stop()
    log.info("shutting down: draining requests for up to %.0fs", settings.shutdown_grace_seconds)
    await drain(server, ctx, settings.shutdown_grace_seconds)
    log.info("stopped")
    return 0


def settings_help() -> str:
    """The --help epilog: every setting as core/config.py declares it, and the old names."""
    lines = ["settings (environment variables; a bad value exits 2 naming it):"]
    for env, default, text in Settings.describe():
        lines += [f"  {env:<28} default: {default or '(empty)'}", f"  {'':<28} {text}"]
    renamed = ", ".join(f"{old.env} -> {old.becomes}" for old in LEGACY if old.becomes)
    ignored = ", ".join(old.env for old in LEGACY if not old.becomes)
    lines += ["", "old names of the Flask/gunicorn version (docs/migration.md), each warned about once:",
              f"  read as the new name: {renamed}", f"  ignored: {ignored}"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="server.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="申论助手 backend: one Tornado process on one port. "
                    "Settings come from the environment; --port and --bind override two of them.",
        epilog=settings_help())
    parser.add_argument("--port", help="port to listen on (overrides PORT)")
    parser.add_argument("--bind", metavar="ADDRESS", help="address to listen on (overrides BIND_ADDRESS)")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the settings, print them and exit (0 valid, 2 a bad value)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)


def print_config(settings: Settings) -> None:
    """The settings in force and the old names' notices (for --check-config)."""
    print("configuration ok")
    for env, value in settings.effective():
        print(f"{env}={value}")
    for notice in legacy_notices():
        print(f"warning: {notice}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The command line's two settings go through the same parsers as the environment.
    cli = {name: value for name, value in (("PORT", args.port), ("BIND_ADDRESS", args.bind))
           if value is not None}
    try:
        settings = Settings.from_env({**os.environ, **cli})
    except ConfigError as exc:
        print(f"配置错误 / configuration error: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print_config(settings)
        return 0
    configure_logging(level=settings.log_level, fmt=settings.log_format,
                      server_id=settings.server_id,
                      secrets=(settings.openai_api_key, *settings.api_keys, *settings.admin_api_keys))
    for notice in legacy_notices():
        log.warning(notice)
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
