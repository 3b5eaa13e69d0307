"""The process's shared resources, built once from the settings and handed to the app."""
from __future__ import annotations

from dataclasses import dataclass, field

from core.chat import ChatService
from core.concurrency import ConcurrencySlots
from core.config import Settings
from core.llm import LLMProvider, make_provider


@dataclass
class AppContext:
    """Everything a handler may use. One per process; never a module global."""

    settings: Settings
    llm: LLMProvider
    slots: ConcurrencySlots
    chat: ChatService
    inflight_requests: int = 0  # per process, for the graceful drain
    draining: bool = False
    closers: list = field(default_factory=list)

    async def close(self) -> None:
        """Release connections, executors and stores (reverse order of creation)."""
        await self.llm.close()
        for close in reversed(self.closers):
            close()


def build_context(settings: Settings) -> AppContext:
    """Build every shared resource from the settings."""
    llm = make_provider(provider=settings.llm_provider, api_key=settings.openai_api_key,
                        base_url=settings.openai_base_url, model=settings.llm_model,
                        timeout=settings.request_timeout)
    slots = ConcurrencySlots(settings.max_concurrent_requests, settings.queue_timeout)
    chat = ChatService(llm=llm, slots=slots, server_id=settings.server_id)
    return AppContext(settings=settings, llm=llm, slots=slots, chat=chat)
