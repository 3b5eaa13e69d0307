"""The process's shared resources, built once from the settings and handed to the app."""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from core import __version__
from core.auth import KeyRing
from core.chat.prompts import PromptBook
from core.chat.service import ChatService
from core.config import Settings
from core.grading import GradingService, PracticeBank
from core.knowledge import KnowledgeBase
from core.llm import LLMGateway, LLMMeter, LLMProvider, make_provider
from core.ops.disk import DataDisk
from core.ops.health import HealthProbes, disk_probe, knowledge_probe
from core.ops.history import MetricsHistory
from core.ops.metrics import FleetBoard, Metrics
from core.store import Stores, open_stores
from core.traffic.cache import ResponseCache
from core.traffic.concurrency import ConcurrencySlots
from core.traffic.ratelimit import RateLimiter

# jieba, Whoosh and large disk writes run here, never on the event loop. Small on
# purpose: on a 2-core machine more threads only add contention under the GIL.
CPU_WORKERS = 4


@dataclass
class AppContext:
    """Everything a handler may use. One per process; never a module global."""

    settings: Settings
    llm: LLMProvider
    meter: LLMMeter
    slots: ConcurrencySlots
    chat: ChatService
    executor: ThreadPoolExecutor
    cache: ResponseCache
    limiter: RateLimiter
    keys: KeyRing
    metrics: Metrics
    fleet: FleetBoard
    stores: Stores
    disk: DataDisk  # the data directory's disk: writes refused (507) while full
    # /health's own thread, so its probe never queues behind searches or indexing.
    health_executor: ThreadPoolExecutor
    health: HealthProbes
    knowledge: KnowledgeBase
    grading: GradingService
    inflight_requests: int = 0  # per process, for the graceful drain
    draining: bool = False
    closers: list[Callable[[], None]] = field(default_factory=list)
    history: MetricsHistory = field(default_factory=MetricsHistory)  # per process, for the console

    async def metrics_snapshot(self) -> dict[str, Any]:
        """This process's metrics now, as JSON (and a point of the console's history)."""
        self.metrics.set_cache_entries(await self.cache.count())
        snapshot = self.metrics.snapshot()
        snapshot["history"] = self.history.record(snapshot)
        return snapshot

    async def metrics_exposition(self) -> bytes:
        """This process's metrics now, in the Prometheus text format."""
        self.metrics.set_cache_entries(await self.cache.count())
        return self.metrics.exposition()
    def warm_up(self) -> list[Future[None]]:
        """Start loading, in the CPU executor, what the first requests need and the
        start-up itself does not: the openai client (its import is ~1 s of CPU) and jieba's
        user dictionary and stop words (~0.1 s; the main dictionary is built by shard on
        use), side by side; the futures say when they are loaded."""
        return [self.llm.warm_up(), self.knowledge.warm_up()]

    async def close(self) -> None:
        """Release connections, executors and stores (reverse order of creation)."""
        await self.llm.close()
        for close in reversed(self.closers):
            close()
        await self.cache.flush()  # the answers already given are written before the store closes
        await self.stores.aclose()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.health_executor.shutdown(wait=True, cancel_futures=True)


def build_context(settings: Settings) -> AppContext:
    """Build every shared resource from the settings."""
    executor = ThreadPoolExecutor(max_workers=CPU_WORKERS, thread_name_prefix="shenlun-cpu")
    llm = make_provider(provider=settings.llm_provider, api_key=settings.openai_api_key,
                        base_url=settings.openai_base_url, model=settings.llm_model,
                        timeout=settings.request_timeout,
                        concurrency=settings.max_concurrent_requests, executor=executor)
    slots = ConcurrencySlots(settings.max_concurrent_requests, settings.queue_timeout)
    data = settings.data_dir
    disk = DataDisk(data)
    stores = open_stores(settings.store_backend, data_dir=data, redis_url=settings.redis_url,
                         executor=executor, cache_max_bytes=settings.cache_max_bytes, disk=disk)
    cache = ResponseCache(stores.cache, ttl_seconds=settings.cache_ttl_seconds,
                          max_entries=settings.max_cache_size)
    limiter = RateLimiter(stores.ratelimit, settings.rate_limit_per_minute,
                          instances=settings.instances)
    fleet = FleetBoard(stores.fleet, server_id=settings.server_id,
                       interval=settings.metrics_collection_interval)
    # jieba's dictionaries are loaded by ctx.warm_up(), in the executor, before the server listens.
    knowledge = KnowledgeBase.open(data, executor, disk=disk)
    # One registry per process: every collector (requests, LLM calls, process) is on it.
    registry = CollectorRegistry()
    metrics = Metrics(registry, settings.server_id, __version__)
    meter = LLMMeter(registry, settings.server_id)
    gateway = LLMGateway(llm, slots, meter)
    chat = ChatService(gateway=gateway, server_id=settings.server_id,
                       retriever=knowledge, prompts=PromptBook.load(), executor=executor,
                       cache=cache if settings.enable_response_cache else None)
    grading = GradingService(gateway=gateway, executor=executor,
                             practice=PracticeBank.load(),
                             server_id=settings.server_id)
    health_executor = ThreadPoolExecutor(1, thread_name_prefix="shenlun-health")
    health = HealthProbes({"disk": disk_probe(disk), "cache": cache.check,
                           "index": knowledge_probe(knowledge.status)}, health_executor,
                          stores=stores, llm_name=llm.name)
    ctx = AppContext(settings=settings, llm=llm, meter=meter, slots=slots, chat=chat, executor=executor,
                     cache=cache, limiter=limiter,
                     keys=KeyRing(settings.api_keys, settings.admin_api_keys),
                     metrics=metrics, fleet=fleet,
                     health_executor=health_executor, health=health,
                     knowledge=knowledge, grading=grading, stores=stores, disk=disk)
    ctx.closers += [knowledge.close]
    return ctx
