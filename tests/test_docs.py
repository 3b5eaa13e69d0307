"""The documentation stands alone and stays true: every relative link of README.md and
docs/*.md resolves inside the repository, no command reaches for a bare `python`, and
docs/api.md describes exactly the routes the app serves, with the fields, auth scopes
and error codes of the OpenAPI document."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from core.errors import CATALOGUE
from handlers.base import BaseHandler
from tests.procs import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
API_MD = ROOT / "docs" / "api.md"
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^[ \t]*```.*?^[ \t]*```", re.M | re.S)
_SPAN = re.compile(r"`([^`\n]+)`")
# A command that runs Python without the project's venv (scripts/*.sh find it themselves).
_BARE_PYTHON = re.compile(r"(?<![\w./-])(python3?|pip3?)\s")
# Inside the Docker image, python is the image's own and there is no .venv.
_IMAGE_CONTEXT = ("Docker", "docker", "镜像", "容器", "Dockerfile", "entrypoint")
# docs/migration.md quotes the old guide's commands in the first column of its tables.
_QUOTES_OLD_GUIDE = "migration.md"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    return {_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(doc):
    text = _FENCE.sub("", doc.read_text(encoding="utf-8"))
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (doc.parent / path_part).resolve() if path_part else doc
        assert resolved.is_relative_to(ROOT), f"{doc.name}: {target} leaves the repository"
        assert resolved.exists(), f"{doc.name}: {target} does not exist"
        if fragment and resolved.suffix == ".md":
            assert fragment in _anchors(resolved), f"{doc.name}: no heading #{fragment} in {path_part}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_run_python_from_the_venv(doc):
    text = doc.read_text(encoding="utf-8")
    commands = [line for block in _FENCE.findall(text) for line in block.splitlines()[1:-1]]
    lines = _FENCE.sub("", text).splitlines()
    if doc.name == _QUOTES_OLD_GUIDE:
        lines = [line.split(" | ", 1)[-1] if line.startswith("| ") else line for line in lines]
    commands += [span for line in lines
                 if not any(word in line for word in _IMAGE_CONTEXT) for span in _SPAN.findall(line)]
    bare = [c.strip() for c in commands if _BARE_PYTHON.search(c.split("#")[0])]
    assert not bare, f"{doc.name}: use .venv/bin/python (or a script of scripts/): {bare}"


# --- docs/api.md against the routes and the OpenAPI document ---

def _sections() -> dict[tuple[str, str], str]:
    """(METHOD, /path as in the spec) → the text of its `### METHOD /path` section."""
    text = API_MD.read_text(encoding="utf-8")
    parts = re.split(r"^### `([A-Z]+) ([^`]+)`.*$", text, flags=re.M)
    return {(parts[i], parts[i + 1]): parts[i + 2] for i in range(1, len(parts) - 1, 3)}


def _spec_path(pattern: str) -> str:
    return re.sub(r"\((?:[^()]|\([^()]*\))*\)", "{doc_id}", pattern.rstrip("$"))


def _served(app) -> dict[tuple[str, str], type]:
    served = {}
    for rule in app.wildcard_router.rules:
        handler = rule.target
        for method in ("GET", "POST", "DELETE", "PUT", "PATCH"):
            if getattr(handler, method.lower()) is not getattr(BaseHandler, method.lower()):
                served[(method, _spec_path(rule.matcher.regex.pattern))] = handler
    return served


def _properties(schema: dict[str, Any], schemas: dict[str, Any]) -> set[str]:
    """Top-level property names of a schema, through $ref and every alternative."""
    if "$ref" in schema:
        return _properties(schemas[schema["$ref"].rsplit("/", 1)[1]], schemas)
    names = set(schema.get("properties", {}))
    for key in ("oneOf", "anyOf", "allOf"):
        for part in schema.get(key, []):
            names |= _properties(part, schemas)
    return names


def test_api_md_describes_every_route_and_only_those(app):
    documented = set(_sections())
    assert documented == set(_served(app))


def test_api_md_states_each_routes_auth_scope(app):
    sections = _sections()
    for (method, path), handler in _served(app).items():
        scope = handler.auth.get(method, "admin")
        assert f"权限：`{scope}`" in sections[(method, path)], (method, path, scope)


async def test_api_md_names_every_parameter_and_field_of_the_openapi_document(http_server_client):
    spec = json.loads((await http_server_client.fetch("/api/openapi.json")).body)
    schemas = spec["components"]["schemas"]
    sections = _sections()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            section = sections[(method.upper(), path)]
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
            if "requestBody" in op:
                names |= _properties(op["requestBody"]["content"]["application/json"]["schema"], schemas)
            for status, answer in op["responses"].items():
                if status.startswith("2") and "application/json" in answer.get("content", {}):
                    names |= _properties(answer["content"]["application/json"]["schema"], schemas)
            missing = sorted(name for name in names if f"`{name}`" not in section)
            assert not missing, f"{method.upper()} {path}: docs/api.md does not name {missing}"


def test_api_md_lists_every_error_of_the_catalogue_with_its_status_and_message():
    text = API_MD.read_text(encoding="utf-8")
    rows = {code: (int(status), message)
            for status, code, message in re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \| ([^|]+?) \|", text, re.M)}
    assert rows == {code: (cls.status, cls.message) for code, cls in CATALOGUE.items()}


def test_openai_md_gives_each_error_its_openai_type():
    text = (ROOT / "docs" / "openai.md").read_text(encoding="utf-8")
    rows = re.findall(r"^  \| ([^|]+?) \| `([a-z_]+_error)` \|", text, re.M)
    by_status = {int(status): kind for statuses, kind in rows for status in re.findall(r"\d{3}", statuses)}
    assert {code: by_status.get(cls.status) for code, cls in CATALOGUE.items()} == \
        {code: cls.openai_type for code, cls in CATALOGUE.items()}


# The old Flask/gunicorn deployment guide's commands, as operators typed them.
OLD_GUIDE_COMMANDS = (
    "pip install -r requirements.txt", "./start.sh dev", "./start.sh prod",
    "gunicorn --config gunicorn_config.py app:app", "docker build -t shenlun-backend .",
    "docker run -p 5001:5001 shenlun-backend", "docker-compose up -d",
    "PORT=5001 SERVER_ID=server-1 ./start.sh prod", "nginx -c /path/to/nginx.conf",
    "docker-compose --profile load-balancer up -d", "docker swarm init",
    "docker service create --name shenlun-backend --replicas 3 --publish 5001:5001 shenlun-backend",
    "curl http://localhost:5001/api/metrics", "curl http://localhost:5001/health",
    "curl -X POST http://localhost:5001/api/cache/clear",
)


def test_migration_md_gives_every_old_command_and_variable_its_counterpart():
    from core.config import LEGACY
    from tests.test_server import OLD_GUIDE_ENV

    rows = {}
    for line in (ROOT / "docs" / "migration.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        if line.startswith("| `") and len(cells) >= 3:
            rows[cells[0].strip("`")] = cells[1:]
    for command in OLD_GUIDE_COMMANDS:
        assert any(command in old for old in rows), f"docs/migration.md: no row for {command}"
    for name in {*OLD_GUIDE_ENV, *(old.env for old in LEGACY)}:
        assert name in rows and all(rows[name]), f"docs/migration.md: no row for {name}"


def test_configuration_md_has_one_row_per_setting():
    from core.config import Settings

    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([A-Z_]+)` \|", text, re.M)
    assert sorted(rows) == sorted(env for env, _, _ in Settings.describe())


def test_readme_architecture_has_one_line_per_core_folder_naming_real_modules():
    """The README's layout of core/ matches the folders: one line per package, and every
    module a line names exists in that folder."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = {m.group(1): m.group(2) for m in re.finditer(r"^(core/(?:\w+/)?)\s+(.+)$", text, re.M)}
    folders = {"core/"} | {f"core/{p.parent.name}/" for p in (ROOT / "core").glob("*/__init__.py")}
    assert set(lines) == folders
    for folder, line in lines.items():
        for module in re.findall(r"([a-z_]+\.py)", line):
            assert (ROOT / folder / module).is_file(), f"README names {folder}{module}, which does not exist"
