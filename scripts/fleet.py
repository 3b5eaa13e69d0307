"""Operate the fleet: supervisord running server-1..N, and Nginx in front of it.

    scripts/fleet.sh start            supervisord + Nginx; returns when every instance answers
    scripts/fleet.sh stop             Nginx (graceful quit), then supervisord (each instance drains)
    scripts/fleet.sh status           one table: instance, port, pid, state, /health, latency; nginx
    scripts/fleet.sh rolling-restart  restart the instances one at a time, Nginx kept in step
    scripts/fleet.sh reload-nginx     rewrite the Nginx config from the environment and reload
    scripts/fleet.sh rotate-logs [N]  rotate Nginx's logs past N bytes (10 MB), keep 5 (for cron)
    scripts/fleet.sh ctl ARGS...      supervisorctl -c supervisord.conf ARGS...
    scripts/fleet.sh events           (run by supervisord: [eventlistener:nginx-sync])

Reads INSTANCES, BASE_PORT, NGINX_PORT (and validates every other setting) like the server;
NGINX_LISTEN (default 127.0.0.1) is the address Nginx listens on, NGINX_METRICS_ALLOW who may
read /metrics through it (scripts/nginx_conf.py). `start` writes these to run/fleet.env; while
the fleet runs, every other command takes them from there, so a shell with other values
still finds the fleet (it warns when they differ; reload-nginx and start may change the
NGINX_* ones). SHENLUN_SUPERVISOR_CONF points at another copy of supervisord.conf, whose run/
and logs/ sit beside it (the tests run a fleet that way without touching a developer's).

Nginx (open source) has no active health checks: an instance that failed max_fails times is
left out for fail_timeout even once it is back, so restarting the instances one after another
with plain supervisorctl used to leave no instance in rotation. `events` is the supervisord
eventlistener that closes that gap: on every PROCESS_STATE_RUNNING of an instance it waits for
the instance's /health 200, then reloads Nginx, which forgets the failures it counted.
"""
from __future__ import annotations

import fcntl
import http.client
import json
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nginx_conf import METRICS_ALLOW_DEFAULT  # noqa: E402  (scripts/, beside this file)

from core.config import ConfigError, Settings  # noqa: E402

CONF = Path(os.environ.get("SHENLUN_SUPERVISOR_CONF") or ROOT / "supervisord.conf").resolve()
HERE = CONF.parent
RUN, LOGS = HERE / "run", HERE / "logs"
NGINX_PREFIX = RUN / "nginx"
NGINX_CONF, NGINX_PID = NGINX_PREFIX / "nginx.conf", NGINX_PREFIX / "nginx.pid"
FLEET_ENV = RUN / "fleet.env"
GROUP = "shenlun"
# What run/fleet.env remembers: the fleet's shape, and Nginx's settings.
FLEET_KEYS = ("INSTANCES", "BASE_PORT", "NGINX_PORT", "NGINX_LISTEN", "NGINX_METRICS_ALLOW")
NGINX_KEYS = ("NGINX_PORT", "NGINX_LISTEN", "NGINX_METRICS_ALLOW")

START_TIMEOUT = 60.0       # seconds for every instance to answer /health after a start
STOP_TIMEOUT = 100.0       # above stopwaitsecs (85) of supervisord.conf
PROBE_TIMEOUT = 2.0
LOG_MAX_BYTES, LOG_BACKUPS = 10 * 1024 * 1024, 5   # as stdout_logfile_maxbytes/_backups


def say(message: str) -> None:
    print(message, flush=True)


# --- settings and environment ---

def load_settings() -> Settings:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"配置错误 / configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    if settings.base_port + settings.instances > 65535:
        print("配置错误 / configuration error: BASE_PORT+INSTANCES is past port 65535", file=sys.stderr)
        sys.exit(2)
    # supervisord.conf reads INSTANCES (numprocs) and scripts/instance.sh BASE_PORT: hand
    # them the validated values (the server's defaults when unset).
    os.environ["INSTANCES"] = str(settings.instances)
    os.environ["BASE_PORT"] = str(settings.base_port)
    os.environ.setdefault("SHENLUN_PYTHON", sys.executable)
    return settings


def read_fleet_env() -> dict[str, str]:
    """The running fleet's settings from run/fleet.env ({} when there is none)."""
    try:
        text = FLEET_ENV.read_text(encoding="utf-8")
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in FLEET_KEYS:
            words = shlex.split(value)
            values[key] = words[0] if words else ""
    return values


def write_fleet_env(settings: Settings) -> None:
    """Remember the fleet's effective settings in run/fleet.env."""
    values = {"INSTANCES": str(settings.instances), "BASE_PORT": str(settings.base_port),
              "NGINX_PORT": str(settings.nginx_port),
              "NGINX_LISTEN": os.environ.get("NGINX_LISTEN", "127.0.0.1"),
              "NGINX_METRICS_ALLOW": os.environ.get("NGINX_METRICS_ALLOW", METRICS_ALLOW_DEFAULT)}
    text = ("# The running fleet's settings, written by scripts/fleet.sh start: status, stop,\n"
            "# rolling-restart, ctl and reload-nginx read them from here.\n"
            + "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items()))
    partial = FLEET_ENV.with_suffix(".tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(FLEET_ENV)


def adopt_fleet_env(command: str) -> None:
    """While the fleet runs, its run/fleet.env wins over the caller's environment, with a
    warning for every value that differs; `start` and `reload-nginx` are how an operator
    changes the NGINX_* settings, so there the caller's explicit values win."""
    if supervisord_pid() is None:
        return
    for key, value in read_fleet_env().items():
        mine = os.environ.get(key)
        if command in ("start", "reload-nginx") and key in NGINX_KEYS and mine is not None:
            continue
        if mine is not None and mine != value:
            print(f"警告 / warning: {key}={mine} in your environment, but the running fleet uses "
                  f"{key}={value} ({FLEET_ENV}): using {value}", file=sys.stderr)
        os.environ[key] = value


def port_of(name: str, settings: Settings) -> int:
    """server-n listens on BASE_PORT+n."""
    return settings.base_port + int(name.rsplit("-", 1)[1])


# --- processes ---

def pid_from(path: Path, *names: str) -> int | None:
    """The live process named in a pid file, if it is still one of `names`."""
    try:
        pid = int(path.read_text().strip())
        proc = psutil.Process(pid)
        text = " ".join(proc.cmdline()) or proc.name()
    except (OSError, ValueError, psutil.Error):
        return None
    return pid if any(name in text for name in names) and proc.status() != psutil.STATUS_ZOMBIE else None


def supervisord_pid() -> int | None:
    return pid_from(RUN / "supervisord.pid", "supervisord")


def nginx_pid() -> int | None:
    return pid_from(NGINX_PID, "nginx")


def ctl(*args: str, capture: bool = True) -> subprocess.CompletedProcess:
    """supervisorctl -c <conf> args…"""
    return subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(CONF), *args],
                          capture_output=capture, text=True, timeout=STOP_TIMEOUT + 30)


def instances() -> dict[str, tuple[str, int | None]]:
    """{"server-1": ("RUNNING", pid), …} from supervisorctl status."""
    out = ctl("status", f"{GROUP}:*").stdout
    found: dict[str, tuple[str, int | None]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].startswith(f"{GROUP}:"):
            continue
        pid = None
        if len(parts) >= 4 and parts[2] == "pid":
            pid = int(parts[3].rstrip(","))
        found[parts[0].split(":", 1)[1]] = (parts[1], pid)
    return dict(sorted(found.items(), key=lambda item: int(item[0].rsplit("-", 1)[1])))


def wait_gone(pid: int, timeout: float) -> bool:
    try:
        psutil.Process(pid).wait(timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        return False
    return True


# --- HTTP probes ---

def probe(port: int, path: str = "/health") -> tuple[int | None, float, str]:
    """(status or None, latency in ms, detail) of GET 127.0.0.1:port/path; the detail is
    the answer's status field, "draining" and the instance that answered."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
        latency = 1000 * (time.monotonic() - started)
        try:
            data = json.loads(body)
        except ValueError:
            data = {}
        words = [str(data.get("status", "")) if isinstance(data, dict) else ""]
        if isinstance(data, dict) and data.get("draining"):
            words.append("draining")
        words.append(f"({response.getheader('X-Server-ID') or '?'})")
        return response.status, latency, " ".join(w for w in words if w)
    except (OSError, http.client.HTTPException) as exc:
        return None, 1000 * (time.monotonic() - started), type(exc).__name__
    finally:
        conn.close()


def wait_healthy(ports: dict[str, int], timeout: float) -> list[str]:
    """Wait until every instance answers /health with 200; returns those that did not."""
    deadline = time.monotonic() + timeout
    pending = dict(ports)
    while pending and time.monotonic() < deadline:
        for name, port in list(pending.items()):
            if probe(port)[0] == 200:
                del pending[name]
        if pending:
            states = instances()
            if any(states.get(name, ("", None))[0] == "FATAL" for name in pending):
                break
            time.sleep(0.2)
    return sorted(pending)


# --- supervisord ---

def start_supervisord() -> None:
    for folder in (RUN, LOGS):
        folder.mkdir(parents=True, exist_ok=True)
    if supervisord_pid():
        say(f"supervisord 已在运行 / already running (pid {supervisord_pid()})")
        ctl("start", f"{GROUP}:*")
        return
    user = pwd.getpwuid(os.getuid()).pw_name
    with tempfile.TemporaryFile("w+") as err:
        # supervisord forks into the background: its output goes to a file, not a pipe
        # the daemon would hold open.
        result = subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(CONF), "--user", user],
                                stdout=err, stderr=subprocess.STDOUT, timeout=30)
        err.seek(0)
        if result.returncode != 0:
            sys.stderr.write(err.read())
            raise SystemExit(f"supervisord 启动失败 / failed to start (exit {result.returncode})")
    deadline = time.monotonic() + 10
    while not instances() and time.monotonic() < deadline:
        time.sleep(0.1)
    say(f"supervisord 已启动 / started (pid {supervisord_pid()}), {os.environ['INSTANCES']} instance(s)")


def stop_supervisord() -> None:
    pid = supervisord_pid()
    if pid is None:
        say("supervisord 未运行 / not running")
        return
    children = [p.pid for p in psutil.Process(pid).children(recursive=True)]
    ctl("shutdown")
    if not wait_gone(pid, STOP_TIMEOUT):
        say("supervisord did not stop in time: killing it and its instances")
        for victim in [pid, *children]:
            try:
                os.kill(victim, signal.SIGKILL)
            except OSError:
                pass
    say("supervisord 已停止 / stopped")


# --- nginx ---

def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def ensure_nginx() -> str | None:
    """The nginx binary; installs it when missing and root (else says how). None: no nginx."""
    binary = nginx_binary()
    if binary is None:
        subprocess.run(["bash", str(ROOT / "scripts" / "install_nginx.sh")], timeout=600)
        binary = nginx_binary()
    return binary


def nginx(binary: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, "-p", str(NGINX_PREFIX), "-c", str(NGINX_CONF), *args],
                          capture_output=True, text=True, timeout=30)


def write_nginx_conf() -> None:
    listen = os.environ.get("NGINX_LISTEN", "127.0.0.1")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "nginx_conf.py"), "--run-dir", str(RUN),
                             "--log-dir", str(LOGS), "--listen", listen, "--output", str(NGINX_CONF)],
                            stdout=subprocess.DEVNULL, timeout=30)
    if result.returncode != 0:
        raise SystemExit(result.returncode)  # nginx_conf.py said why on stderr


def nginx_workers(master: int) -> set[int]:
    try:
        return {child.pid for child in psutil.Process(master).children()}
    except psutil.Error:
        return set()


def reload_nginx(binary: str) -> None:
    """Reload and wait until new workers serve: this also forgets the failures Nginx
    counted (max_fails), putting an instance that was just restarted back in rotation
    at once instead of after fail_timeout (30 s)."""
    master = nginx_pid()
    if master is None:
        return
    # One reload at a time (nginx-sync and reload-nginx may overlap): a SIGHUP that reaches
    # the master while it is still reloading can be lost, and with it a new config.
    with open(NGINX_PREFIX / "reload.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = nginx_workers(master)
        result = nginx(binary, "-s", "reload")
        if result.returncode != 0:
            raise SystemExit(f"nginx reload failed: {result.stderr.strip()}")
        # worker_processes auto: one per core; workers of earlier reloads may still be
        # finishing a long answer, so `old` can hold more than that.
        wanted = max(1, min(len(old), os.cpu_count() or 1))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(nginx_workers(master) - old) < wanted:
            time.sleep(0.05)


def start_nginx(settings: Settings) -> bool:
    binary = ensure_nginx()
    if binary is None:
        say("Nginx 未安装，未启动负载均衡；各实例可直接访问 / Nginx is not installed: the instances "
            f"answer directly on ports {settings.base_port + 1}..{settings.base_port + settings.instances}")
        return False
    write_nginx_conf()
    checked = nginx(binary, "-t", "-q")
    if checked.returncode != 0:
        raise SystemExit(f"nginx config test failed:\n{checked.stderr}")
    if nginx_pid():
        reload_nginx(binary)
        say(f"nginx 已重新加载 / reloaded (pid {nginx_pid()})")
    else:
        result = nginx(binary)
        if result.returncode != 0:
            raise SystemExit(f"nginx failed to start:\n{result.stderr}")
    deadline = time.monotonic() + 10
    while probe(settings.nginx_port, "/nginx-health")[0] != 200:
        if time.monotonic() > deadline:
            raise SystemExit(f"nginx does not answer on port {settings.nginx_port}; see {LOGS / 'nginx-error.log'}")
        time.sleep(0.1)
    say(f"nginx 已启动 / running (pid {nginx_pid()}) on "
        f"http://{os.environ.get('NGINX_LISTEN', '127.0.0.1')}:{settings.nginx_port}")
    return True


def stop_nginx() -> None:
    pid = nginx_pid()
    if pid is None:
        say("nginx 未运行 / not running")
        return
    binary = nginx_binary()
    if binary:
        nginx(binary, "-s", "quit")  # graceful: requests in progress finish
    else:
        os.kill(pid, signal.SIGQUIT)
    if not wait_gone(pid, 30):
        os.kill(pid, signal.SIGTERM)
        wait_gone(pid, 5)
    say("nginx 已停止 / stopped")


# --- commands ---

def cmd_start(settings: Settings) -> int:
    start_supervisord()
    write_fleet_env(settings)
    running = instances()
    if len(running) != settings.instances:
        print(f"supervisord runs {len(running)} instance(s) but INSTANCES={settings.instances}: "
              "restart the fleet to change INSTANCES (scripts/run.sh stop && scripts/run.sh fleet)", file=sys.stderr)
        return 1
    ports = {name: port_of(name, settings) for name in running}
    failed = wait_healthy(ports, START_TIMEOUT)
    if failed:
        cmd_status(settings)
        print(f"未就绪 / not healthy: {', '.join(failed)}; see {LOGS}/server-N.log", file=sys.stderr)
        return 1
    say(f"{len(ports)} 个实例就绪 / instances healthy on ports {min(ports.values())}..{max(ports.values())}")
    start_nginx(settings)
    return cmd_status(settings)


def cmd_stop(settings: Settings) -> int:
    stop_nginx()
    stop_supervisord()
    FLEET_ENV.unlink(missing_ok=True)
    return 0


def cmd_status(settings: Settings) -> int:
    rows = [("instance", "port", "pid", "state", "health", "latency")]
    healthy = True
    states = instances() if supervisord_pid() else {}
    if not states:
        say("supervisord 未运行 / not running")
        healthy = False
    for name, (state, pid) in states.items():
        port = port_of(name, settings)
        status, latency, detail = probe(port)
        healthy &= status == 200
        rows.append((name, str(port), str(pid or "-"), state,
                     f"{status or '-'} {detail}".strip(), f"{latency:.1f} ms" if status else "-"))
    master = nginx_pid()
    if master:
        status, latency, detail = probe(settings.nginx_port, "/nginx-health")
        through, through_ms, via = probe(settings.nginx_port, "/health")
        healthy &= status == 200 and through == 200
        rows.append(("nginx", str(settings.nginx_port), str(master), "RUNNING",
                     f"{status or '-'} {detail}; /health via nginx {through or '-'} {via}",
                     f"{latency:.1f} ms" if status else "-"))
    else:
        rows.append(("nginx", str(settings.nginx_port), "-", "STOPPED", "-", "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        say("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0 if healthy else 1


def cmd_rolling_restart(settings: Settings) -> int:
    """One instance at a time: restart (SIGTERM drains it), wait for /health, then reload
    Nginx so the instance is back in rotation before the next one goes."""
    if supervisord_pid() is None:
        print("supervisord 未运行 / not running: scripts/run.sh fleet", file=sys.stderr)
        return 1
    binary = nginx_binary() if nginx_pid() else None
    if binary:
        reload_nginx(binary)  # forget failures counted earlier: only one instance is ever out
    for name in instances():
        started = time.monotonic()
        result = ctl("restart", f"{GROUP}:{name}")
        if result.returncode != 0:
            print(f"{name}: {result.stdout.strip()} {result.stderr.strip()}", file=sys.stderr)
            return 1
        if wait_healthy({name: port_of(name, settings)}, START_TIMEOUT):
            print(f"{name} 重启后未就绪 / not healthy after restart; see {LOGS}/{name}.log", file=sys.stderr)
            return 1
        if binary:
            reload_nginx(binary)
        say(f"{name} 已重启 / restarted in {time.monotonic() - started:.1f}s (pid {instances()[name][1]})")
    return 0


def cmd_reload_nginx(settings: Settings) -> int:
    if not start_nginx(settings):
        return 1
    if supervisord_pid():
        write_fleet_env(settings)
    return 0


def cmd_events(settings: Settings) -> int:
    """The supervisord eventlistener ([eventlistener:nginx-sync] in supervisord.conf).

    Its stdout is supervisord's protocol channel: everything it says goes to stderr.
    Each RUNNING instance is watched in a thread (the answer to supervisord does not wait):
    once /health says 200, Nginx is reloaded. A newer RUNNING of the same instance
    supersedes an older watch."""
    from supervisor import childutils

    def log(message: str) -> None:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} nginx-sync: {message}", file=sys.stderr, flush=True)

    latest: dict[str, int] = {}

    def back_in_rotation(name: str, serial: int) -> None:
        port, started = port_of(name, settings), time.monotonic()
        while probe(port)[0] != 200:
            if latest.get(name) != serial or time.monotonic() - started > START_TIMEOUT:
                log(f"{name}: not healthy on port {port}, Nginx left as it is")
                return
            time.sleep(0.1)
        binary = nginx_binary()
        if nginx_pid() is None or binary is None:
            log(f"{name} healthy after {time.monotonic() - started:.1f}s; Nginx is not running")
            return
        try:
            reload_nginx(binary)
        except SystemExit as exc:  # reload_nginx's way of saying the reload failed
            log(f"{name}: {exc}")
            return
        log(f"{name} healthy after {time.monotonic() - started:.1f}s: Nginx reloaded, back in rotation")

    log(f"watching {GROUP}:server-1..{settings.instances} (ports {settings.base_port + 1}.."
        f"{settings.base_port + settings.instances})")
    serial = 0
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        event = childutils.get_headers(payload.split("\n", 1)[0])
        if headers.get("eventname") == "PROCESS_STATE_RUNNING" and event.get("groupname") == GROUP:
            serial += 1
            latest[event["processname"]] = serial
            threading.Thread(target=back_in_rotation, args=(event["processname"], serial), daemon=True).start()
        childutils.listener.ok(sys.stdout)


def cmd_rotate_logs(settings: Settings, max_bytes: str = str(LOG_MAX_BYTES)) -> int:
    """supervisord rotates the instances' logs itself; Nginx only reopens its files on
    SIGUSR1, so shift nginx-*.log to .1….5 when past `max_bytes` and tell it."""
    rotated = []
    for name in ("nginx-access.log", "nginx-error.log"):
        log = LOGS / name
        if not log.exists() or log.stat().st_size <= int(max_bytes):
            continue
        for n in range(LOG_BACKUPS - 1, 0, -1):
            older = LOGS / f"{name}.{n}"
            if older.exists():
                older.replace(LOGS / f"{name}.{n + 1}")
        log.replace(LOGS / f"{name}.1")
        rotated.append(name)
    master = nginx_pid()
    if rotated and master:
        os.kill(master, signal.SIGUSR1)
    say(f"rotated: {', '.join(rotated) or 'nothing'}")
    return 0


COMMANDS = {"start": cmd_start, "stop": cmd_stop, "status": cmd_status,
            "rolling-restart": cmd_rolling_restart, "reload-nginx": cmd_reload_nginx,
            "rotate-logs": cmd_rotate_logs, "events": cmd_events}


def main(argv: list[str]) -> int:
    if argv[:1] and argv[0] not in ("events", "rotate-logs"):
        adopt_fleet_env(argv[0])
    if argv[:1] == ["ctl"]:
        load_settings()
        return ctl(*argv[1:], capture=False).returncode
    takes_argument = argv[:1] == ["rotate-logs"] and len(argv) == 2 and argv[1].isdigit()
    if not argv or argv[0] not in COMMANDS or (len(argv) > 1 and not takes_argument):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](load_settings(), *argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
