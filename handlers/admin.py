"""POST /api/cache/clear: empty the shared response cache for every instance."""
from __future__ import annotations

from core.auth import ADMIN
from handlers.base import BaseHandler


class CacheClearHandler(BaseHandler):
    auth = {"POST": ADMIN}
    async def post(self) -> None:
        cleared = await self.ctx.cache.clear()
        self.write_json({"cleared": cleared})


default_handlers = [(r"/api/cache/clear", CacheClearHandler)]
