"""The process's shared resources, built once from the settings and handed to the app."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from core.chat import ChatService
from core.concurrency import ConcurrencySlots
from core.config import Settings
from core.llm import LLMProvider, make_provider

# jieba, Whoosh and large disk writes run here, never on the event loop. Small on
# purpose: on a 2-core machine more threads only add contention under the GIL.
CPU_WORKERS = 4


@dataclass
class AppContext:
    """Everything a handler may use. One per process; never a module global."""

    settings: Settings
    llm: LLMProvider
    slots: ConcurrencySlots
    chat: ChatService
    executor: ThreadPoolExecutor
    knowledge: Any = None
    inflight_requests: int = 0  # per process, for the graceful drain
    draining: bool = False
    closers: list[Callable[[], Any]] = field(default_factory=list)

    async def close(self) -> None:
        """Release connections, executors and stores (reverse order of creation)."""
        await self.llm.close()
        for close in reversed(self.closers):
            close()
        self.executor.shutdown(wait=True, cancel_futures=True)


def build_context(settings: Settings) -> AppContext:
    """Build every shared resource from the settings."""
    executor = ThreadPoolExecutor(max_workers=CPU_WORKERS, thread_name_prefix="shenlun-cpu")
    llm = make_provider(provider=settings.llm_provider, api_key=settings.openai_api_key,
                        base_url=settings.openai_base_url, model=settings.llm_model,
                        timeout=settings.request_timeout)
    slots = ConcurrencySlots(settings.max_concurrent_requests, settings.queue_timeout)
    chat = ChatService(llm=llm, slots=slots, server_id=settings.server_id)
    return AppContext(settings=settings, llm=llm, slots=slots, chat=chat, executor=executor)
