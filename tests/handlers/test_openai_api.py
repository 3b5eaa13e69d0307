"""The OpenAI-compatible API through the official `openai` client, against a live
server and the fake upstream: the same chat core as /api/chat in OpenAI's shapes."""
from __future__ import annotations

import asyncio
import json
import shutil

import openai
import pytest

from core.chat.openai_compat import MODEL_MODES, split_sections
from core.chat.wordlimit import char_count
from tests.conftest import post_json
from tests.handlers.test_grade import grade_body

KEY = "client-key-for-v1-tests-9d2f"
REPLY = "第一，健全垃圾分类设施。第二，加强宣传引导。"


def port_of(http_server) -> int:
    return next(iter(http_server._sockets.values())).getsockname()[1]


@pytest.fixture
def client(http_server):
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port_of(http_server)}/v1", api_key=KEY,
                              max_retries=0, timeout=10)


@pytest.fixture
def fixed_reply(fake_llm):
    fake_llm.reply = lambda body: REPLY
    return fake_llm


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": text}]


async def test_models_list_is_the_modes(client):
    models = await client.models.list()
    assert [m.id for m in models.data] == list(MODEL_MODES)
    assert {m.owned_by for m in models.data} == {"shenlun"}


async def test_whole_completion(client, fixed_reply):
    completion = await client.chat.completions.create(model="shenlun", messages=user("垃圾分类怎么推进？"))
    assert completion.object == "chat.completion" and completion.model == "shenlun"
    assert completion.choices[0].message.content == REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens > 0
    extra = completion.model_extra["shenlun"]
    assert extra["char_count"] == char_count(REPLY) and extra["mode"] == "chat"
    assert isinstance(extra["sources"], list) and extra["cached"] is False
    # The client's generic system prompt does not replace ours.
    sent = fixed_reply.requests[-1]["messages"]
    assert sent[0]["role"] == "system" and "helpful assistant" not in sent[0]["content"]


async def test_streamed_completion_with_usage(client, fixed_reply):
    stream = await client.chat.completions.create(
        model="shenlun-countermeasure", messages=user("提出对策"), stream=True,
        stream_options={"include_usage": True}, extra_body={"use_knowledge": False})
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    assert chunks[0].choices[0].delta.role == "assistant"
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert len(final) == 1 and final[0].model_extra["shenlun"]["char_count"] == char_count(REPLY)
    usage = chunks[-1].usage  # the fake upstream reports no usage in streams: zeros, but present
    assert chunks[-1].choices == [] and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


async def test_the_model_picks_the_mode_as_api_chat_would(http_server_client, client, fixed_reply):
    """Same material through both doors: the upstream sees the same prompt."""
    fields = {"material": "某县农村垃圾分类推进缓慢，村民参与度不高。", "question": "提出对策。", "word_limit": 300}
    await post_json(http_server_client, "/api/chat", {"message": "请作答", "mode": "countermeasure",
                                                      "cache": False, **fields})
    via_api = fixed_reply.requests[-1]["messages"]
    await client.chat.completions.create(model="shenlun-countermeasure", messages=user("请作答"),
                                         extra_body={"cache": False, **fields})
    assert fixed_reply.requests[-1]["messages"] == via_api


async def test_material_and_question_as_sections_of_the_message(http_server_client, client, fixed_reply):
    text = "请作答\n【资料】某县农村垃圾分类推进缓慢，村民参与度不高。\n【题目】提出对策。\n字数：300字"
    completion = await client.chat.completions.create(
        model="shenlun-countermeasure", messages=user(text), extra_body={"cache": False})
    via_sections = fixed_reply.requests[-1]["messages"]
    assert completion.model_extra["shenlun"]["word_limit"] == 300
    await post_json(http_server_client, "/api/chat", {
        "message": "请作答", "mode": "countermeasure", "cache": False, "word_limit": 300,
        "material": "某县农村垃圾分类推进缓慢，村民参与度不高。", "question": "提出对策。"})
    assert fixed_reply.requests[-1]["messages"] == via_sections


def test_sections_split_on_headings_only():
    assert split_sections("就是一个问题：资料怎么读？") == ("就是一个问题：资料怎么读？", {})
    free, sections = split_sections("看看\n资料：甲乙\n【题目】丙\n答案: 丁")
    assert (free, sections) == ("看看", {"material": "甲乙", "question": "丙", "answer": "丁"})


async def test_a_cached_answer_streams_too(client, fixed_reply):
    args = dict(model="shenlun", messages=user("什么是申论？"), extra_body={"use_knowledge": False})
    first = await client.chat.completions.create(**args)
    raw = await client.chat.completions.with_raw_response.create(stream=True, **args)
    assert raw.headers["x-cache"] == "HIT"
    chunks = [chunk async for chunk in raw.parse()]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == first.choices[0].message.content
    assert chunks[-1].model_extra["shenlun"]["cached"] is True
    assert fixed_reply.calls == 1


@pytest.mark.settings(offline=True)
async def test_grade_model_answers_with_the_rendered_grade(client):
    body = grade_body()
    completion = await client.chat.completions.create(
        model="shenlun-grade", messages=[{"role": "user", "content": body["answer"]}],
        extra_body={"practice_id": body["practice_id"]})
    grade = completion.model_extra["shenlun"]["grade"]
    content = completion.choices[0].message.content
    assert f"{grade['score']:g} / {grade['full_score']:g}" in content
    stream = await client.chat.completions.create(
        model="shenlun-grade", messages=[{"role": "user", "content": body["answer"]}], stream=True,
        extra_body={"practice_id": body["practice_id"]})
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == content


# --- errors in OpenAI's shape, raised as the SDK's exceptions ---

@pytest.mark.settings(api_keys=(KEY,))
async def test_missing_key_raises_authentication_error(http_server):
    anonymous = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port_of(http_server)}/v1",
                                   api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        await anonymous.chat.completions.create(model="shenlun", messages=user("你好"))
    assert raised.value.body["code"] == "unauthorized" and raised.value.body["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        await anonymous.models.list()


@pytest.mark.settings(api_keys=(KEY,), rate_limit_per_minute=1)
async def test_rate_limited_raises_rate_limit_error(client, fixed_reply):
    await client.chat.completions.create(model="shenlun", messages=user("一"))
    with pytest.raises(openai.RateLimitError) as raised:
        await client.chat.completions.create(model="shenlun", messages=user("二"))
    headers = raised.value.response.headers
    assert int(headers["retry-after"]) >= 1 and headers["x-ratelimit-remaining"] == "0"
    assert raised.value.body["code"] == "rate_limited"


@pytest.mark.settings(max_concurrent_requests=1)
async def test_full_server_raises_status_503(client, fake_llm):
    fake_llm.latency = 0.8
    slow = asyncio.ensure_future(client.chat.completions.create(model="shenlun", messages=user("慢")))
    await asyncio.sleep(0.2)
    with pytest.raises(openai.APIStatusError) as raised:
        await client.chat.completions.create(model="shenlun", messages=user("快"), stream=True)
    assert raised.value.status_code == 503 and raised.value.body["code"] == "server_busy"
    assert (await slow).choices[0].message.content


async def test_bad_requests_are_400s_naming_the_problem(client):
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(model="shenlun", messages=[{"role": "system", "content": "x"}])
    assert raised.value.body["code"] == "invalid_request" and "用户消息" in raised.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="gpt-4o", messages=user("你好"))
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="shenlun", messages=user("你好"), temperature=3)


async def test_upstream_failure_mid_stream_raises_api_error(client, fake_llm):
    fake_llm.reply = lambda body: "丙" * 200
    fake_llm.fail_after_chunks = 2
    stream = await client.chat.completions.create(model="shenlun", messages=user("断流"), stream=True,
                                                  extra_body={"use_knowledge": False})
    with pytest.raises(openai.APIError) as raised:
        async for _ in stream:
            pass
    assert "upstream" in json.dumps(raised.value.body)


async def test_a_client_that_leaves_cancels_the_upstream_call(client, fake_llm, ctx):
    fake_llm.reply = lambda body: "乙" * 400
    fake_llm.chunk_delay = 0.05
    stream = await client.chat.completions.create(model="shenlun", messages=user("长回答"), stream=True,
                                                  extra_body={"use_knowledge": False})
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    assert ctx.slots.in_use == 1
    await stream.close()
    for _ in range(100):
        if fake_llm.disconnects and ctx.slots.in_use == 0:
            break
        await asyncio.sleep(0.05)
    assert fake_llm.disconnects == 1 and ctx.slots.in_use == 0


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_reads_the_stream(http_server, fixed_reply):
    body = json.dumps({"model": "shenlun", "stream": True, "messages": user("你好")}, ensure_ascii=False)
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sN", f"http://127.0.0.1:{port_of(http_server)}/v1/chat/completions",
        "-H", "Content-Type: application/json", "--data-binary", body, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 10)
    lines = [line[6:] for line in out.decode().splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    deltas = [json.loads(line)["choices"][0]["delta"].get("content") or "" for line in lines[:-1]
              if json.loads(line)["choices"]]
    assert "".join(deltas) == REPLY
