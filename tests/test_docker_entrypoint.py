"""scripts/docker-entrypoint.sh, run outside Docker the way the image runs it: on an empty
DATA_DIR (a fresh volume) it builds the bundled knowledge base, then becomes the server."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from urllib.parse import quote

import psutil
import pytest

from core.config import Settings
from tests.procs import ROOT, free_port, http

SETTING_NAMES = {name for name, _, _ in Settings.describe()}


@pytest.mark.slow
def test_entrypoint_builds_the_knowledge_base_into_an_empty_data_dir_then_serves(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    # As the Dockerfile sets them, but on loopback: the tests never listen elsewhere.
    env.update(PORT=str(port), SERVER_ID="server-1", DATA_DIR=str(data), BIND_ADDRESS="127.0.0.1",
               SHENLUN_PYTHON=sys.executable)
    log_path = tmp_path / "entrypoint.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "docker-entrypoint.sh")], cwd=tmp_path,
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while _health(port) != 200:
            assert proc.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.2)
        status, _, body = http("GET", f"http://127.0.0.1:{port}/api/knowledge/search?q=" + quote("乡村振兴"))
        assert status == 200, body
        found = json.loads(body)
        assert found["total"] > 0 and found["results"], found
        assert "imported" in log_path.read_text(errors="replace")
        # `exec`: the entry point's pid is the server's own, so `docker stop`'s SIGTERM
        # reaches the server, which drains and exits 0.
        assert "server.py" in psutil.Process(proc.pid).cmdline()
        proc.terminate()
        assert proc.wait(30) == 0, log_path.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _health(port: int) -> int | None:
    """Status of GET /health, None while nothing answers."""
    try:
        return http("GET", f"http://127.0.0.1:{port}/health", timeout=2)[0]
    except OSError:
        return None
