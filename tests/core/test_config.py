"""Settings: defaults, parsing and one clear line per bad value."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ConfigError, Settings


def test_defaults_match_the_contract():
    s = Settings.from_env({})
    assert (s.port, s.server_id, s.app_env, s.log_level) == (5001, "server-1", "development", "INFO")
    assert (s.max_concurrent_requests, s.request_timeout, s.rate_limit_per_minute) == (10, 30.0, 60)
    assert (s.enable_response_cache, s.cache_ttl_seconds, s.max_cache_size) == (True, 300, 100)
    assert (s.health_check_enabled, s.enable_metrics, s.metrics_collection_interval) == (True, True, 60.0)
    assert (s.max_body_bytes, s.instances, s.base_port, s.nginx_port) == (1024 * 1024, 3, 5000, 8080)
    assert s.log_format == "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
    assert s.data_dir == Path(__file__).resolve().parents[2] / "index"
    assert s.llm_provider == "offline"
    assert (s.store_backend, s.redis_url) == ("diskcache", "redis://127.0.0.1:6379/0")


def test_values_are_parsed_and_typed():
    s = Settings.from_env({"PORT": "5002", "ENABLE_RESPONSE_CACHE": "false", "REQUEST_TIMEOUT": "2.5",
                           "API_KEYS": "a, b,,c", "LOG_LEVEL": "debug", "OPENAI_API_KEY": "sk-x"})
    assert s.port == 5002 and s.enable_response_cache is False and s.request_timeout == 2.5
    assert s.api_keys == ("a", "b", "c") and s.log_level == "DEBUG"
    assert s.llm_provider == "openai"


def test_settings_are_frozen():
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]


@pytest.mark.parametrize("env, name", [
    ({"MAX_CONCURRENT_REQUESTS": "abc"}, "MAX_CONCURRENT_REQUESTS"),
    ({"CACHE_TTL_SECONDS": "-5"}, "CACHE_TTL_SECONDS"),
    ({"PORT": "70000"}, "PORT"),
    ({"ENABLE_METRICS": "maybe"}, "ENABLE_METRICS"),
    ({"APP_ENV": "staging"}, "APP_ENV"),
    ({"REQUEST_TIMEOUT": "nan"}, "REQUEST_TIMEOUT"),
    ({"TRUSTED_PROXIES": "not-an-ip"}, "TRUSTED_PROXIES"),
    ({"OPENAI_BASE_URL": "ftp://x"}, "OPENAI_BASE_URL"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ({"STORE_BACKEND": "memcached"}, "STORE_BACKEND"),
    ({"REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL"),
])
def test_a_bad_value_names_the_variable(env, name):
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert str(info.value).startswith(f"{name}=")


def test_every_setting_is_documented():
    rows = Settings.describe()
    names = [name for name, _, _ in rows]
    assert len(names) == len(set(names))
    assert all(help_text for _, _, help_text in rows)
    for name in ("PORT", "OPENAI_API_KEY", "DATA_DIR", "NGINX_PORT", "TRUSTED_PROXIES"):
        assert name in names


def test_old_names_are_read_as_the_new_ones_and_a_set_new_name_wins():
    from core.config import legacy_notices
    old = {"FLASK_ENV": "development", "GUNICORN_WORKERS": "9", "DB_POOL_SIZE": "5"}
    s = Settings.from_env(old)
    assert (s.app_env, s.instances) == ("development", 9)
    s = Settings.from_env({**old, "INSTANCES": "2"})
    assert s.instances == 2
    notices = legacy_notices({**old, "INSTANCES": "2"})
    assert len(notices) == 3
    assert "read as APP_ENV=development" in notices[0]
    assert "GUNICORN_WORKERS" in notices[1] and "INSTANCES is set" in notices[1]
    assert notices[2].startswith("DB_POOL_SIZE is ignored")
    # As scripts/fleet.py passes it on: the new name exported with the value read from the old one.
    (same,) = legacy_notices({"GUNICORN_WORKERS": "4", "INSTANCES": "4"})
    assert "INSTANCES=4 is set too" in same
    assert legacy_notices({"PORT": "5001"}) == []
