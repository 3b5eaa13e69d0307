"""Bench 9: the streaming path against a bare relay, and 1,000 concurrent streams.

1. CPU per relayed delta: the fake upstream streams 2,000 two-character deltas per
   answer, one per millisecond (so each delta arrives on its own, as from a real model);
   5 answers at once through `POST /api/chat` (`stream`, `cache: false`,
   `use_knowledge: false`) and through bench/bare_relay.py, alternating rounds; the
   server process's CPU time divided by the deltas relayed. Also with no pacing (burst),
   where deltas that arrive together may be written together.
2. 1,000 concurrent streamed answers on one process (MAX_CONCURRENT_REQUESTS=1200;
   upstream waits 1 s, then streams 20 deltas): mean answer time through the service
   vs straight to the same fake, errors, and /health latency meanwhile; and the same
   load through the bare relay, the floor of a Tornado relay on this machine (bench
   client, fake and relay share its cores), with the service's ratio to it.
3. With `--baseline DIR` (another copy of the project, e.g. main): server CPU per streamed
   answer at the same load, this copy and DIR's `server.py` against one fake, in
   alternating rounds (A B B A …, at least 6) — a paired figure that background load shifts alike.

    python bench/b9_stream_relay.py [--rounds 3] [--answers 5] [--streams 1000] [--part cpu|concurrent]
                                    [--baseline DIR]
Targets: CPU per delta <= 2x the bare relay's; mean answer time at c=1,000 <= 1.5x direct.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import Report, finish

common.ensure_venv()

DELTAS = 2000


async def stream_once(port: int, path: str, body: bytes) -> tuple[float, int, bool]:
    """One streamed answer read to its end: (seconds, data lines, complete)."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body))
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    ok = head.startswith(b"HTTP/1.1 200") and (b"event: done" in rest or b"[DONE]" in rest
                                                or b'"finish_reason": "stop"' in rest)
    return time.monotonic() - started, rest.count(b"data: "), ok


async def many(port: int, path: str, body: bytes, n: int) -> list[tuple[float, int, bool]]:
    async def one() -> tuple[float, int, bool]:
        try:
            return await stream_once(port, path, body)
        except OSError:
            return 0.0, 0, False
    return await asyncio.gather(*(one() for _ in range(n)))


def cpu_per_delta(server: common.Server, path: str, body: bytes, answers: int) -> tuple[float, float]:
    """(µs of server CPU per relayed delta, seconds) for `answers` streams at once."""
    before = common.cpu_seconds(server.proc.pid)
    started = time.monotonic()
    results = asyncio.run(many(server.port, path, body, answers))
    seconds = time.monotonic() - started
    spent = common.cpu_seconds(server.proc.pid) - before
    if not all(ok for _, _, ok in results):
        raise RuntimeError(f"{path} on {server.port}: a stream did not complete")
    return spent / (answers * DELTAS) * 1e6, seconds


async def health_poller(port: int, stop: asyncio.Event, out: list[float]) -> None:
    while not stop.is_set():
        started = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            head = await reader.read()
            writer.close()
            out.append((time.monotonic() - started) * 1000 if head.startswith(b"HTTP/1.1 200") else -1.0)
        except OSError:
            out.append(-1.0)
        await asyncio.sleep(0.2)


async def concurrent_streams(port: int, path: str, body: bytes, n: int,
                             health_port: int | None) -> tuple[list[tuple[float, int, bool]], list[float]]:
    stop, health = asyncio.Event(), []
    poller = asyncio.ensure_future(health_poller(health_port, stop, health)) if health_port else None
    results = await many(port, path, body, n)
    stop.set()
    if poller:
        await poller
    return results, health


def mean_ok(results: list[tuple[float, int, bool]]) -> tuple[float | None, int]:
    """(mean seconds of the complete answers, how many did not complete)."""
    ok = [t for t, _, complete in results if complete]
    return (statistics.fmean(ok) if ok else None), len(results) - len(ok)


def concurrent_part(report: Report, work: Path, chat: bytes, streams: int) -> None:
    """Part 2: `streams` answers at once straight to the fake, through the bare relay
    and through the service (one after the other, same fake)."""
    logs = work / "logs"
    upstream = common.start_upstream(log_dir=logs, latency=1.0, answer_chars=160, chunk_chars=8, name="fake-c1000")
    server = common.start_server(common.fresh_data_dir(work, "data-c1000"), upstream=upstream.base_url,
                                 log_dir=logs, name="server-c1000", MAX_CONCURRENT_REQUESTS=1200)
    relay = common.start_relay(upstream.base_url, log_dir=logs)
    direct_body = json.dumps({"model": "fake-model", "stream": True,
                              "messages": [{"role": "user", "content": "你好"}]}).encode()
    direct, _ = asyncio.run(concurrent_streams(upstream.port, "/v1/chat/completions", direct_body, streams, None))
    cpu_before = common.cpu_seconds(relay.proc.pid)
    bare, _ = asyncio.run(concurrent_streams(relay.port, "/api/chat", chat, streams, None))
    bare_ms = (common.cpu_seconds(relay.proc.pid) - cpu_before) / streams * 1000
    cpu_before = common.cpu_seconds(server.proc.pid)
    through, health = asyncio.run(concurrent_streams(server.port, "/api/chat", chat, streams, server.port))
    cpu_ms = (common.cpu_seconds(server.proc.pid) - cpu_before) / streams * 1000
    mean_d, errors_d = mean_ok(direct)
    mean_b, errors_b = mean_ok(bare)
    mean_t, errors = mean_ok(through)
    report.add(f"mean answer time, {streams} concurrent streams", mean_t, "s",
               reference="straight to the fake", ref_value=mean_d, target="<= 1.5",
               met=bool(mean_t and mean_d and mean_t <= 1.5 * mean_d and errors == 0),
               note=f"upstream 1 s then 20 deltas; {errors} errors through the service, "
                    f"{errors_d} direct; service CPU {cpu_ms:.1f} ms per answer")
    report.add(f"mean answer time, {streams} concurrent streams, bare relay", mean_b, "s",
               reference="straight to the fake", ref_value=mean_d,
               note=f"the floor of a Tornado relay here; {errors_b} errors; relay CPU {bare_ms:.1f} ms per answer")
    report.add(f"mean answer time, {streams} concurrent streams, service vs bare relay", mean_t, "s",
               reference="bare Tornado relay", ref_value=mean_b)
    answered = [h for h in health if h >= 0]
    report.add(f"/health during the {streams} streams, max", max(answered) if answered else None, "ms",
               note=f"{len(answered)} of {len(health)} probes answered 200")
    for proc in (relay, server, upstream):
        proc.stop()


def paired_part(report: Report, work: Path, chat: bytes, streams: int, rounds: int, baseline: Path) -> None:
    """Part 3: server CPU per streamed answer, this copy against `baseline`, alternating."""
    logs = work / "logs"
    upstream = common.start_upstream(log_dir=logs, latency=1.0, answer_chars=160, chunk_chars=8, name="fake-paired")
    servers = {side: common.start_server(common.fresh_data_dir(work, f"data-{side}"), upstream=upstream.base_url,
                                         log_dir=logs, name=f"server-{side}", root=root, MAX_CONCURRENT_REQUESTS=1200)
               for side, root in (("this copy", None), ("baseline", baseline))}
    cpu: dict[str, list[float]] = {side: [] for side in servers}
    for server in servers.values():  # warm: the upstream connection pool, the first requests
        asyncio.run(many(server.port, "/api/chat", chat, 100))
    for n in range(rounds):
        for side, server in list(servers.items())[::-1 if n % 2 else 1]:
            before = common.cpu_seconds(server.proc.pid)
            errors = mean_ok(asyncio.run(many(server.port, "/api/chat", chat, streams)))[1]
            if errors:
                raise RuntimeError(f"{side}: {errors} streams did not complete")
            cpu[side].append((common.cpu_seconds(server.proc.pid) - before) / streams * 1000)
    ours, theirs = statistics.median(cpu["this copy"]), statistics.median(cpu["baseline"])
    report.note(f"paired: this copy {[round(x, 2) for x in cpu['this copy']]} ms, "
                f"baseline {[round(x, 2) for x in cpu['baseline']]} ms per answer")
    report.add(f"server CPU per streamed answer, {streams} concurrent", ours, "ms", reference=f"baseline {baseline}",
               ref_value=theirs, note=f"median of {rounds} alternating rounds, one fake")
    for proc in (*servers.values(), upstream):
        proc.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--answers", type=int, default=5)
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--part", choices=("cpu", "concurrent"), help="only part 1 or only part 2")
    ap.add_argument("--baseline", type=Path, help="also part 3: CPU per answer paired with this project copy")
    args = ap.parse_args(argv)
    report = Report("b9_stream_relay", "streamed answers: CPU per delta vs a bare relay; 1,000 concurrent streams")
    work = common.tmpdir()
    logs = work / "logs"
    logs.mkdir()
    chat = json.dumps({"message": "请讲讲归纳概括题", "stream": True, "cache": False,
                       "use_knowledge": False}, ensure_ascii=False).encode()
    report.note(f"before: {common.machine_load()}")
    for label, delay in (("paced 1 ms", 0.001), ("burst", 0.0)) if args.part != "concurrent" else ():
        upstream = common.start_upstream(log_dir=logs, chunk_delay=delay, answer_chars=2 * DELTAS,
                                         chunk_chars=2, name=f"fake-{delay}")
        server = common.start_server(common.fresh_data_dir(work, f"data-{delay}"), upstream=upstream.base_url,
                                     log_dir=logs, name=f"server-{delay}")
        relay = common.start_relay(upstream.base_url, log_dir=logs)
        cpu: dict[str, list[float]] = {"service": [], "bare": []}
        for _ in range(args.rounds):
            cpu["service"].append(cpu_per_delta(server, "/api/chat", chat, args.answers)[0])
            cpu["bare"].append(cpu_per_delta(relay, "/api/chat", chat, args.answers)[0])
        s, b = statistics.median(cpu["service"]), statistics.median(cpu["bare"])
        report.note(f"{label}: service {[round(x, 1) for x in cpu['service']]} µs/delta, "
                    f"bare {[round(x, 1) for x in cpu['bare']]} µs/delta")
        report.add(f"CPU per relayed delta ({label})", s, "µs", reference="bare Tornado relay", ref_value=b,
                   target="<= 2.0" if delay else "", met=(s <= 2 * b) if delay else None,
                   note=f"{args.answers} answers × {DELTAS} deltas at once, median of {args.rounds}")
        for proc in (relay, server, upstream):
            proc.stop()

    if args.part != "cpu":
        concurrent_part(report, work, chat, args.streams)
    if args.baseline:
        paired_part(report, work, chat, args.streams, max(args.rounds, 6), args.baseline)
    report.note(f"after: {common.machine_load()}")
    return finish(report)


if __name__ == "__main__":
    sys.exit(main())
