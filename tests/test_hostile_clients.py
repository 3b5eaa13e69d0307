"""Slow-loris clients on loopback are cut off by the timeouts; others keep being served."""
from __future__ import annotations

import socket
import time

from tests.procs import http, start_server


def _drip(sock: socket.socket, data: bytes) -> bool:
    """Send one byte; False once the server has closed the connection."""
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def _closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset
    finally:
        sock.setblocking(True)


def test_slow_clients_are_disconnected_while_normal_ones_are_served(tmp_path):
    server = start_server(tmp_path, DATA_DIR=str(tmp_path), IDLE_CONNECTION_TIMEOUT="1",
                          BODY_TIMEOUT="1")
    try:
        header_dribblers, body_dribblers = [], []
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\n")
            header_dribblers.append(s)
            b = socket.create_connection(("127.0.0.1", server.port))
            b.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{")
            body_dribblers.append(b)
        served = 0
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            for s in header_dribblers:
                _drip(s, b"X")
            for b in body_dribblers:
                _drip(b, b" ")
            status, _, _ = http("GET", server.url + "/health", timeout=2)
            served += status == 200
            time.sleep(0.2)
        assert served >= 10  # normal clients were answered throughout
        slow = header_dribblers + body_dribblers
        closed = sum(_closed_by_server(s) or not _drip(s, b"X") for s in slow)
        assert closed == len(slow)
        for s in slow:
            s.close()
    finally:
        assert server.stop() == 0
    assert "grace period over" not in server.log()  # no phantom requests held the drain
