"""What every benchmark shares: processes it starts (and always stops), the data
directory template, one blocking HTTP helper, and the result rows and their table.

Processes: everything started through `spawn()` is registered and stopped at exit,
on SIGTERM/SIGINT and on errors (SIGTERM, then SIGKILL after a grace period), by
its own pid. Servers listen on free loopback ports; nothing leaves the machine.
"""
from __future__ import annotations

import argparse
import atexit
import http.client as httpclient
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = Path(os.environ.get("BENCH_RESULTS") or BENCH / "results")
VENV_PY = ROOT / ".venv" / "bin" / "python"
# The project copy whose server.py, scripts/ and core/ are measured (default: this one).
# Point it at a scratch copy with a patch applied to measure the patch with the same benches.
SERVICE_ROOT = Path(os.environ.get("BENCH_SERVICE_ROOT") or ROOT).resolve()


def ensure_venv() -> None:
    """Re-run the calling script with the project's venv Python when started with
    another interpreter that lacks the service's dependencies."""
    try:
        import diskcache  # noqa: F401
        import tornado  # noqa: F401
        import whoosh  # noqa: F401
    except ImportError:
        if VENV_PY.exists() and Path(sys.executable).resolve() != VENV_PY.resolve():
            os.execv(str(VENV_PY), [str(VENV_PY), *sys.argv])
        raise SystemExit("bench: run scripts/bootstrap.sh first (no .venv with the dependencies)") from None


for _path in (ROOT, SERVICE_ROOT):  # SERVICE_ROOT ends up first: its core/ is the one measured
    if str(_path) in sys.path:
        sys.path.remove(str(_path))
    sys.path.insert(0, str(_path))

from testkit import free_port  # noqa: E402  (shared with tests/; importable once ROOT is on the path)

# --- processes ---

_PROCS: list[Proc] = []
_TMP: list[Path] = []


class Proc:
    """A child process with its output in a log file; stopped by pid, never by name."""

    def __init__(self, name: str, args: list[str], *, env: dict[str, str] | None = None,
                 log_dir: Path, capture_stdout: bool = False) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(args, cwd=SERVICE_ROOT, env=env,
                                     stdout=subprocess.PIPE if capture_stdout else self._log,
                                     stderr=self._log)
        self.pid = self.proc.pid
        _PROCS.append(self)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self, tail: int = 2000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-tail:]

    def stop(self, grace: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if not self._log.closed:
            self._log.close()
        if self in _PROCS:
            _PROCS.remove(self)


def stop_all() -> None:
    for proc in list(reversed(_PROCS)):
        try:
            proc.stop(grace=5.0)
        except Exception:
            pass
    for path in _TMP:
        shutil.rmtree(path, ignore_errors=True)
    _TMP.clear()


def _on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


atexit.register(stop_all)
signal.signal(signal.SIGTERM, _on_signal)


def tmpdir(prefix: str = "shenlun-bench-") -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    _TMP.append(path)
    return path


# --- HTTP ---

def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """One blocking request to a loopback URL: (status, headers, body)."""
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    assert parts.hostname in ("127.0.0.1", "localhost"), "loopback only"
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
        hdrs.setdefault("Content-Type", "application/json")
    conn = httpclient.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def cache_hit_args(doc: str, argv: list[str] | None) -> argparse.Namespace:
    """The options of a cache-hit bench: --duration, --rounds, --concurrency, --tool."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--tool", default="auto", choices=("auto", "wrk", "python"))
    return ap.parse_args(argv)


def service_on_bundled_corpus(work: Path) -> tuple[Path, Upstream, Server]:
    """A fake upstream and one server on a copy of the indexed bundled corpus, in `work`:
    (log folder, upstream, server)."""
    logs = work / "logs"
    logs.mkdir()
    template = knowledge_template(work)
    upstream = start_upstream(log_dir=logs)
    server = start_server(fresh_data_dir(work, "data", template), upstream=upstream.base_url, log_dir=logs)
    return logs, upstream, server


def prime_cache(url: str, path: str, body: str) -> dict[str, Any]:
    """POST `body` twice: the first answer fills the response cache, the second must be
    a hit; returns that answer."""
    for _ in range(2):
        status, headers, raw = http("POST", url + path, body.encode())
        if status != 200:
            raise RuntimeError(f"{path} answered {status}: {raw[:300]!r}")
    if headers.get("x-cache") != "HIT":
        raise RuntimeError(f"{path}: second identical request was not a cache hit: {headers.get('x-cache')}")
    return json.loads(raw)


def wait_http(url: str, timeout: float, proc: Proc | None = None, interval: float = 0.01) -> float:
    """Poll GET `url` until 200; returns the monotonic time it first answered 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.proc.returncode}: {proc.log()}")
        try:
            status, _, _ = http("GET", url, timeout=1.0)
            if status == 200:
                return time.monotonic()
        except OSError:
            pass
        time.sleep(interval)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s" + (f": {proc.log()}" if proc else ""))


# --- the service, the fake upstream and the bare reference ---

ANSWER_CHARS = 600  # size of every fake LLM answer (Chinese characters)


def server_env(data_dir: Path, port: int, name: str, upstream: str | None, **overrides: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "API_KEYS", "ADMIN_API_KEYS", "SHENLUN_"))}
    for key in ("DATA_DIR", "PORT", "SERVER_ID", "MAX_CONCURRENT_REQUESTS", "RATE_LIMIT_PER_MINUTE",
                "ENABLE_RESPONSE_CACHE", "LOG_LEVEL", "APP_ENV", "INSTANCES", "BASE_PORT", "NGINX_PORT"):
        env.pop(key, None)
    env.update({
        "DATA_DIR": str(data_dir), "PORT": str(port), "SERVER_ID": name, "APP_ENV": "development",
        # The limiter runs (its cost is measured) but never refuses at bench rates.
        "RATE_LIMIT_PER_MINUTE": "1000000", "LOG_LEVEL": "INFO",
        "LLM_MODEL": "fake-model",
    })
    if upstream:
        env.update({"OPENAI_BASE_URL": upstream, "OPENAI_API_KEY": "sk-bench-not-a-real-key"})
    env.update({k: str(v) for k, v in overrides.items()})
    return env


@dataclass
class Server:
    proc: Proc
    port: int
    data_dir: Path
    startup_s: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.stop(grace=25.0)


def start_server(data_dir: Path, *, name: str = "server-1", upstream: str | None = None,
                 log_dir: Path, python: list[str] | None = None, root: Path | None = None,
                 **overrides: Any) -> Server:
    """`server.py` (of `root`, else SERVICE_ROOT) on a free port; waits for /health 200
    and records the start-up time."""
    port = free_port()
    env = server_env(data_dir, port, name, upstream, **overrides)
    proc = Proc(name, [*(python or [sys.executable]), str((root or SERVICE_ROOT) / "server.py")], env=env,
                log_dir=log_dir)
    ready = wait_http(f"http://127.0.0.1:{port}/health", 60, proc)
    return Server(proc, port, data_dir, startup_s=ready - proc.started)


@dataclass
class Upstream:
    proc: Proc
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.proc.stop()


def start_upstream(*, log_dir: Path, latency: float = 0.0, chunk_delay: float = 0.0,
                   answer_chars: int = ANSWER_CHARS, chunk_chars: int = 8,
                   name: str = "fake-upstream") -> Upstream:
    """testkit/fake_llm.py's fake OpenAI-compatible server in a process of its own."""
    proc = Proc(name, [sys.executable, str(BENCH / "fake_upstream.py"), "--latency", str(latency),
                       "--chunk-delay", str(chunk_delay), "--answer-chars", str(answer_chars),
                       "--chunk-chars", str(chunk_chars)],
                log_dir=log_dir, capture_stdout=True)
    line = proc.proc.stdout.readline().decode().strip()
    if not line.startswith("PORT "):
        raise RuntimeError(f"fake upstream did not start: {line!r} {proc.log()}")
    return Upstream(proc, int(line.split()[1]))


def start_bare(answer: dict[str, Any], *, log_dir: Path) -> Server:
    """bench/bare_server.py: a bare Tornado JSON handler answering `answer`."""
    port = free_port()
    path = log_dir / f"bare-answer-{port}.json"
    path.write_text(json.dumps(answer, ensure_ascii=False), encoding="utf-8")
    proc = Proc("bare-tornado", [sys.executable, str(BENCH / "bare_server.py"), "--port", str(port),
                                 "--answer", str(path)], log_dir=log_dir)
    ready = wait_http(f"http://127.0.0.1:{port}/health", 30, proc)
    return Server(proc, port, log_dir, startup_s=ready - proc.started)


def start_relay(upstream: str, *, log_dir: Path) -> Server:
    """bench/bare_relay.py: a bare Tornado relay to `upstream` (streamed or whole answers)."""
    port = free_port()
    proc = Proc("bare-relay", [sys.executable, str(BENCH / "bare_relay.py"), "--port", str(port),
                               "--upstream", upstream], log_dir=log_dir)
    ready = wait_http(f"http://127.0.0.1:{port}/health", 30, proc)
    return Server(proc, port, log_dir, startup_s=ready - proc.started)


_TEMPLATE: dict[str, Path] = {}


def knowledge_template(work: Path, source: Path | None = None) -> Path:
    """A data directory with the bundled corpus indexed (by scripts/reindex.py), built once
    per process; copy it with `fresh_data_dir()` for each server."""
    key = str(source or "")
    if key not in _TEMPLATE:
        target = work / f"template-{len(_TEMPLATE)}"
        args = [sys.executable, str(SERVICE_ROOT / "scripts" / "reindex.py"), "--data-dir", str(target)]
        if source:
            args += ["--source", str(source)]
        out = subprocess.run(args, cwd=SERVICE_ROOT, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"reindex.py failed: {out.stderr[-1000:]}")
        _TEMPLATE[key] = target
    return _TEMPLATE[key]


def fresh_data_dir(work: Path, name: str, template: Path | None = None) -> Path:
    target = work / name
    if template is not None:
        shutil.copytree(template, target)
    else:
        target.mkdir(parents=True)
    return target


def rss_bytes(pid: int) -> int:
    import psutil
    return psutil.Process(pid).memory_info().rss


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children so far."""
    import psutil
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def machine_load() -> str:
    """The 1-minute load average and the CPU count: the noise a figure was taken in."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return "load n/a"
    return f"load {load:.1f} on {os.cpu_count()} cores"


@dataclass
class Measured:
    """One load run plus the CPU each watched process spent per answered request."""

    result: Any
    cpu_us: dict[str, float]

    @property
    def rps(self) -> float:
        return self.result.rps


def measure(target: Any, *, concurrency: int, duration: float, watch: dict[str, int],
            warmup: float = 1.0, tool: str = "auto") -> Measured:
    """`loadgen.run` with the CPU time of the `watch`ed pids taken around the measured part.

    CPU per request barely moves when other work shares the machine, where requests/s
    does: on a shared, noisy host it is the figure to compare patches by."""
    import loadgen
    if warmup > 0:
        loadgen.run(target, concurrency=concurrency, duration=warmup, warmup=0, tool=tool)
    before = {name: cpu_seconds(pid) for name, pid in watch.items()}
    result = loadgen.run(target, concurrency=concurrency, duration=duration, warmup=0, tool=tool)
    n = max(1, result.requests)
    cpu = {name: (cpu_seconds(pid) - before[name]) / n * 1e6 for name, pid in watch.items()}
    return Measured(result, cpu)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def cache_hit_rounds(report: Report, runs: dict[str, Any],
                     args: argparse.Namespace) -> tuple[dict[str, dict[str, float]], str]:
    """The cache-hit `runs` measured alternately as `args` says (see `cache_hit_args`):
    each run's summary, noted in `report` with the load before and after, and the name
    of the load tool that ran them."""
    report.note(f"before: {machine_load()}")
    measured = alternate(runs, rounds=args.rounds, concurrency=args.concurrency,
                         duration=args.duration, tool=args.tool)
    summaries = {name: summary(rounds) for name, rounds in measured.items()}
    for name, summ in summaries.items():
        report.note(f"{name}: " + ", ".join(f"{k}={v:.1f}" for k, v in summ.items()))
    report.note(f"after: {machine_load()}")
    return summaries, next(iter(measured.values()))[0].result.tool


def finish_cache_hits(report: Report, summaries: dict[str, dict[str, float]], *services: Server | Upstream) -> int:
    """Note the error answers of the runs, stop `services`, print the report; the exit status."""
    errors = sum(v["errors"] for v in summaries.values())
    if errors:
        report.note(f"{errors} error answers during the runs")
    for service in services:
        service.stop()
    return finish(report)


def alternate(runs: dict[str, Any], *, rounds: int, **kwargs: Any) -> dict[str, list[Measured]]:
    """Run each named measurement in turn, `rounds` times (A B C A B C …), so drifting
    background load hits every side alike; returns every round of each."""
    out: dict[str, list[Measured]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (target, watch) in runs.items():
            out[name].append(measure(target, watch=watch, **kwargs))
    return out


def summary(rounds: list[Measured]) -> dict[str, float]:
    """Medians over rounds: rps, p50, p99 and CPU µs per request of each watched process."""
    out = {"rps": median([m.result.rps for m in rounds]),
           "p50": median([m.result.p50_ms for m in rounds]),
           "p99": median([m.result.p99_ms for m in rounds]),
           "errors": sum(m.result.errors for m in rounds),
           "requests": sum(m.result.requests for m in rounds)}
    for name in rounds[0].cpu_us:
        out[f"cpu_{name}"] = median([m.cpu_us[name] for m in rounds])
    return out


# --- results ---

@dataclass
class Row:
    """One figure: its value, the reference it is compared with (same run) and the ratio."""

    bench: str
    figure: str
    value: float | None
    unit: str
    reference: str = ""
    ref_value: float | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class Report:
    bench: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    seconds: float = 0.0

    def add(self, figure: str, value: float | None, unit: str, *, reference: str = "",
            ref_value: float | None = None, ratio: float | None = None, target: str = "",
            met: bool | None = None, note: str = "") -> Row:
        if ratio is None and value is not None and ref_value:
            ratio = value / ref_value
        row = Row(self.bench, figure, value, unit, reference, ref_value, ratio, target, met, note)
        self.rows.append(row)
        return row

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"[{self.bench}] {text}", flush=True)

    def save(self) -> Path:
        self.seconds = round(time.time() - self.started, 1)
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.bench}.json"
        path.write_text(json.dumps({"bench": self.bench, "title": self.title, "seconds": self.seconds,
                                    "notes": self.notes, "rows": [asdict(r) for r in self.rows]},
                                   ensure_ascii=False, indent=1), encoding="utf-8")
        return path


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit in ("rps", "docs/s") or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(rows: list[dict[str, Any]] | list[Row], markdown: bool = False) -> str:
    """The figures as one table (plain text, or Markdown for the docs)."""
    dicts = [asdict(r) if isinstance(r, Row) else r for r in rows]
    head = ("bench", "figure", "value", "unit", "reference (same run)", "ref", "ratio", "target", "met")
    body = []
    for r in dicts:
        met = "" if r["met"] is None else ("yes" if r["met"] else "NO")
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        body.append((r["bench"], r["figure"] + (f" ({r['note']})" if r.get("note") else ""),
                     fmt(r["value"], r["unit"]), r["unit"], r["reference"],
                     fmt(r["ref_value"], r["unit"]) if r["ref_value"] is not None else "",
                     ratio, r["target"], met))
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in body]
    return "\n".join(out)


def finish(report: Report) -> int:
    path = report.save()
    print()
    print(f"== {report.bench}: {report.title} ({report.seconds:.0f}s) ==")
    print(table(report.rows))
    for note in report.notes:
        print(f"  note: {note}")
    print(f"  saved {path}")
    return 0
