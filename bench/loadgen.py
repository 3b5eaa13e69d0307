"""Closed-loop HTTP load generators for the benchmarks: wrk when installed, else Python.

Both take the same `Target` (method, URL, body, whether each body must be unique) and
return the same `LoadResult` (requests/s, p50/p99 in ms, errors, tool), so a comparison
is always one generator against one generator in the same run.

- `run_wrk`: wrk with one thread (the other core is the server's) and a generated Lua
  script that makes bodies unique (`{n}` in the body becomes a counter) and reports the
  exact percentiles as JSON from its `done()` hook.
- `run_python`: asyncio streams, one keep-alive HTTP/1.1 connection per worker. Portable,
  but it spends more CPU per request than wrk, so its absolute figures are lower.

Bounded by design: every run has a duration and a request cap; loopback only.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

MAX_REQUESTS = 2_000_000  # hard cap on one run, whatever the duration


@dataclass
class Target:
    """What one load run sends. `{n}` in `body` is replaced by a counter when `unique`."""

    url: str
    method: str = "GET"
    body: str | None = None
    unique: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"benchmarks send to loopback only, not {parts.hostname}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")


@dataclass
class LoadResult:
    tool: str
    concurrency: int
    requests: int
    errors: int          # transport errors and non-2xx answers
    seconds: float
    rps: float           # successful (2xx) answers per second
    p50_ms: float
    p99_ms: float
    mean_ms: float

    def as_dict(self) -> dict:
        return asdict(self)


def wrk_available() -> bool:
    return shutil.which("wrk") is not None and os.environ.get("BENCH_NO_WRK") != "1"


def run(target: Target, *, concurrency: int, duration: float, warmup: float = 1.0,
        tool: str = "auto") -> LoadResult:
    """One closed-loop run: `concurrency` connections for `duration` s after `warmup` s."""
    if tool == "auto":
        tool = "wrk" if wrk_available() else "python"
    if tool == "wrk":
        if warmup > 0:
            run_wrk(target, concurrency=concurrency, duration=warmup)
        return run_wrk(target, concurrency=concurrency, duration=duration)
    return run_python(target, concurrency=concurrency, duration=duration, warmup=warmup)


# --- wrk ---

_LUA = r"""
local counter = 0
local nonce = "%(nonce)s"
local method = "%(method)s"
local path = %(path)s
local prefix = %(prefix)s
local suffix = %(suffix)s
local unique = %(unique)s
local headers = {}
%(headers)s
request = function()
  counter = counter + 1
  local body = nil
  if prefix ~= nil then
    if unique then body = prefix .. nonce .. counter .. suffix else body = prefix end
  end
  return wrk.format(method, path, headers, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %%d, "duration_us": %%d, "connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d, "p50": %%f, "p99": %%f, "mean": %%f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def _lua_str(text: str | None) -> str:
    if text is None:
        return "nil"
    # A Lua long string cannot hold its own closing bracket; pick a level that is free.
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def run_wrk(target: Target, *, concurrency: int, duration: float) -> LoadResult:
    prefix, suffix = target.body, ""
    if target.body is not None and target.unique:
        prefix, _, suffix = target.body.partition("{n}")
    headers = {"Content-Type": "application/json", **target.headers} if target.body is not None \
        else dict(target.headers)
    header_lines = "\n".join(f"headers[ {_lua_str(k)} ] = {_lua_str(v)}" for k, v in headers.items())
    script = _LUA % {
        "nonce": uuid.uuid4().hex[:8] + "-", "method": target.method, "path": _lua_str(target.path),
        "prefix": _lua_str(prefix), "suffix": _lua_str(suffix),
        "unique": "true" if target.unique else "false", "headers": header_lines,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False, encoding="utf-8") as fh:
        fh.write(script)
        lua = fh.name
    try:
        secs = max(1, math.ceil(duration))
        cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{secs}s", "--timeout", "30s", "-s", lua,
               f"http://{target.host}:{target.port}{target.path}"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60)
    finally:
        os.unlink(lua)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result: {out.stdout[-500:]} {out.stderr[-500:]}")
    data = json.loads(line[len("WRKJSON "):])
    seconds = data["duration_us"] / 1e6
    errors = data["connect"] + data["read"] + data["write"] + data["status"] + data["timeout"]
    ok = max(0, data["requests"] - data["status"])  # answered with 2xx/3xx
    return LoadResult(tool="wrk", concurrency=concurrency, requests=data["requests"], errors=errors,
                      seconds=round(seconds, 3), rps=ok / seconds if seconds else 0.0,
                      p50_ms=data["p50"] / 1000, p99_ms=data["p99"] / 1000, mean_ms=data["mean"] / 1000)


# --- Python (asyncio streams) ---

def _request_bytes(target: Target, n: int, nonce: str) -> bytes:
    body = b""
    if target.body is not None:
        text = target.body.replace("{n}", f"{nonce}{n}") if target.unique else target.body
        body = text.encode("utf-8")
    lines = [f"{target.method} {target.path} HTTP/1.1", f"Host: {target.host}:{target.port}"]
    if target.body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in target.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_response(reader: asyncio.StreamReader,
                        on_data: Callable[[bytes], None] | None = None) -> tuple[int, bool]:
    """Read one HTTP/1.1 response; returns (status, keep-alive). `on_data` sees body bytes
    as they arrive (for time-to-first-event)."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    status = int(status_line.split()[1])
    length, chunked, keep = None, False, True
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        elif name == "connection" and value.lower() == "close":
            keep = False
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                break
            data = await reader.readexactly(size)
            if on_data:
                on_data(data)
            await reader.readexactly(2)
    elif length:
        data = await reader.readexactly(length)
        if on_data:
            on_data(data)
    elif length is None and not keep:
        data = await reader.read()
        if on_data:
            on_data(data)
    return status, keep


def _pct(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def run_python(target: Target, *, concurrency: int, duration: float, warmup: float = 1.0,
               max_requests: int = MAX_REQUESTS) -> LoadResult:
    return asyncio.run(_run_python(target, concurrency, duration, warmup, max_requests))


async def _run_python(target: Target, concurrency: int, duration: float, warmup: float,
                      max_requests: int) -> LoadResult:
    nonce = uuid.uuid4().hex[:8] + "-"
    counter = 0
    latencies: list[float] = []
    errors = ok = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + warmup
    stop_at = measure_from + duration

    async def worker() -> None:
        nonlocal counter, errors, ok
        reader = writer = None
        while loop.time() < stop_at and counter < max_requests:
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection(target.host, target.port)
                except OSError:
                    errors += 1
                    await asyncio.sleep(0.01)
                    continue
            counter += 1
            payload = _request_bytes(target, counter, nonce)
            sent = loop.time()
            try:
                writer.write(payload)
                status, keep = await read_response(reader)
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError):
                if sent >= measure_from:
                    errors += 1
                writer.close()
                reader = writer = None
                continue
            done = loop.time()
            if measure_from <= sent and done <= stop_at:
                latencies.append(done - sent)
                if 200 <= status < 300:
                    ok += 1
                else:
                    errors += 1
            if not keep:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    latencies.sort()
    n = len(latencies)
    return LoadResult(tool="python", concurrency=concurrency, requests=n, errors=errors,
                      seconds=round(duration, 3), rps=ok / duration if duration else 0.0,
                      p50_ms=_pct(latencies, 50) * 1000, p99_ms=_pct(latencies, 99) * 1000,
                      mean_ms=(sum(latencies) / n * 1000) if n else 0.0)


# --- time to first streamed event ---

def first_event_latencies(target: Target, marker: bytes, *, concurrency: int, duration: float,
                          max_requests: int = 10_000) -> tuple[list[float], int]:
    """Seconds from sending each request to the first body bytes containing `marker`
    (Python client; SSE streams), for `duration` s; returns (latencies, errors)."""
    return asyncio.run(_first_events(target, marker, concurrency, duration, max_requests))


async def _first_events(target: Target, marker: bytes, concurrency: int, duration: float,
                        max_requests: int) -> tuple[list[float], int]:
    nonce = uuid.uuid4().hex[:8] + "-"
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + duration
    counter, errors = 0, 0
    out: list[float] = []

    async def worker() -> None:
        nonlocal counter, errors
        while loop.time() < stop_at and counter < max_requests:
            counter += 1
            try:
                reader, writer = await asyncio.open_connection(target.host, target.port)
            except OSError:
                errors += 1
                await asyncio.sleep(0.05)
                continue
            seen = bytearray()
            first: list[float] = []

            def on_data(data: bytes, seen: bytearray = seen, first: list[float] = first) -> None:
                if not first:
                    seen.extend(data)
                    if marker in seen:
                        first.append(loop.time())

            sent = loop.time()
            try:
                writer.write(_request_bytes(target, counter, nonce))
                status, _ = await read_response(reader, on_data)
                if status == 200 and first:
                    out.append(first[0] - sent)
                else:
                    errors += 1
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
                errors += 1
            finally:
                writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sorted(out), errors


def percentile(values: list[float], q: float) -> float:
    return _pct(sorted(values), q)


if __name__ == "__main__":  # a quick manual check: python bench/loadgen.py URL [c] [s]
    import sys

    t = Target(sys.argv[1])
    c = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    s = float(sys.argv[3]) if len(sys.argv) > 3 else 3
    started = time.monotonic()
    print(run(t, concurrency=c, duration=s).as_dict(), f"{time.monotonic() - started:.1f}s")
