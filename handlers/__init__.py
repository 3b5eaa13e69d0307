"""HTTP handlers. Each module ends with `default_handlers`; `all_handlers()` collects them."""
from __future__ import annotations


def all_handlers() -> list[tuple]:
    """Every route of the service, in matching order."""
    from handlers import admin, chat, console, grade, knowledge, monitoring, openai_api, openapi, practice

    routes: list[tuple] = []
    for module in (chat, grade, practice, knowledge, admin, monitoring, openapi, openai_api, console):
        routes.extend(module.default_handlers)
    return routes
