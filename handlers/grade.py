"""POST /api/grade: a structured, simulated grade of a candidate's answer."""
from __future__ import annotations

from core.auth import CLIENT
from core.grading import GradeRequest
from handlers.base import BaseHandler


class GradeHandler(BaseHandler):
    auth = {"POST": CLIENT}

    async def post(self) -> None:
        req = GradeRequest.from_payload(self.json_body())
        self.write_json(await self.ctx.grading.grade(req))


default_handlers = [(r"/api/grade", GradeHandler)]
