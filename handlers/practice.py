"""GET /api/practice (list, ?type= filter) and GET /api/practice/{id} (one item)."""
from __future__ import annotations

from core.auth import CLIENT
from core.errors import InvalidRequest, NotFound
from core.grading import QUESTION_TYPES, TYPE_ALIASES
from handlers.base import BaseHandler


class PracticeListHandler(BaseHandler):
    auth = {"GET": CLIENT}

    def get(self) -> None:
        raw = self.get_query_argument("type", "").strip()
        if raw and raw not in TYPE_ALIASES:
            raise InvalidRequest("参数 type 必须是以下之一：" + "、".join(
                [*QUESTION_TYPES, "概括", "分析", "对策", "应用文", "文章"]))
        items = self.ctx.grading.practice.list(TYPE_ALIASES[raw] if raw else None)
        self.write_json({"total": len(items), "items": [item.summary() for item in items]})


class PracticeItemHandler(BaseHandler):
    auth = {"GET": CLIENT}

    def get(self, item_id: str) -> None:
        item = self.ctx.grading.practice.get(item_id)
        if item is None:
            raise NotFound(f"练习题不存在：{item_id}")
        self.write_json(item.detail())


default_handlers = [
    (r"/api/practice", PracticeListHandler),
    (r"/api/practice/([^/]+)", PracticeItemHandler),
]
