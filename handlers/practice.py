"""GET /api/practice (list; ?type=, ?genre=, ?theme=, ?paper= filters) and
GET /api/practice/{id} (one item)."""
from __future__ import annotations

from core.auth import CLIENT
from core.errors import InvalidRequest, NotFound
from core.grading import QUESTION_TYPES, TYPE_ALIASES
from core.grading.practice import MAX_THEME_CHARS
from core.grading.structure import GENRE_PARTS
from handlers.base import BaseHandler


class PracticeListHandler(BaseHandler):
    auth = {"GET": CLIENT}

    def get(self) -> None:
        bank = self.ctx.grading.practice
        raw = self.get_query_argument("type", "").strip()
        if raw and raw not in TYPE_ALIASES:
            raise InvalidRequest("参数 type 必须是以下之一：" + "、".join(
                [*QUESTION_TYPES, "概括", "分析", "对策", "应用文", "文章"]))
        # genre and paper name one thing exactly (an empty value names nothing);
        # a blank theme is no filter at all.
        genre = self.get_query_argument("genre", None, strip=False)
        if genre is not None and genre not in GENRE_PARTS:
            raise InvalidRequest("参数 genre 必须是已知文种之一：" + "、".join(GENRE_PARTS))
        raw_theme = self.get_query_argument("theme", "", strip=False)
        if len(raw_theme) > MAX_THEME_CHARS:
            raise InvalidRequest(f"参数 theme 最多 {MAX_THEME_CHARS} 个字")
        theme = raw_theme.strip() or None
        paper_id = self.get_query_argument("paper", None, strip=False)
        paper = bank.paper(paper_id) if paper_id is not None else None
        if paper_id is not None and paper is None:
            raise InvalidRequest("参数 paper 指向的套卷不存在，可选：" + "、".join(p.id for p in bank.papers()))
        items = bank.list(TYPE_ALIASES[raw] if raw else None, genre=genre, theme=theme, paper=paper_id)
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
