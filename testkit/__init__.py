"""What tests/ and bench/ share: the fake OpenAI-compatible server (`fake_llm`) and
loopback ports (`free_port`). Never shipped: not a package of setup.cfg, not in the image."""
from __future__ import annotations

from tornado.testing import bind_unused_port


def free_port() -> int:
    """A loopback port nothing listens on now (bound, then released)."""
    sock, port = bind_unused_port()
    sock.close()
    return int(port)
