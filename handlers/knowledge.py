"""The knowledge endpoints: list, search, add, get and delete documents."""
from __future__ import annotations

from core.auth import ADMIN, CLIENT
from core.knowledge import ListRequest, SearchRequest, parse_documents
from core.knowledge.service import ID_PATTERN
from handlers.base import BaseHandler

# Document ids as core/knowledge/service.py accepts them; any other path is a JSON 404.
_ID = f"({ID_PATTERN.pattern[1:-1]})"


class ListHandler(BaseHandler):
    """GET /api/knowledge?limit=20&offset=0&category=: what the base holds, one page."""

    auth = {"GET": CLIENT}  # titles and tags only; GET /api/knowledge/{id} is CLIENT too

    async def get(self) -> None:
        params = {name: self.get_query_arguments(name) for name in self.request.query_arguments}
        self.write_json(await self.ctx.knowledge.list_documents(ListRequest.from_params(params)))


class SearchHandler(BaseHandler):
    """GET /api/knowledge/search?q=&limit=10&offset=0&category=&tag=&mode=or|and"""

    auth = {"GET": CLIENT}

    async def get(self) -> None:
        params = {name: self.get_query_arguments(name) for name in self.request.query_arguments}
        self.write_json(await self.ctx.knowledge.search(SearchRequest.from_params(params)))


class AddHandler(BaseHandler):
    """POST /api/knowledge/add: one document, or {"documents": [...]}; 201."""

    auth = {"POST": ADMIN}

    async def post(self) -> None:
        docs = parse_documents(self.json_body())
        ids = await self.ctx.knowledge.add(docs)
        self.write_json({"added": len(ids), "ids": ids}, status=201)


class DocumentHandler(BaseHandler):
    """GET / DELETE /api/knowledge/{id}"""

    auth = {"GET": CLIENT, "DELETE": ADMIN}

    async def get(self, doc_id: str) -> None:
        self.write_json(await self.ctx.knowledge.get(doc_id))

    async def delete(self, doc_id: str) -> None:
        await self.ctx.knowledge.delete(doc_id)
        self.write_json({"deleted": doc_id})


default_handlers = [
    (r"/api/knowledge", ListHandler),
    (r"/api/knowledge/search", SearchHandler),
    (r"/api/knowledge/add", AddHandler),
    (rf"/api/knowledge/{_ID}", DocumentHandler),
]
