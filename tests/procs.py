"""Real server processes for tests: start `server.py` on a free loopback port."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from testkit import free_port

ROOT = Path(__file__).resolve().parent.parent
# Every server log of this test session, for the check that no key is ever logged.
SERVER_LOGS: list[Path] = []


class ServerProcess:
    """`python server.py` with the given environment; stderr goes to a log file."""

    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.port = int(env["PORT"])
        self.log_path = log_path
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "API_KEYS", "ADMIN_"))}
        full_env["LOG_LEVEL"] = "DEBUG"  # the most talkative level, for the secrets check
        full_env.update(env)
        SERVER_LOGS.append(log_path)
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "server.py"), *args], cwd=ROOT,
                                     env=full_env, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"server on {self.port} not ready: {self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def start_server(tmp_path: Path, name: str = "server-1", **env: str) -> ServerProcess:
    """Start a server on a free port with `env` and wait until it accepts."""
    env = {"PORT": str(free_port()), "SERVER_ID": name, **env}
    return ServerProcess(env, tmp_path / f"{name}.log").wait_ready()


def http(method: str, url: str, body: object = None, headers: dict[str, str] | None = None,
         timeout: float = 30) -> tuple[int, Any, bytes]:
    """One blocking request; returns (status, headers (case-insensitive), body) whatever the status."""
    import json
    import urllib.error
    import urllib.request

    data = None if body is None else (body if isinstance(body, bytes) else
                                      json.dumps(body, ensure_ascii=False).encode())
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()
