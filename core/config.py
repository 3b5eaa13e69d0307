"""Settings: every environment variable of the contract, declared once, read once.

`Settings.from_env()` is the only place that reads `os.environ` for the service;
everything else receives the frozen object. A bad value raises `ConfigError`
whose message names the variable, and `server.py` turns that into exit code 2.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"


class ConfigError(ValueError):
    """A setting has a value the service cannot run with."""


# --- parsers: each takes the raw string and returns the typed value or raises ValueError ---

def _int(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError("must be a whole number") from None
        if lo is not None and value < lo:
            raise ValueError(f"must be >= {lo}")
        if hi is not None and value > hi:
            raise ValueError(f"must be <= {hi}")
        return value
    return parse


def _float(lo: float | None = None, hi: float | None = None) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError("must be a number") from None
        if value != value:  # NaN
            raise ValueError("must be a number")
        if lo is not None and value < lo:
            raise ValueError(f"must be >= {lo}")
        if hi is not None and value > hi:
            raise ValueError(f"must be <= {hi}")
        return value
    return parse


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("must be true or false")


def _str(raw: str) -> str:
    return raw.strip()


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value
    return parse


def _log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _networks(raw: str) -> tuple[str, ...]:
    items = _list(raw)
    for item in items:
        ipaddress.ip_network(item, strict=False)  # raises ValueError on garbage
    return items


def _host(raw: str) -> str:
    value = raw.strip()
    if value not in ("", "localhost"):
        ipaddress.ip_address(value)  # raises ValueError on garbage
    return value


def _path(raw: str) -> Path:
    if not raw.strip():
        raise ValueError("must not be empty")
    return Path(raw.strip()).expanduser().resolve()


def _url(raw: str) -> str:
    value = raw.strip()
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


def _redis_url(raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return value


def _setting(env: str, default: Any, parse: Callable[[str], Any], help: str, secret: bool = False) -> Any:
    return field(default=default, metadata={"env": env, "parse": parse, "help": help, "secret": secret})


@dataclass(frozen=True)
class Settings:
    """The service's configuration. Build it with `Settings.from_env()`."""

    # service
    port: int = _setting("PORT", 5001, _int(1, 65535), "HTTP port of this instance")
    host: str = _setting("BIND_ADDRESS", "127.0.0.1", _host, "address to listen on; 0.0.0.0 for every interface (Docker)")
    server_id: str = _setting("SERVER_ID", "server-1", _str, "name of this instance in headers, logs and metrics")
    app_env: str = _setting("APP_ENV", "development", _choice("development", "production"), "development or production")
    log_level: str = _setting("LOG_LEVEL", "INFO", _log_level, "DEBUG, INFO, WARNING, ERROR")
    log_format: str = _setting("LOG_FORMAT", DEFAULT_LOG_FORMAT, str, "logging format string, or 'json' for JSON lines")
    data_dir: Path = _setting("DATA_DIR", PROJECT_ROOT / "index", _path, "folder of all state: index, documents, cache")
    shutdown_grace_seconds: float = _setting("SHUTDOWN_GRACE_SECONDS", 20.0, _float(0, 3600), "how long in-flight requests may finish after SIGTERM")

    # concurrency and limits
    max_concurrent_requests: int = _setting("MAX_CONCURRENT_REQUESTS", 10, _int(1, 10000), "LLM requests in flight per instance; more get 503")
    queue_timeout: float = _setting("QUEUE_TIMEOUT", 0.0, _float(0, 60), "seconds a request may wait for a free slot before 503")
    request_timeout: float = _setting("REQUEST_TIMEOUT", 30.0, _float(0.1, 600), "seconds the LLM may take before 504")
    rate_limit_per_minute: int = _setting("RATE_LIMIT_PER_MINUTE", 60, _int(0, 1_000_000), "requests per minute per client, fleet-wide (0 = off)")
    max_body_bytes: int = _setting("MAX_BODY_BYTES", 1024 * 1024, _int(1024, 100 * 1024 * 1024), "largest request body; larger gets 413")
    idle_connection_timeout: float = _setting("IDLE_CONNECTION_TIMEOUT", 75.0, _float(0.5, 3600), "seconds a connection may idle or take to send its headers")
    body_timeout: float = _setting("BODY_TIMEOUT", 30.0, _float(0.5, 3600), "seconds a client may take to send its body")

    # response cache
    enable_response_cache: bool = _setting("ENABLE_RESPONSE_CACHE", True, _bool, "cache LLM answers in the shared disk cache")
    cache_ttl_seconds: int = _setting("CACHE_TTL_SECONDS", 300, _int(1, 30 * 86400), "seconds a cached answer is served")
    max_cache_size: int = _setting("MAX_CACHE_SIZE", 100, _int(1, 10_000_000), "most cached answers (least recently used evicted)")
    cache_max_bytes: int = _setting("CACHE_MAX_BYTES", 256 * 1024 * 1024, _int(1024 * 1024), "byte bound of the shared cache")

    # shared store (cache, rate limit, fleet metrics)
    store_backend: str = _setting("STORE_BACKEND", "diskcache", _choice("diskcache", "redis"), "shared store: diskcache (one machine) or redis (several hosts)")
    redis_url: str = _setting("REDIS_URL", "redis://127.0.0.1:6379/0", _redis_url, "Redis of STORE_BACKEND=redis (redis://[:password@]host:port/db)", secret=True)

    # health and metrics
    health_check_enabled: bool = _setting("HEALTH_CHECK_ENABLED", True, _bool, "serve GET /health")
    enable_metrics: bool = _setting("ENABLE_METRICS", True, _bool, "serve /api/metrics and /metrics")
    metrics_collection_interval: float = _setting("METRICS_COLLECTION_INTERVAL", 60.0, _float(0.1, 86400), "seconds between fleet metric snapshots")

    # LLM
    openai_api_key: str = _setting("OPENAI_API_KEY", "", _str, "key of the OpenAI-compatible endpoint; empty = offline provider", secret=True)
    openai_base_url: str = _setting("OPENAI_BASE_URL", "", _url, "base URL of the OpenAI-compatible endpoint (…/v1)")
    llm_model: str = _setting("LLM_MODEL", "gpt-4o-mini", _str, "model name sent to the endpoint")

    # access control
    api_keys: tuple[str, ...] = _setting("API_KEYS", (), _list, "client keys, comma separated (plain or sha256:<hex>)", secret=True)
    admin_api_keys: tuple[str, ...] = _setting("ADMIN_API_KEYS", (), _list, "admin keys, comma separated (plain or sha256:<hex>)", secret=True)
    allow_anonymous: bool = _setting("ALLOW_ANONYMOUS", False, _bool, "let production start without API keys")
    cors_origins: tuple[str, ...] = _setting("CORS_ORIGINS", (), _list, "allowed browser origins, comma separated, or *")
    trusted_proxies: tuple[str, ...] = _setting("TRUSTED_PROXIES", ("127.0.0.1/32", "::1/128"), _networks, "proxies whose X-Real-IP / X-Forwarded-For are believed")

    # fleet
    instances: int = _setting("INSTANCES", 3, _int(1, 64), "instances supervisord runs")
    base_port: int = _setting("BASE_PORT", 5000, _int(1, 65000), "instance n listens on BASE_PORT+n")
    nginx_port: int = _setting("NGINX_PORT", 8080, _int(1, 65535), "port of the Nginx balancer")

    @property
    def llm_provider(self) -> str:
        """`openai` when a key or a base URL is configured, else `offline`."""
        return "openai" if (self.openai_api_key or self.openai_base_url) else "offline"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every setting from `env` (default `os.environ`); keyword overrides win.
        Old names of LEGACY are read as their new ones (`legacy_notices` says which).

        Raises ConfigError naming the first variable with a bad value.
        """
        env = os.environ if env is None else env
        env, origin = _with_legacy(env)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            raw = env.get(name)
            if raw is None or (raw.strip() == "" and not isinstance(f.default, str)):
                continue
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError as exc:
                shown = "<hidden>" if f.metadata["secret"] else repr(raw)
                if name in origin:
                    raise ConfigError(f"{origin[name]}={shown} (read as {name}): {exc}") from None
                raise ConfigError(f"{name}={shown}: {exc}") from None
        values.update(overrides)
        settings = cls(**values)
        if (settings.app_env == "production" and not settings.allow_anonymous
                and not (settings.api_keys or settings.admin_api_keys)):
            raise ConfigError("API_KEYS: APP_ENV=production needs API_KEYS/ADMIN_API_KEYS "
                              "(or ALLOW_ANONYMOUS=true to run open on purpose)")
        if "*" in settings.cors_origins and len(settings.cors_origins) > 1:
            raise ConfigError("CORS_ORIGINS: '*' cannot be combined with named origins")
        return settings

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(variable, default, help) for every setting, for docs and `--help`."""
        return [(f.metadata["env"], _as_env(f.default), f.metadata["help"]) for f in dataclasses.fields(cls)]

    def effective(self) -> list[tuple[str, str]]:
        """(variable, value) for every setting as in force, a secret shown only as
        `<set>` (for `--check-config`)."""
        rows = []
        for f in dataclasses.fields(self):
            value = _as_env(getattr(self, f.name))
            rows.append((f.metadata["env"], "<set>" if f.metadata["secret"] and value else value))
        return rows


def _as_env(value: Any) -> str:
    """A setting's value written as its environment variable would be."""
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


# --- names of the Flask/gunicorn version (docs/migration.md) ---

@dataclass(frozen=True)
class Legacy:
    """A variable of the old deployment guide: read as `becomes` (through `convert`),
    or, when `becomes` is empty, ignored for the reason given."""

    env: str
    becomes: str = ""
    convert: Callable[[str], str] = _str
    reason: str = ""


def _flask_env(raw: str) -> str:
    # Flask knew development, production (and testing); only production is production here.
    return "production" if raw.strip().lower() == "production" else "development"


LEGACY: tuple[Legacy, ...] = (
    Legacy("FLASK_ENV", "APP_ENV", _flask_env),
    Legacy("GUNICORN_WORKERS", "INSTANCES"),
    Legacy("WORKER_CLASS", reason="each instance is one Tornado event loop; there is no worker class"),
    Legacy("WORKER_CONNECTIONS", reason="connections per instance are bounded by MAX_CONCURRENT_REQUESTS "
                                        "and RATE_LIMIT_PER_MINUTE"),
    Legacy("DB_POOL_SIZE", reason="there is no database pool: the document store is one SQLite file"),
    Legacy("DB_POOL_TIMEOUT", reason="there is no database pool: the document store is one SQLite file"),
)


def _with_legacy(env: Mapping[str, str]) -> tuple[Mapping[str, str], dict[str, str]]:
    """`env` with each old name that is set copied to its new one (a set new name
    wins), and new name → the old name it came from, for error messages."""
    added: dict[str, str] = {}
    origin: dict[str, str] = {}
    for old in LEGACY:
        raw = env.get(old.env)
        if raw is None or not old.becomes or old.becomes in env:
            continue
        added[old.becomes] = old.convert(raw)
        origin[old.becomes] = old.env
    return ({**env, **added} if added else env), origin


def legacy_notices(env: Mapping[str, str] | None = None) -> list[str]:
    """One line per old name set in `env`: what it became, or that it is ignored."""
    env = os.environ if env is None else env
    notices = []
    for old in LEGACY:
        raw = env.get(old.env)
        if raw is None:
            continue
        if not old.becomes:
            notices.append(f"{old.env} is ignored: {old.reason} (see docs/migration.md)")
        elif env.get(old.becomes) == old.convert(raw):
            # e.g. scripts/fleet.py exports INSTANCES as read from GUNICORN_WORKERS
            notices.append(f"{old.env} is deprecated: {old.becomes}={env[old.becomes]} is set too; "
                           f"remove it (see docs/migration.md)")
        elif old.becomes in env:
            notices.append(f"{old.env} is deprecated and ignored: {old.becomes} is set and wins "
                           f"(see docs/migration.md)")
        else:
            notices.append(f"{old.env} is deprecated: read as {old.becomes}={old.convert(raw)}; "
                           f"rename it (see docs/migration.md)")
    return notices
