"""API keys and scopes, CORS, and the start-up policy."""
from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from core.auth import KeyRing
from core.config import ConfigError, Settings
from tests.conftest import error_of, post_json
from tests.handlers.test_grade import grade_body, llm_grade

CLIENT_KEY = "client-key-for-tests-7f3a9c"
ADMIN_KEY = "admin-key-for-tests-2b8e1d"
ROTATED_KEY = "client-key-new-4c1d"
KEYED = dict(api_keys=(CLIENT_KEY, "sha256:" + hashlib.sha256(ROTATED_KEY.encode()).hexdigest()),
             admin_api_keys=(ADMIN_KEY,))

# (method, path, body, scope needed when keys are configured, status once allowed)
ENDPOINTS = [
    ("POST", "/api/chat", {"message": "你好", "use_knowledge": False}, "client", 200),
    ("GET", "/api/knowledge/search?q=乡村振兴", None, "client", 200),
    ("POST", "/api/knowledge/add", {"id": "auth-doc", "title": "标题", "content": "内容"}, "admin", 201),
    ("GET", "/api/knowledge/no-such-doc", None, "client", 404),
    ("DELETE", "/api/knowledge/no-such-doc", None, "admin", 404),
    ("GET", "/api/practice", None, "client", 200),
    ("POST", "/api/grade", grade_body(), "client", 200),
    ("GET", "/api/openapi.json", None, "client", 200),
    ("GET", "/api/metrics", None, "client", 200),
    ("GET", "/api/metrics?scope=fleet", None, "admin", 200),
    ("POST", "/api/cache/clear", b"", "admin", 200),
    ("GET", "/health", None, "public", 200),
    ("GET", "/metrics", None, "public", 200),
    ("POST", "/v1/chat/completions", {"model": "shenlun", "messages": [{"role": "user", "content": "你好"}],
                                      "use_knowledge": False}, "client", 200),
    ("GET", "/v1/models", None, "client", 200),
]


def expected(scope: str, allowed: int) -> tuple[int, int, int, int]:
    """Status for (no key, wrong key, client key, admin key)."""
    return {"public": (allowed,) * 4,
            "client": (401, 401, allowed, allowed),
            "admin": (401, 401, 403, allowed)}[scope]


async def call(client, method, path, body, headers):
    kwargs = {"method": method, "headers": headers, "raise_error": False}
    if method == "POST":
        kwargs["body"] = body if isinstance(body, bytes) else json.dumps(body)
    return await client.fetch(path, **kwargs)


@pytest.mark.settings(**KEYED)
@pytest.mark.parametrize("method, path, body, scope, allowed", ENDPOINTS)
async def test_every_endpoint_by_key(http_server_client, fake_llm, method, path, body, scope, allowed):
    fake_llm.reply = lambda request: json.dumps(llm_grade(), ensure_ascii=False)  # for /api/grade
    keys = [{}, {"Authorization": "Bearer wrong-key"}, {"X-API-Key": CLIENT_KEY},
            {"Authorization": f"Bearer {ADMIN_KEY}"}]
    got = []
    for headers in keys:
        response = await call(http_server_client, method, path, body, headers)
        got.append(response.code)
        if response.code in (401, 403):
            # /v1 answers in OpenAI's error shape, with our code.
            code = (json.loads(response.body)["error"]["code"] if path.startswith("/v1/")
                    else error_of(response)["code"])
            assert code == {401: "unauthorized", 403: "forbidden"}[response.code]
    assert tuple(got) == expected(scope, allowed)


@pytest.mark.settings(**KEYED)
async def test_a_hashed_key_works_so_keys_rotate_without_downtime(http_server_client):
    for key in (CLIENT_KEY, ROTATED_KEY):  # old and new valid at once
        response = await post_json(http_server_client, "/api/chat", {"message": "你好", "use_knowledge": False},
                                   headers={"Authorization": f"Bearer {key}"})
        assert response.code == 200
    hashed_text = KEYED["api_keys"][1]
    response = await post_json(http_server_client, "/api/chat", {"message": "你好"},
                               headers={"X-API-Key": hashed_text})
    assert response.code == 401  # the configured hash is not itself a key


@pytest.mark.settings(**KEYED, rate_limit_per_minute=2)
async def test_rate_limit_keys_on_the_api_key(http_server_client):
    body = {"message": "你好", "use_knowledge": False}
    for _ in range(2):
        assert (await post_json(http_server_client, "/api/chat", body, headers={"X-API-Key": CLIENT_KEY})).code == 200
    assert (await post_json(http_server_client, "/api/chat", body, headers={"X-API-Key": CLIENT_KEY})).code == 429
    # Same address, another key: another bucket.
    assert (await post_json(http_server_client, "/api/chat", body, headers={"X-API-Key": ADMIN_KEY})).code == 200
    # Wrong keys spend the address's bucket, not a fresh one per guess.
    codes = [(await post_json(http_server_client, "/api/chat", body,
                              headers={"X-API-Key": f"guess-{n}"})).code for n in range(3)]
    assert codes == [401, 401, 429]


def test_wrong_keys_take_the_same_path_whatever_their_prefix(monkeypatch):
    """Structural constant-time check: the comparisons made for a wrong key are the
    same in number and operand size whether it shares 0 or all but one characters."""
    ring = KeyRing([CLIENT_KEY, "another-client-key"], [ADMIN_KEY])
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def recording(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    traces = []
    for wrong in ("x" * len(CLIENT_KEY), CLIENT_KEY[:5] + "x" * (len(CLIENT_KEY) - 5), CLIENT_KEY[:-1] + "x"):
        calls.clear()
        assert ring.identify(wrong).scope is None
        traces.append(list(calls))
    assert traces[0] == traces[1] == traces[2] == [(32, 32)] * 3
    calls.clear()
    assert ring.identify(CLIENT_KEY).scope == "client"
    assert calls == [(32, 32)] * 3  # a match does not stop the scan either


@pytest.mark.settings(cors_origins=("https://app.example.cn",))
async def test_cors_allowlist_and_preflight(http_server_client):
    preflight = await http_server_client.fetch("/api/chat", method="OPTIONS", headers={
        "Origin": "https://app.example.cn", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization"})
    assert preflight.code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example.cn"
    assert preflight.headers["Access-Control-Allow-Methods"] == "POST"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    assert "Origin" in preflight.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    other = await http_server_client.fetch("/api/chat", method="OPTIONS", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in other.headers
    answer = await post_json(http_server_client, "/api/chat", {"message": "你好", "use_knowledge": False},
                             headers={"Origin": "https://app.example.cn"})
    assert answer.headers["Access-Control-Allow-Origin"] == "https://app.example.cn"
    assert "X-Request-ID" in answer.headers["Access-Control-Expose-Headers"]
    error = await post_json(http_server_client, "/api/chat", b"{", headers={"Origin": "https://app.example.cn"})
    assert error.code == 400  # errors carry CORS headers too, so the browser can read them
    assert error.headers["Access-Control-Allow-Origin"] == "https://app.example.cn"


async def test_no_cors_headers_by_default(http_server_client):
    response = await post_json(http_server_client, "/api/chat", {"message": "你好", "use_knowledge": False},
                               headers={"Origin": "https://app.example.cn"})
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.settings(cors_origins=("*",))
async def test_cors_wildcard_never_allows_credentials(http_server_client):
    response = await http_server_client.fetch("/health", headers={"Origin": "https://any.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_production_refuses_to_start_open():
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"APP_ENV": "production"})
    assert str(info.value).startswith("API_KEYS")
    assert Settings.from_env({"APP_ENV": "production", "ALLOW_ANONYMOUS": "true"}).allow_anonymous
    assert Settings.from_env({"APP_ENV": "production", "API_KEYS": "k1"}).api_keys == ("k1",)
