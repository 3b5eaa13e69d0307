"""GET /health, GET /api/metrics (JSON, ?scope=fleet) and GET /metrics (Prometheus)."""
from __future__ import annotations

import os
import time

from core import __version__
from core.auth import ADMIN, CLIENT, PUBLIC
from core.errors import InvalidRequest, NotFound
from core.ops.metrics import EXPOSITION_CONTENT_TYPE
from handlers.base import BaseHandler


class HealthHandler(BaseHandler):
    auth = {"GET": PUBLIC}

    async def get(self) -> None:
        settings = self.ctx.settings
        if not settings.health_check_enabled:
            raise NotFound()
        ok, checks = await self.ctx.health.report()
        self.write_json({
            "status": "ok" if ok else "fail",
            "server_id": settings.server_id, "pid": os.getpid(), "version": __version__,
            "uptime_s": round(time.time() - self.ctx.metrics.started, 3),
            "draining": self.ctx.draining,
            "checks": checks,
            **self.ctx.health.figures,  # disk_free_bytes, documents
            # The upstream's last state from real calls; never a call of its own.
            "llm": {"provider": self.ctx.llm.name, **self.ctx.meter.upstream.as_dict()},
        }, status=200 if ok else 503)


class MetricsHandler(BaseHandler):
    auth = {"GET": CLIENT}  # the fleet view needs an admin key, checked below

    async def get(self) -> None:
        if not self.ctx.settings.enable_metrics:
            raise NotFound()
        scope = self.get_query_argument("scope", "instance")
        if scope not in ("instance", "fleet"):
            raise InvalidRequest("参数 scope 必须是 instance 或 fleet")
        if scope == "fleet":
            self.require(ADMIN)
        snapshot = await self.ctx.metrics_snapshot()
        if scope == "instance":
            self.write_json(snapshot)
            return
        # Publish first, so the fleet view includes this instance as of now.
        await self.ctx.fleet.publish(snapshot)
        self.write_json(await self.ctx.fleet.fleet(own=snapshot))


class PrometheusHandler(BaseHandler):
    auth = {"GET": PUBLIC}  # scraped per instance; restrict at the network or in Nginx

    async def get(self) -> None:
        if not self.ctx.settings.enable_metrics:
            raise NotFound()
        text = await self.ctx.metrics_exposition()
        self.set_header("Content-Type", EXPOSITION_CONTENT_TYPE)
        self.finish(text)


default_handlers = [
    (r"/health", HealthHandler),
    (r"/api/metrics", MetricsHandler),
    (r"/metrics", PrometheusHandler),
]
