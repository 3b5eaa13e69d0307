"""Bench: CPU of one cache write at the entry cap (DiskStore.set_many, the end of every miss).

A DiskStore at its entry cap (--entries answers of 1–3 KB, as a busy cache is), then
--writes writes of one new entry each through `set_many` on the event loop, as the
batch writer makes them: each evicts one entry. Prints CPU µs per write and the SQL
statements per write (counted by an sqlite3 trace callback in a separate pass, so the
count costs the timing nothing), for this tree and for the tree given by
BENCH_SERVICE_ROOT, each in subprocesses of its own, alternating, --rounds each, and
the ratio of the medians.

    BENCH_SERVICE_ROOT=/path/to/other/tree .venv/bin/python bench/cache_write.py [--writes 2000]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.ensure_venv()


def answer(rng: random.Random) -> str:
    """An encoded answer of 1–3 KB, as the response cache stores."""
    text = "".join(rng.choice("材料概括归纳对策建议乡村振兴基层治理") for _ in range(rng.randint(300, 1000)))
    return json.dumps({"answer": text, "mode": "summarize", "char_count": len(text)}, ensure_ascii=False)


def count_statements() -> list[int]:
    """Make every SQLite connection opened from now on count the statements it runs."""
    counted = [0]
    connect = sqlite3.connect

    def counting_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = connect(*args, **kwargs)
        last = [""]

        def trace(statement: str) -> None:
            # Each trigger a statement fires is traced with the statement's own text
            # again; "--" marks a statement SQLite runs inside one (a pragma function's).
            if statement.startswith("--"):
                return
            if statement != last[0]:
                counted[0] += 1
            last[0] = statement
        connection.set_trace_callback(trace)
        return connection
    sqlite3.connect = counting_connect  # type: ignore[assignment]
    return counted


class AtTheCap:
    """A store filled to its entry cap, written one entry at a time (the batch writer's way)."""

    def __init__(self, entries: int, work: Path) -> None:
        from core.store import open_stores  # the tree of BENCH_SERVICE_ROOT (bench/common's path)

        self.entries, self.rng, self.written = entries, random.Random(17), 0
        self.executor = ThreadPoolExecutor(2)
        self.stores = open_stores("diskcache", data_dir=work, redis_url="", executor=self.executor,
                                  cache_max_bytes=256 * 1024 * 1024)

    async def fill(self) -> None:
        for start in range(0, self.entries, 100):
            await self.stores.cache.set_many([(f"fill:{n}", answer(self.rng)) for n in range(start, start + 100)],
                                             ttl=3600, max_entries=self.entries)
        await self.run(50, None)  # warm: connections, statement caches

    async def run(self, number: int, counted: list[int] | None) -> dict[str, float]:
        """CPU per write over `number` single-entry writes (each evicts one)."""
        cache = self.stores.cache
        values = [(f"new:{self.written + n}", answer(self.rng)) for n in range(number)]
        self.written += number
        if counted is not None:
            counted[0] = 0
        started, started_loop = time.process_time(), time.thread_time()
        for key, value in values:
            await cache.set_many([(key, value)], ttl=3600, max_entries=self.entries)
        cpu, loop = time.process_time() - started, time.thread_time() - started_loop
        assert await cache.count() == self.entries, await cache.count()
        return {"cpu_us": cpu / number * 1e6, "loop_us": loop / number * 1e6,
                "statements": counted[0] / number if counted is not None else 0.0}

    async def close(self) -> None:
        await self.stores.aclose()
        self.executor.shutdown()


async def serve(args: argparse.Namespace) -> None:
    """The child: fill a store, then one round per line read (`count` for a counted one)."""
    counted = count_statements() if args.count else None
    with tempfile.TemporaryDirectory(prefix="shenlun-cache-write-") as work:
        store = AtTheCap(args.entries, Path(work))
        await store.fill()
        print("ready", flush=True)
        for line in sys.stdin:
            print(json.dumps(await store.run(args.writes, counted if line.strip() == "count" else None)),
                  flush=True)
        await store.close()


class Child:
    """A subprocess measuring one tree, a round at a time."""

    def __init__(self, root: Path, args: argparse.Namespace, *, count: bool = False) -> None:
        env = {**os.environ, "BENCH_SERVICE_ROOT": str(root)}
        command = [sys.executable, __file__, "--child", "--entries", str(args.entries),
                   "--writes", str(args.writes)] + (["--count"] if count else [])
        self.proc = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def round(self, command: str = "run") -> dict[str, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        result: dict[str, float] = json.loads(self.proc.stdout.readline())
        return result

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=2000, help="the entry cap the store is filled to")
    parser.add_argument("--writes", type=int, default=400, help="writes per round")
    parser.add_argument("--rounds", type=int, default=15, help="rounds per tree, alternating")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        asyncio.run(serve(args))
        return 0
    trees = {"this tree": common.ROOT}
    if common.SERVICE_ROOT != common.ROOT:
        trees["BENCH_SERVICE_ROOT"] = common.SERVICE_ROOT
    print(f"machine: {common.machine_load()}")
    print(f"{args.entries} entries at the cap; {args.rounds} rounds of {args.writes} one-entry writes per tree, "
          "alternating, one process per tree")
    children = {name: Child(root, args) for name, root in trees.items()}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    try:
        for _ in range(args.rounds):
            for name, child in children.items():
                runs[name].append(child.round())
    finally:
        for child in children.values():
            child.stop()
    medians: dict[str, dict[str, float]] = {}
    for name, root in trees.items():
        counting = Child(root, args, count=True)  # a process of its own: tracing costs CPU
        try:
            statements = counting.round("count")["statements"]
        finally:
            counting.stop()
        medians[name] = {figure: common.median([run[figure] for run in runs[name]]) for figure in ("cpu_us", "loop_us")}
        spread = sorted(run["cpu_us"] for run in runs[name])
        print(f"{name:20s} {root}\n{'':20s} CPU per write {medians[name]['cpu_us']:4.0f} µs (process, median; "
              f"rounds {spread[0]:.0f}–{spread[-1]:.0f}), {medians[name]['loop_us']:4.0f} µs on the loop's thread, "
              f"{statements:.1f} SQL statements")
    if len(trees) == 2:
        ours, theirs = medians["this tree"], medians["BENCH_SERVICE_ROOT"]
        print(f"ratio this tree / BENCH_SERVICE_ROOT: process CPU {ours['cpu_us'] / theirs['cpu_us']:.2f}, "
              f"loop's thread {ours['loop_us'] / theirs['loop_us']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
