"""The OpenAPI description stays true to the routes the app serves."""
from __future__ import annotations

import json
import re

from core.errors import CATALOGUE, MethodNotAllowed
from handlers import all_handlers
from handlers.base import BaseHandler
from tests.conftest import error_of


def _spec_path(pattern: str) -> str:
    """Our route regex as an OpenAPI path template: one capture group → {doc_id}."""
    path = pattern.rstrip("$")
    return re.sub(r"\((?:[^()]|\([^()]*\))*\)", "{doc_id}", path)


async def test_spec_describes_every_route_and_method(http_server_client):
    response = await http_server_client.fetch("/api/openapi.json")
    spec = json.loads(response.body)
    assert spec["openapi"].startswith("3.1")
    served = {}
    for pattern, handler, *_ in all_handlers():
        methods = {m.lower() for m in ("GET", "POST", "DELETE", "PUT", "PATCH")
                   if getattr(handler, m.lower()) is not getattr(BaseHandler, m.lower())}
        served[_spec_path(pattern)] = methods
    described = {path: set(ops) for path, ops in spec["paths"].items()}
    assert described == served


async def test_every_operation_documents_its_errors_in_the_error_shape(http_server_client):
    spec = json.loads((await http_server_client.fetch("/api/openapi.json")).body)
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert any(code.startswith("2") for code in op["responses"]), (path, method)
            for code, answer in op["responses"].items():
                if code.startswith(("4", "5")) and not (path == "/health" and code == "503"):
                    schema = answer["content"]["application/json"]["schema"]
                    shape = "OpenAIError" if path.startswith("/v1/") else "Error"
                    assert schema == {"$ref": f"#/components/schemas/{shape}"}, (path, method, code)


async def test_error_answers_and_their_descriptions_come_from_the_catalogue(http_server_client):
    spec = json.loads((await http_server_client.fetch("/api/openapi.json")).body)
    for ops in spec["paths"].values():
        for op in ops.values():
            for status, answer in op["responses"].items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
                if not schema.get("$ref", "").endswith("Error"):
                    continue  # an answer (/health's 503 is a Health), not an error
                codes = [c.code for c in CATALOGUE.values() if str(c.status) == status]
                assert codes and all(code in answer["description"] for code in codes), (status, answer)
    # Tornado's own 405 leaves in the catalogue's words.
    response = await http_server_client.fetch("/api/openapi.json", method="DELETE", raise_error=False)
    error = error_of(response)
    assert (response.code, error["code"], error["message"]) == (405, "method_not_allowed", MethodNotAllowed.message)
