"""GET /api/practice (list; ?type=, ?genre=, ?theme=, ?paper= filters) and
GET /api/practice/{id} (one item)."""
from __future__ import annotations

from core.auth import CLIENT
from core.errors import InvalidRequest, NotFound
from core.grading.practice import PracticeQuery
from handlers.base import BaseHandler


class PracticeListHandler(BaseHandler):
    auth = {"GET": CLIENT}

    def get(self) -> None:
        bank = self.ctx.grading.practice
        params = {name: self.get_query_arguments(name, strip=False) for name in self.request.query_arguments}
        query = PracticeQuery.from_params(params)
        paper = bank.paper(query.paper) if query.paper is not None else None
        if query.paper is not None and paper is None:
            raise InvalidRequest("参数 paper 指向的套卷不存在，可选：" + "、".join(p.id for p in bank.papers()))
        items = bank.list(query.type, genre=query.genre, theme=query.theme.strip() or None, paper=query.paper)
        body = {"total": len(items), "items": [item.summary() for item in items],
                "papers": [bank.paper_summary(p) for p in ([paper] if paper else bank.papers())]}
        self.write_json(body)


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
