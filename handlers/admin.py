"""POST /api/cache/clear: empty the shared response cache for every instance."""
from __future__ import annotations

from core.auth import ADMIN
from core.errors import ServerBusy
from core.store import StoreUnavailable
from handlers.base import BaseHandler


class CacheClearHandler(BaseHandler):
    auth = {"POST": ADMIN}
    async def post(self) -> None:
        try:
            cleared = await self.ctx.cache.clear()
        except StoreUnavailable:
            # Redis is down: nothing can be cleared now; the operator retries.
            raise ServerBusy("共享存储（Redis）暂时不可用，请稍后再试", retry_after=2) from None
        self.write_json({"cleared": cleared})


default_handlers = [(r"/api/cache/clear", CacheClearHandler)]
