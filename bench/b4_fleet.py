"""Bench 4: fleet scaling through Nginx on this machine: 1, 2 and 3 instances, cache hits.

Each size is a real fleet started by the project's own tooling (`scripts/fleet.py start`
on a private copy of supervisord.conf: its own run/, logs/, ports and DATA_DIR, so a
developer's fleet is untouched), then stopped with `scripts/fleet.py stop`. The load
is the same cache-hit request as bench 1 (use_knowledge=false), through Nginx.
Skipped, with a message, when Nginx is not installed (the bench never installs it).

    python bench/b4_fleet.py [--sizes 1,2,3] [--duration 5] [--concurrency 64]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import Report, finish

common.ensure_venv()
import loadgen  # noqa: E402

CHAT = {"message": "乡村振兴类材料的归纳概括题怎么答？", "mode": "summarize", "use_knowledge": False}


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def free_block(count: int) -> int:
    """A BASE_PORT whose next `count` ports are free on loopback."""
    import socket
    for _ in range(50):
        base = common.free_port()
        if base + count > 65000:
            continue
        try:
            socks = []
            for n in range(1, count + 1):
                s = socket.socket()
                s.bind(("127.0.0.1", base + n))
                socks.append(s)
            for s in socks:
                s.close()
            return base
        except OSError:
            for s in socks:
                s.close()
    raise RuntimeError("no free block of ports")


class Fleet:
    def __init__(self, work: Path, n: int, upstream: str, data: Path, suffix: int = 0) -> None:
        self.home = work / f"fleet-{n}-{suffix}"
        self.home.mkdir()
        shutil.copy(common.SERVICE_ROOT / "supervisord.conf", self.home / "supervisord.conf")
        (self.home / "scripts").symlink_to(common.SERVICE_ROOT / "scripts")
        self.base = free_block(3)
        self.nginx_port = common.free_port()
        self.env = common.server_env(data, 0, "server-1", upstream, INSTANCES=n, BASE_PORT=self.base,
                                     NGINX_PORT=self.nginx_port,
                                     SHENLUN_SUPERVISOR_CONF=str(self.home / "supervisord.conf"),
                                     SHENLUN_PYTHON=sys.executable, NGINX_LISTEN="127.0.0.1")
        for key in ("PORT", "SERVER_ID"):
            self.env.pop(key)

    def fleet(self, command: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(common.SERVICE_ROOT / "scripts" / "fleet.py"), command],
                              cwd=common.SERVICE_ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.nginx_port}"

    def pids(self) -> list[int]:
        import psutil
        out = []
        for pidfile in (self.home / "run" / "supervisord.pid", self.home / "run" / "nginx" / "nginx.pid"):
            try:
                pid = int(pidfile.read_text().strip())
                proc = psutil.Process(pid)
                out += [pid] + [c.pid for c in proc.children(recursive=True)]
            except (OSError, ValueError, psutil.Error):
                pass
        return out

    def stop(self) -> None:
        try:
            self.fleet("stop", timeout=120)
        finally:
            for pid in self.pids():  # anything the stop left behind, by its own pid
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,2,3")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--tool", default="auto", choices=("auto", "wrk", "python"))
    args = ap.parse_args(argv)
    report = Report("b4_fleet", "cache hits through Nginx, 1 / 2 / 3 instances")
    if nginx_binary() is None:
        report.note("SKIPPED: nginx is not installed (scripts/install_nginx.sh installs it); "
                    "the bench does not install it itself")
        return finish(report)
    if not (common.SERVICE_ROOT / "scripts" / "fleet.py").exists():
        report.note("SKIPPED: scripts/fleet.py is missing")
        return finish(report)
    report.note(f"before: {common.machine_load()}")
    work = common.tmpdir()
    logs = work / "logs"
    logs.mkdir()
    upstream = common.start_upstream(log_dir=logs)
    body = json.dumps(CHAT, ensure_ascii=False)
    results: dict[int, common.Measured] = {}
    direct = None
    for n in [int(x) for x in args.sizes.split(",")]:
        fleet = None
        try:
            for attempt in range(2):  # a port taken between choosing and binding: once more
                fleet = Fleet(work, n, upstream.base_url,
                              common.fresh_data_dir(work, f"data-{n}-{attempt}"), suffix=attempt)
                started = fleet.fleet("start")
                if started.returncode == 0:
                    break
                logs_tail = " | ".join(p.read_text(errors="replace")[-300:]
                                       for p in sorted((fleet.home / "logs").glob("server-*.log")))
                report.note(f"fleet of {n} did not start (try {attempt + 1}): {started.stderr[-300:]} "
                            f"logs: {logs_tail}")
                fleet.stop()
            else:
                fleet = None
                continue
            for _ in range(2):
                common.http("POST", fleet.url + "/api/chat", body.encode())
            pids = {f"p{pid}": pid for pid in fleet.pids()}
            results[n] = common.measure(loadgen.Target(fleet.url + "/api/chat", "POST", body),
                                        concurrency=args.concurrency, duration=args.duration,
                                        watch=pids, tool=args.tool)
            report.note(f"{n} instance(s): {results[n].result.as_dict()}")
            if n == 1 and direct is None:
                direct = loadgen.run(loadgen.Target(f"http://127.0.0.1:{fleet.base + 1}/api/chat", "POST", body),
                                     concurrency=args.concurrency, duration=args.duration, tool=args.tool)
                report.note(f"1 instance without nginx: {direct.as_dict()}")
        finally:
            if fleet is not None:
                fleet.stop()
    base = results.get(1)
    for n, m in sorted(results.items()):
        r = m.result
        report.add(f"cache hits/s through nginx, {n} instance(s)", r.rps, "rps",
                   reference="1 instance through nginx", ref_value=base.rps if base else None,
                   note=f"c={args.concurrency}, {r.tool}, p99 {r.p99_ms:.0f} ms, {r.errors} errors")
    if direct is not None and base is not None:
        report.add("cache hits/s, 1 instance without nginx", direct.rps, "rps",
                   reference="1 instance through nginx", ref_value=base.rps)
    upstream.stop()
    report.note(f"after: {common.machine_load()}")
    return finish(report)


if __name__ == "__main__":
    sys.exit(main())
