"""The web console: `/` → `/console/`, and the console page itself.

The page is HTML around ES modules under `static/console/`, served by Tornado's
StaticFileHandler with `static_url()` hashes (long cache). Modules import each other
by relative paths; an import map written into the page maps each of those paths to
its hashed URL, so a changed module is never read from a stale cache. The import map
is the page's only inline script, allowed by its hash in the Content-Security-Policy
(no 'unsafe-inline' anywhere); everything else is loaded from our own origin.
"""
from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import tornado.web

from core.auth import PUBLIC
from core.chat.prompts import MODES
from core.config import PROJECT_ROOT
from handlers.base import BaseHandler

_PAGE = Path(__file__).with_name("console.html")
# Our own static route rather than the Application's static_path, which would also
# serve /favicon.ico and /robots.txt and answer missing files with HTML error pages.
STATIC = {"static_path": str(PROJECT_ROOT / "static"), "static_url_prefix": "/static/"}
_MODULES_DIR = "console"  # under STATIC's static_path

_CSP = ("default-src 'none'; script-src 'self' {import_map}; style-src 'self'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'")


class RootHandler(BaseHandler):
    """GET / → the console (a newcomer's first page)."""

    auth = {"GET": PUBLIC, "HEAD": PUBLIC}

    def get(self) -> None:
        self.redirect("/console/")

    head = get  # `curl -I http://localhost:5001/`, a link checker


class ConsoleHandler(BaseHandler):
    """GET /console/: the page; its data calls carry the key the user enters."""

    auth = {"GET": PUBLIC, "HEAD": PUBLIC}

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")

    def get(self) -> None:
        import_map = json.dumps({"imports": self._module_urls()}, separators=(",", ":"))
        digest = base64.b64encode(hashlib.sha256(import_map.encode()).digest()).decode()
        self.set_header("Content-Security-Policy", _CSP.format(import_map=f"'sha256-{digest}'"))
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        settings = self.ctx.settings
        self.render(_PAGE.name, import_map=import_map,
                    modes=json.dumps(MODES, ensure_ascii=False),
                    keys_required="yes" if self.ctx.keys.enabled else "no",
                    metrics_interval=settings.metrics_collection_interval)

    head = get  # Tornado sends the headers only

    def static_url(self, path: str, include_host: bool | None = None, **kwargs: object) -> str:
        """`path` under static/ with its content hash (`?v=`), as the template asks."""
        return StaticHandler.make_static_url(STATIC, path)

    def _module_urls(self) -> dict[str, str]:
        """Each module's plain path → its hashed URL (hashes are cached by Tornado)."""
        root = Path(STATIC["static_path"]) / _MODULES_DIR
        return {f"{STATIC['static_url_prefix']}{_MODULES_DIR}/{p.name}": self.static_url(f"{_MODULES_DIR}/{p.name}")
                for p in sorted(root.glob("*.js"))}

    def get_template_path(self) -> str:
        return str(_PAGE.parent)


class StaticHandler(BaseHandler, tornado.web.StaticFileHandler):
    """GET /static/…: the console's files; a `?v=` hash earns a ten-year cache. Errors
    (404, 403 outside the folder) leave through BaseHandler in the JSON shape."""

    auth = {"GET": PUBLIC, "HEAD": PUBLIC}


default_handlers = [
    (r"/static/(.*)", StaticHandler, {"path": STATIC["static_path"]}),
    (r"/", RootHandler),
    (r"/console", RootHandler),
    (r"/console/", ConsoleHandler),
]
