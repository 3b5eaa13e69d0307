"""Run the server as supervisord's child so that stopping it never leaves the fleet with no
instance answering (scripts/instance.sh ends here).

`supervisorctl restart shenlun:server-N` returns once server-N has been up for startsecs,
not once it answers: on a busy machine an instance can take far longer than that to load
jieba and the index. Restarting server-1, -2 and -3 one after another could then stop the
last instance that answers while the others still load. So on SIGTERM (or SIGINT) this wrapper first
waits, at most GUARD_SECONDS, while no other instance answers /health and one of them is on
its way back (STARTING, RUNNING or BACKOFF in supervisord); then it passes the signal on and
the server drains as usual. When every other instance is stopping or stopped (`restart
shenlun:*`, `scripts/fleet.sh stop`) nothing is on its way back, and it does not wait.

supervisord signals this process only (stopasgroup=false); the server dies with it
(PR_SET_PDEATHSIG), so a kill -9 of the pid supervisord shows is a crash of the instance.
Standard library and supervisor only: it stays small beside the server.
"""
from __future__ import annotations

import ctypes
import http.client
import os
import signal
import subprocess
import sys
import threading
import time

# Generous: on two busy cores an instance was measured taking up to a minute to load (3 s
# idle). supervisord.conf: stopwaitsecs=85 covers this wait and SHUTDOWN_GRACE_SECONDS (20).
GUARD_SECONDS = 60.0
COMING_BACK = {"STARTING", "RUNNING", "BACKOFF"}
PR_SET_PDEATHSIG = 1


def say(message: str) -> None:
    # stderr goes to logs/server-N.log with the server's own lines.
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} - stop-guard - {message}", file=sys.stderr, flush=True)


def siblings() -> dict[str, int]:
    """The other instances of the fleet and their ports (server-n on BASE_PORT+n)."""
    me = os.environ.get("SUPERVISOR_PROCESS_NAME", "")
    base, count = int(os.environ.get("BASE_PORT", "5000")), int(os.environ.get("INSTANCES", "1"))
    return {f"server-{n}": base + n for n in range(1, count + 1) if f"server-{n}" != me}


def answers(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def coming_back(names: set[str]) -> bool:
    """Whether supervisord is bringing one of `names` up (False when it cannot be asked)."""
    try:
        from supervisor import childutils
        infos = childutils.getRPCInterface(os.environ).supervisor.getAllProcessInfo()
    except Exception:
        return False
    group = os.environ.get("SUPERVISOR_GROUP_NAME", "shenlun")
    return any(info["group"] == group and info["name"] in names and info["statename"] in COMING_BACK
               for info in infos)


def guarded_stop(child: subprocess.Popen, signum: int) -> None:
    others = siblings()
    started = time.monotonic()
    while (time.monotonic() - started < GUARD_SECONDS and others
           and not any(answers(port) for port in others.values()) and coming_back(set(others))):
        time.sleep(0.2)
    waited = time.monotonic() - started
    if waited >= 0.2:
        say(f"no other instance answered /health: waited {waited:.1f}s before stopping")
    child.send_signal(signum)


def die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def main(argv: list[str]) -> int:
    child = subprocess.Popen([sys.executable, *argv], preexec_fn=die_with_parent)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stopping.is_set():  # a second signal goes straight on
            child.send_signal(signum)
            return
        stopping.set()
        threading.Thread(target=guarded_stop, args=(child, signum), daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = child.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
