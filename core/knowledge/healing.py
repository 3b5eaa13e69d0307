"""A corrupt or missing search index heals itself from the document store.

The index is derived data (core/knowledge/index.py); the SQLite store is the source of
truth. So an index that cannot be read — a damaged segment file, a deleted directory, a
CURRENT that names nothing — is rebuilt, never served as a 500:

* at start-up (`IndexHealer.start`) the live index is opened and read once;
* at run time a read that fails is tried once more on a freshly opened index (another
  process's merge can pull a file from under a reader); failing again, the index is
  unreadable.

Then this process answers searches (and the chat's retrieval) with `IndexUnavailable`
(503 with Retry-After) and rebuilds in a background thread under the index's
REINDEX_LOCK: one process of the fleet rebuilds; the others, finding the lock held, wait
until CURRENT names a readable index. The rebuild switches CURRENT atomically, and adds
made meanwhile are in the store, so the rebuild catches up with them; an add waits for
the switch (up to its write timeout) like any add that finds the index busy.

Errors that say the program is wrong rather than the files (TypeError, AttributeError…)
never trigger a rebuild, and an index this process has just rebuilt is not rebuilt again
on the same fault within HEAL_COOLDOWN_SECONDS: a query that trips a bug must not set
off a rebuild per request.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from whoosh import index as whoosh_index
from whoosh.searching import Searcher

from core.errors import IndexUnavailable, ServiceError
from core.knowledge.index import SCHEMA, RebuildRunning, SharedIndex, rebuild
from core.ops.disk import classify

log = logging.getLogger("shenlun.knowledge")

OK, REBUILDING = "ok", "rebuilding"
RETRY_SECONDS = 2.0          # after a failed rebuild (say, the disk is full) try again
WAIT_POLL_SECONDS = 0.2      # how often a waiting process looks for the other's switch
HEAL_COOLDOWN_SECONDS = 60.0
# The program is wrong, not the index: rebuilding would not help.
_NOT_THE_INDEX = (TypeError, AttributeError, NameError, AssertionError, NotImplementedError,
                  RecursionError, MemoryError, ServiceError)

T = TypeVar("T")


class IndexHealer:
    """Keeps this process's view of the shared index readable, rebuilding it when not."""

    def __init__(self, index: SharedIndex) -> None:
        self.index = index
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._broken: str | None = None       # the live index name that could not be read
        self._healed: tuple[float, str] | None = None  # (when, name) of our last rebuild
        self._stop = threading.Event()
        self.rebuilds = 0                      # rebuilds this process made (for tests, logs)
        self.last_heal_seconds: float | None = None

    @property
    def state(self) -> str:
        """OK, or REBUILDING while the index is being rebuilt (here or elsewhere)."""
        return REBUILDING if self._thread is not None else OK

    # --- start-up ---

    def start(self) -> None:
        """Open the live index (creating an empty one for an empty store) and read it
        once; unreadable, start the rebuild. Blocking, for KnowledgeBase.open."""
        name = self._current()
        if name is None and self.index.store.count() == 0:
            self.index.ensure()  # a fresh data directory: nothing to lose, nothing to wait for
            return
        if name is None or not self.readable(name):
            self._heal(name, "unreadable at start-up")
            return
        try:
            self.index.ensure()  # apply store changes the index lacks
        except Exception as exc:
            if classify(exc) is not None:
                log.warning("knowledge index cannot catch up now (disk %s); the next write "
                            "will", classify(exc))
            elif not self.readable(name):
                self._heal(name, type(exc).__name__)
            else:
                raise

    # --- reading and writing through the healer ---

    def read(self, fn: Callable[[Searcher], T]) -> T:
        """`fn(searcher)` on this thread's searcher of the live index. IndexUnavailable
        while the index is being rebuilt, or when it turns out unreadable (which starts
        the rebuild). Blocking: run it off the loop."""
        self._check_usable()
        try:
            return fn(self.index.searcher())
        except _NOT_THE_INDEX:
            raise
        except Exception:
            self.index.forget()
        try:
            return fn(self.index.searcher())  # once more, on a freshly opened index
        except _NOT_THE_INDEX:
            raise
        except Exception as exc:
            name = self._current()
            if self._just_healed(name):
                raise
            self._heal(name, f"{type(exc).__name__}: {exc}")
            raise IndexUnavailable() from None

    def try_sync(self, seq: int) -> bool:
        """SharedIndex.try_sync, answering False (not yet) while the index is being
        rebuilt: the rebuild catches up with the store before it switches. Errors of the
        disk pass through, for the caller to answer 507."""
        if self._thread is not None and self._still_broken():
            return False
        try:
            return self.index.try_sync(seq)
        except _NOT_THE_INDEX:
            raise
        except Exception as exc:
            name = self._current()
            if classify(exc) is not None or (name is not None and self.readable(name)) \
                    or self._just_healed(name):
                raise
            self._heal(name, f"{type(exc).__name__} on write")
            return False

    def compact(self) -> int:
        """SharedIndex.compact(), nothing while the index is being rebuilt."""
        if self._thread is not None:
            return 0
        return self.index.compact()

    def version(self) -> str | None:
        """SharedIndex.version(); None when it cannot be read now (the search that
        follows finds out why). IndexUnavailable while being rebuilt. Cheap: on the loop
        (so it only asks whether CURRENT still names the broken index)."""
        if self._thread is not None and self._current() in (None, self._broken):
            raise IndexUnavailable()
        try:
            return self.index.version()
        except Exception:
            return None

    def _check_usable(self) -> None:
        if self._thread is not None and self._still_broken():
            raise IndexUnavailable()

    # --- what is broken ---

    def _current(self) -> str | None:
        try:
            return self.index.current_name()
        except (RuntimeError, OSError):
            return None  # CURRENT unreadable or naming nothing: no usable index

    def readable(self, name: str) -> bool:
        """Whether index `name` opens and reads, on a fresh handle (nothing cached)."""
        try:
            ix = whoosh_index.open_dir(str(self.index.path(name)), schema=SCHEMA)
            with ix.searcher() as searcher:
                reader = searcher.reader()
                if reader.doc_count_all():
                    next(iter(reader.lexicon("doc_id")), None)
                    next(iter(reader.all_stored_fields()), None)
            return True
        except _NOT_THE_INDEX:
            raise
        except Exception as exc:
            log.debug("index %s unreadable: %s", name, exc)
            return False

    def _still_broken(self) -> bool:
        """Whether the live index is still the one found broken (or none/unreadable)."""
        name = self._current()
        if name is None:
            return True
        return name == self._broken or not self.readable(name)

    def _just_healed(self, name: str | None) -> bool:
        healed = self._healed
        if healed is None or name != healed[1]:
            return False
        if time.monotonic() - healed[0] >= HEAL_COOLDOWN_SECONDS:
            return False
        log.error("knowledge index %s, rebuilt %.0fs ago, fails again: not rebuilding it "
                  "(a fault of the program, not of the files?)", name, time.monotonic() - healed[0])
        return True

    # --- the rebuild ---

    def _heal(self, name: str | None, why: str) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._broken = name
            log.error("knowledge index %s unreadable (%s): searches answer 503 index_unavailable "
                      "while it is rebuilt from the document store", name or "(none)", why)
            self._thread = threading.Thread(target=self._rebuild, name="shenlun-index-heal",
                                            daemon=True)
            self._thread.start()

    def _rebuild(self) -> None:
        started = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    # Under the lock, nothing is built if somebody fixed it meanwhile.
                    stats = rebuild(self.index.root, self.index.store,
                                    unless=lambda: not self._still_broken())
                except RebuildRunning:
                    # Another process (or scripts/reindex.py) rebuilds: wait for its switch.
                    if not self._still_broken():
                        log.warning("knowledge index rebuilt by another process; searches "
                                    "answer again (%.1fs)", time.monotonic() - started)
                        return
                    self._stop.wait(WAIT_POLL_SECONDS)
                    continue
                except Exception as exc:
                    log.error("knowledge index rebuild failed (%s: %s); trying again in %.0fs",
                              type(exc).__name__, exc, RETRY_SECONDS)
                    self._stop.wait(RETRY_SECONDS)
                    continue
                if stats is not None:
                    self.rebuilds += 1
                    self._healed = (time.monotonic(), stats.name)
                    log.warning("knowledge index rebuilt from the document store in %.1fs "
                                "(%d documents, %d passages); searches answer again",
                                time.monotonic() - started, stats.documents, stats.passages)
                return
        finally:
            self.last_heal_seconds = time.monotonic() - started
            self.index.forget()
            with self._lock:
                self._thread = None

    def close(self) -> None:
        """Stop a rebuild that is waiting or retrying (one in progress runs to its end
        on its daemon thread, or dies with the process: a new directory, never live)."""
        self._stop.set()
