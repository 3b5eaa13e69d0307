"""Logging set-up: the seed's format or JSON lines, with secrets scrubbed."""
from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable

# Bearer tokens and key-looking values, wherever they appear in a message.
_SECRET_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]+"),
    re.compile(r"(?i)((?:api[_-]?key|authorization|token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]+"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),
]
# What each pattern needs in a line (lower-cased), for the common case: nothing to scrub.
_SECRET_HINTS = ("bearer", "api_key", "api-key", "apikey", "authorization", "token", "sk-")
_ACCESS_FIELDS = ("request_id", "client", "method", "path", "status", "latency_ms", "cache")


class SecretFilter(logging.Filter):
    """Replaces configured secrets and bearer tokens in every record with ***."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        for pattern in _SECRET_PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        # Most lines hold nothing to scrub: substring checks say so (~3 µs, the
        # patterns ~35 µs).
        lowered = message.lower()
        if not any(hint in lowered for hint in _SECRET_HINTS) and \
                not any(secret in message for secret in self._secrets):
            return True
        scrubbed = self.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


class SecondStamp:
    """A `strftime` of the local time, made once per second: every access line asks
    for one, and strftime costs more than the rest of the timestamp."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self._second = -1
        self._text = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._text = time.strftime(self.fmt, time.localtime(second))
            self._second = second
        return self._text


class SeedFormatter(logging.Formatter):
    """`logging.Formatter` with the same `asctime`, its seconds formatted once per second."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._stamp = SecondStamp(self.default_time_format)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt:
            return super().formatTime(record, datefmt)
        return f"{self._stamp(record.created)},{int(record.msecs):03d}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the access fields when present."""

    def __init__(self, server_id: str) -> None:
        super().__init__()
        self._server_id = server_id
        self._stamp = SecondStamp("%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": f"{self._stamp(record.created)}.{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "server_id": self._server_id,
            "message": record.getMessage(),
        }
        for name in _ACCESS_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(*, level: str, fmt: str, server_id: str, secrets: Iterable[str] = ()) -> None:
    """Send every log record to stderr in `fmt` (or JSON lines when fmt is 'json')."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt.strip().lower() == "json":
        handler.setFormatter(JsonFormatter(server_id))
    else:
        handler.setFormatter(SeedFormatter(fmt))
    handler.addFilter(SecretFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every upstream request at INFO; keep that at DEBUG only.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
