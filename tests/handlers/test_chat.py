"""POST /api/chat through real HTTP and the real openai client."""
from __future__ import annotations

import asyncio
import json
import logging
import re

import pytest

from core.chat.prompts import MODES
from core.chat.wordlimit import char_count
from core.knowledge.store import Document
from tests.conftest import error_of, post_json


async def test_whole_answer_comes_from_the_upstream(http_server_client, fake_llm):
    fake_llm.reply = lambda body: "要点一：加强基层治理。[1]"
    response = await post_json(http_server_client, "/api/chat",
                               {"message": "如何答好归纳概括题？", "mode": "summarize",
                                "use_knowledge": False})
    assert response.code == 200
    body = json.loads(response.body)
    assert body["answer"] == "要点一：加强基层治理。[1]"
    assert body["mode"] == "summarize"
    assert body["model"] == "fake-model"
    assert body["char_count"] == char_count("要点一：加强基层治理。[1]")
    assert body["usage"] == {"prompt_tokens": 11, "completion_tokens": len(body["answer"])}
    assert body["server_id"] == "server-1"
    assert body["unknown_citations"] == [1]  # no sources were given, so [1] names none
    assert fake_llm.calls == 1
    sent = fake_llm.requests[0]
    assert sent["model"] == "fake-model"
    assert sent["messages"][0]["role"] == "system"
    assert "归纳概括" in sent["messages"][0]["content"]
    assert sent["messages"][-1] == {"role": "user", "content": "如何答好归纳概括题？"}


async def test_material_question_and_word_limit_reach_the_prompt(http_server_client, fake_llm):
    fake_llm.reply = lambda body: "字" * 30
    response = await post_json(http_server_client, "/api/chat", {
        "message": "请作答", "mode": "countermeasure", "material": "某村垃圾分类推进缓慢。",
        "question": "针对资料中的问题提出对策。", "word_limit": 20, "use_knowledge": False})
    body = json.loads(response.body)
    assert response.code == 200
    assert body["char_count"] == 30 and body["word_limit"] == 20 and body["over_limit"] is True
    sent = fake_llm.requests[0]["messages"]
    assert "不超过20字" in sent[0]["content"]
    assert "某村垃圾分类推进缓慢。" in sent[-1]["content"]
    assert "针对资料中的问题提出对策。" in sent[-1]["content"]


async def test_history_is_sent_in_order(http_server_client, fake_llm):
    history = [{"role": "user", "content": "什么是申论？"},
               {"role": "assistant", "content": "申论是公务员考试科目。"},
               {"role": "user", "content": "怎么复习？"}]
    response = await post_json(http_server_client, "/api/chat",
                               {"messages": history, "use_knowledge": False})
    assert response.code == 200
    sent = fake_llm.requests[0]["messages"]
    assert [m for m in sent if m["role"] != "system"] == history


@pytest.mark.parametrize("body, field", [
    ({}, "message"),
    ({"message": ""}, "message"),
    ({"message": 42}, "message"),
    ({"message": "hi", "mode": "poetry"}, "mode"),
    ({"message": "hi", "temperature": 3}, "temperature"),
    ({"message": "hi", "temperature": "hot"}, "temperature"),
    ({"message": "hi", "max_tokens": 0}, "max_tokens"),
    ({"message": "hi", "max_tokens": True}, "max_tokens"),
    ({"message": "hi", "word_limit": "200"}, "word_limit"),
    ({"message": "hi", "stream": "yes"}, "stream"),
    ({"message": "hi", "material": ["a"]}, "material"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ({"messages": "hello"}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}] * 21}, "messages"),
    ({"message": "x" * 8001}, "message"),
    ([1, 2], "请求体"),
])
async def test_bad_fields_are_400_naming_the_field(http_server_client, fake_llm, body, field):
    response = await post_json(http_server_client, "/api/chat", body)
    assert response.code == 400
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert field in error["message"]
    assert fake_llm.calls == 0


@pytest.mark.parametrize("raw", [b"not json", b"{\"message\": ", "{\"message\": \"中\"}".encode("gbk"), b""])
async def test_non_json_bodies_are_invalid_json(http_server_client, raw):
    response = await post_json(http_server_client, "/api/chat", raw)
    assert response.code == 400
    assert error_of(response)["code"] == "invalid_json"


async def test_deeply_nested_json_is_invalid_json_not_500(http_server_client):
    response = await post_json(http_server_client, "/api/chat", b"[" * 100_000 + b"]" * 100_000)
    assert response.code in (400, 413)
    assert error_of(response)["code"] in ("invalid_json", "payload_too_large")


@pytest.mark.settings(max_body_bytes=2048)
async def test_body_over_the_limit_is_413(http_server_client, fake_llm):
    response = await post_json(http_server_client, "/api/chat", {"message": "字" * 2000})
    assert response.code == 413
    assert error_of(response)["code"] == "payload_too_large"
    assert fake_llm.calls == 0


@pytest.mark.settings(max_body_bytes=2048)
async def test_chunked_body_over_the_limit_is_413(http_server_client, fake_llm):
    async def producer(write):
        for _ in range(8):
            await write(b" " * 1024)
        await write(b'{"message": "hi"}')

    response = await http_server_client.fetch(
        "/api/chat", method="POST", body_producer=producer, raise_error=False)
    assert response.code == 413
    assert error_of(response)["code"] == "payload_too_large"


async def test_unknown_path_and_wrong_method(http_server_client):
    missing = await http_server_client.fetch("/api/nope", raise_error=False)
    assert missing.code == 404 and error_of(missing)["code"] == "not_found"
    wrong = await http_server_client.fetch("/api/chat", raise_error=False)
    assert wrong.code == 405 and error_of(wrong)["code"] == "method_not_allowed"
    assert wrong.headers["Allow"] == "POST"


async def test_a_body_sent_again_is_a_hit_and_so_is_the_same_request_written_otherwise(http_server_client,
                                                                                       fake_llm):
    body = {"message": "如何答好归纳概括题？", "mode": "summarize", "use_knowledge": False, "temperature": 0.5}
    first = await post_json(http_server_client, "/api/chat", body)
    again = await post_json(http_server_client, "/api/chat", body)
    reordered = await post_json(http_server_client, "/api/chat", dict(reversed(list(body.items()))))
    assert [r.headers["X-Cache"] for r in (first, again, reordered)] == ["MISS", "HIT", "HIT"]
    assert json.loads(again.body)["answer"] == json.loads(first.body)["answer"]
    other = await post_json(http_server_client, "/api/chat", {**body, "temperature": 0.6})
    assert other.headers["X-Cache"] == "MISS" and fake_llm.calls == 2


async def test_a_refused_body_is_refused_with_its_message_each_time_it_comes(http_server_client, fake_llm):
    body = json.dumps({"message": "问题", "temperature": 9})
    answers = [await post_json(http_server_client, "/api/chat", body) for _ in range(2)]
    assert [r.code for r in answers] == [400, 400]
    assert error_of(answers[0])["message"] == error_of(answers[1])["message"]
    assert "temperature" in error_of(answers[1])["message"] and fake_llm.calls == 0


@pytest.mark.settings(offline=True)
async def test_a_grading_body_sent_twice_is_graded_both_times(http_server_client):
    grade = {"answer": "1. 设施不足：桶少。\n2. 宣传单一。", "question": "概括Q市垃圾分类存在的问题。",
             "material": EXAM["material"], "mode": "批改"}
    answers = [json.loads((await post_json(http_server_client, "/api/chat", grade)).body) for _ in range(2)]
    assert [a["mode"] for a in answers] == ["grade", "grade"] and answers[0]["score"] == answers[1]["score"]


@pytest.mark.settings(body_timeout=0.5)
async def test_the_body_timeout_stops_once_the_body_is_in_however_long_the_answer_takes(http_server_client,
                                                                                          fake_llm):
    fake_llm.latency = 0.8  # the answer takes longer than BODY_TIMEOUT; the body came at once
    answered = await post_json(http_server_client, "/api/chat", {"message": "慢慢答", "use_knowledge": False})
    assert answered.code == 200 and json.loads(answered.body)["answer"]


async def test_request_id_is_echoed_or_made(http_server_client):
    given = await post_json(http_server_client, "/api/chat", {},
                            headers={"X-Request-ID": "frontend-123"})
    assert given.headers["X-Request-ID"] == "frontend-123"
    assert error_of(given)["request_id"] == "frontend-123"
    made = await post_json(http_server_client, "/api/chat", {},
                           headers={"X-Request-ID": "bad id with spaces"})
    assert made.headers["X-Request-ID"] != "bad id with spaces"
    assert len(made.headers["X-Request-ID"]) == 32
    assert made.headers["X-Server-ID"] == "server-1"
    assert made.headers["X-Content-Type-Options"] == "nosniff"
    assert "Server" not in made.headers


async def test_upstream_500_is_502(http_server_client, fake_llm):
    fake_llm.status = 500
    response = await post_json(http_server_client, "/api/chat", {"message": "hi", "use_knowledge": False})
    assert response.code == 502
    assert error_of(response)["code"] == "upstream_error"
    assert fake_llm.calls == 1  # no silent retries


async def test_upstream_garbage_is_502(http_server_client, fake_llm):
    fake_llm.garbage = True
    response = await post_json(http_server_client, "/api/chat", {"message": "hi", "use_knowledge": False})
    assert response.code == 502
    assert error_of(response)["code"] == "upstream_error"


@pytest.mark.settings(request_timeout=0.3)
async def test_slow_upstream_is_504_after_one_timeout(http_server_client, fake_llm):
    fake_llm.latency = 2.0
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await post_json(http_server_client, "/api/chat", {"message": "hi", "use_knowledge": False})
    elapsed = loop.time() - started
    assert response.code == 504
    assert error_of(response)["code"] == "upstream_timeout"
    assert fake_llm.calls == 1
    assert elapsed < 1.5  # one timeout, not three


@pytest.mark.upstream("unreachable_llm")
async def test_unreachable_upstream_is_502(http_server_client):
    response = await post_json(http_server_client, "/api/chat", {"message": "hi", "use_knowledge": False})
    assert response.code == 502
    assert error_of(response)["code"] == "upstream_error"


# --- streaming ---

def parse_sse(raw: str) -> list[tuple[str, dict]]:
    events = []
    for block in raw.strip().split("\n\n"):
        name, data = "message", None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: "):])
        events.append((name, data))
    return events


async def stream_chat(client, body, on_chunk=None):
    chunks: list[tuple[float, bytes]] = []
    loop = asyncio.get_running_loop()

    def collect(chunk: bytes) -> None:
        chunks.append((loop.time(), chunk))
        if on_chunk:
            on_chunk(chunk)

    response = await client.fetch(
        "/api/chat", method="POST", body=json.dumps({**body, "stream": True}),
        streaming_callback=collect, raise_error=False, request_timeout=20)
    return response, chunks


async def test_stream_sends_deltas_before_the_answer_is_complete(http_server_client, fake_llm):
    text = "第一部分的内容，第二部分的内容，第三部分的内容，第四部分的内容。"
    fake_llm.reply = lambda body: text
    fake_llm.chunk_delay = 0.15
    response, chunks = await stream_chat(http_server_client, {"message": "hi", "use_knowledge": False})
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    events = parse_sse(b"".join(c for _, c in chunks).decode())
    deltas = [data["delta"] for name, data in events if name == "message"]
    assert "".join(deltas) == text
    assert len(deltas) > 3
    # Not buffered: the first delta arrived well before the last one.
    first_delta_at = next(t for t, c in chunks if b'"delta"' in c)
    assert chunks[-1][0] - first_delta_at > 0.3
    name, done = events[-1]
    assert name == "done"
    assert "answer" not in done
    assert done["char_count"] == char_count(text)
    assert done["model"] == "fake-model" and done["mode"] == "chat"


async def test_stream_failure_midway_is_an_error_event(http_server_client, fake_llm):
    fake_llm.reply = lambda body: "甲" * 64
    fake_llm.fail_after_chunks = 2
    response, chunks = await stream_chat(http_server_client, {"message": "hi", "use_knowledge": False})
    assert response.code == 200  # the status line went out with the first delta
    events = parse_sse(b"".join(c for _, c in chunks).decode())
    # Both chunks the upstream sent before it broke reach the client (in one event when
    # they arrived in one read), then the error.
    assert {name for name, _ in events[:-1]} == {"message"}
    assert "".join(data["delta"] for _, data in events[:-1]) == "甲" * 16
    name, data = events[-1]
    assert name == "error"
    assert data["error"]["code"] == "upstream_error" and data["error"]["status"] == 502


def stream_error(response, chunks) -> dict:
    """The plain JSON error a stream answered instead of events (checked for shape)."""
    assert response.headers["Content-Type"].startswith("application/json")
    body = json.loads(b"".join(c for _, c in chunks))
    assert body["error"]["status"] == response.code
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]
    return body["error"]


async def test_stream_upstream_error_before_any_delta_is_a_plain_error(http_server_client, fake_llm):
    fake_llm.status = 503
    response, chunks = await stream_chat(http_server_client, {"message": "hi", "use_knowledge": False})
    assert response.code == 502
    assert stream_error(response, chunks)["code"] == "upstream_error"


@pytest.mark.upstream("unreachable_llm")
async def test_stream_to_an_unreachable_upstream_is_a_plain_502_even_with_sources(http_server_client, ctx):
    await ctx.knowledge.add([Document(id="d1", title="枫桥经验", content="枫桥经验就地化解矛盾纠纷。")])
    response, chunks = await stream_chat(http_server_client, {"message": "枫桥经验是什么？"})
    assert response.code == 502
    error = stream_error(response, chunks)
    assert error["code"] == "upstream_error" and error["message"] == "无法连接大模型服务"
    assert b"event:" not in b"".join(c for _, c in chunks)  # the sources event was held back


async def test_client_disconnect_mid_stream_cancels_the_upstream_call(http_server, fake_llm, ctx):
    fake_llm.reply = lambda body: "乙" * 400
    fake_llm.chunk_delay = 0.05
    port = next(iter(http_server._sockets.values())).getsockname()[1]
    body = json.dumps({"message": "hi", "stream": True, "use_knowledge": False}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    received = b""
    while b'"delta"' not in received:
        received += await asyncio.wait_for(reader.read(4096), 5)
    assert ctx.slots.in_use == 1
    writer.close()  # the client goes away mid-stream
    for _ in range(100):
        if fake_llm.disconnects and ctx.slots.in_use == 0:
            break
        await asyncio.sleep(0.05)
    assert fake_llm.disconnects == 1  # the upstream saw us hang up: generation stopped
    assert ctx.slots.in_use == 0


async def raw_stream(port: int, body: dict, *, until: bytes | None = None):
    """POST a streamed /api/chat over a plain socket: (reader, writer, bytes read so far,
    up to `until` when given, else the whole response)."""
    data = json.dumps({**body, "stream": True}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
    await writer.drain()
    if until is None:
        return reader, writer, await asyncio.wait_for(reader.read(), 10)
    received = b""
    while until not in received:
        received += await asyncio.wait_for(reader.read(4096), 5)
    return reader, writer, received


def server_port(http_server) -> int:
    return next(iter(http_server._sockets.values())).getsockname()[1]


async def test_delta_text_reaches_the_client_exactly_as_the_model_wrote_it(http_server_client, fake_llm):
    # Quotes, backslashes, control characters, an emoji and CJK across chunk boundaries.
    text = '他说："依法\\行政"\n\t第二行\u0001 😀 结尾。' * 3
    fake_llm.reply = lambda body: text
    fake_llm.chunk_chars = 5
    fake_llm.chunk_delay = 0.02  # chunks arrive apart: one event each
    response, chunks = await stream_chat(http_server_client, {"message": "hi", "use_knowledge": False})
    raw = b"".join(c for _, c in chunks).decode()
    deltas = [data["delta"] for name, data in parse_sse(raw) if name == "message"]
    assert "".join(deltas) == text and len(deltas) > 1
    assert "依法" in raw and "\\u4f9d" not in raw  # UTF-8 as it is, not \u-escaped
    for line in raw.split("\n"):
        if line.startswith('data: {"delta"'):
            assert line == "data: " + json.dumps(json.loads(line[6:]), ensure_ascii=False)


async def test_a_client_that_leaves_mid_stream_ends_its_request_cleanly(http_server, fake_llm, ctx, caplog):
    fake_llm.reply = lambda body: "丁" * 400
    fake_llm.chunk_delay = 0.05
    port = server_port(http_server)
    with caplog.at_level(logging.WARNING):
        _, writer, _ = await raw_stream(port, {"message": "hi", "use_knowledge": False}, until=b'"delta"')
        writer.close()
        for _ in range(100):
            if ctx.inflight_requests == 0 and ctx.slots.in_use == 0:
                break
            await asyncio.sleep(0.05)
        assert ctx.inflight_requests == 0 and ctx.slots.in_use == 0
        # The request's task took the cancellation back: nothing logged as a failure
        # (no "Exception in callback", no CancelledError), and the server streams on.
        fake_llm.chunk_delay = 0.0
        _, writer, raw = await raw_stream(port, {"message": "again", "use_knowledge": False})
        writer.close()
    assert b"event: done" in raw
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.settings(offline=True)
@pytest.mark.parametrize("mode", sorted(MODES))
async def test_offline_provider_answers_every_mode(http_server_client, fake_llm, mode):
    response = await post_json(http_server_client, "/api/chat",
                               {"message": "如何作答这道题？", "mode": mode})
    assert response.code == 200
    body = json.loads(response.body)
    assert body["model"] == "offline" and body["mode"] == mode
    assert MODES[mode] in body["answer"]
    assert body["char_count"] > 50
    assert fake_llm.calls == 0


@pytest.mark.settings(offline=True)
async def test_offline_provider_streams(http_server_client):
    response, chunks = await stream_chat(http_server_client, {"message": "文章写作怎么立意？", "mode": "essay"})
    events = parse_sse(b"".join(c for _, c in chunks).decode())
    assert events[-1][0] == "done" and events[-1][1]["model"] == "offline"
    assert "文章写作" in "".join(d["delta"] for n, d in events if n == "message")


# --- answers for the answer sheet: prompts, self-check, one revision ---

PROPOSAL_TASK = ("假如你是Y市文明办的工作人员，请根据给定资料，以Y市文明办的名义拟写一份倡议书，"
                 "倡导市民厉行节约、反对餐饮浪费。（25分）要求：内容具体，格式规范，不超过400字。")
EXAM = {"message": "请作答", "mode": "summarize", "material": "Q市垃圾分类桶少、清运不及时，宣传形式单一。",
        "question": "概括Q市垃圾分类存在的问题。（15分）", "word_limit": 100, "use_knowledge": False,
        "cache": False}


def system_prompt(fake_llm, n: int = 0) -> str:
    return "\n".join(m["content"] for m in fake_llm.requests[n]["messages"] if m["role"] == "system")


async def test_exam_prompt_forbids_markdown_and_markers_and_carries_band_and_genre_table(
        http_server_client, fake_llm):
    fake_llm.reply = lambda body: "倡议书\n广大市民朋友们：\n" + "节约" * 180 + "\nY市文明办\n×年×月×日"
    response = await post_json(http_server_client, "/api/chat", {
        "message": "请作答", "mode": "应用文", "material": "餐桌浪费不少见。", "question": PROPOSAL_TASK,
        "use_knowledge": False, "cache": False})
    assert response.code == 200
    system = system_prompt(fake_llm)
    assert "不用 Markdown" in system and "不写 [1]" in system
    assert "340～400字" in system                       # the band read from the 题目: 85–100 %
    for genre in ("倡议书", "公开信", "讲话稿", "简报", "调研报告", "新闻稿", "情况说明", "工作方案"):
        assert f"| {genre} |" in system                 # the 文种 table
    assert "本题文种是倡议书，必备部分：标题、称谓、正文、号召、落款" in system
    assert "Y市文明办的工作人员" in system               # the role the 题目 names
    body = json.loads(response.body)
    assert body["mode"] == "document" and body["word_limit"] == 400
    assert body["checks"]["genre"] == "倡议书" and body["checks"]["format_parts"]["落款"] is True


async def test_an_about_n_characters_task_gets_the_band_the_grader_holds_it_to(http_server_client, fake_llm):
    fake_llm.reply = lambda body: "网络暴力伤人于无形。" * 50              # 500 characters
    body = json.loads((await post_json(http_server_client, "/api/chat", {
        "message": "请作答", "mode": "analyze", "material": "网络暴力事件频发。",
        "question": "谈谈你对“网络暴力”的理解。（20分）要求：500字左右。", "use_knowledge": False,
        "cache": False})).body)
    assert "450～550字" in system_prompt(fake_llm)       # 500 ± 10 %, as the grader reads it
    assert (body["word_limit"], body["checks"]["band"], body["checks"]["within_band"]) == (550, [450, 550], True)
    assert fake_llm.calls == 1


async def test_chat_mode_keeps_citation_markers_exam_modes_do_not(http_server_client, fake_llm):
    await post_json(http_server_client, "/api/knowledge/add", {
        "id": "merge", "title": "要点合并", "category": "方法",
        "content": "归纳概括题的要点要同类合并，关键词前置。"})
    fake_llm.reply = lambda body: "**要点**：同类合并[1]。"
    chat = json.loads((await post_json(http_server_client, "/api/chat",
                                       {"message": "归纳概括题的要点怎么合并？", "cache": False})).body)
    assert chat["answer"] == "**要点**：同类合并[1]。" and "用 [编号] 标注出处" in system_prompt(fake_llm, 0)
    fake_llm.reply = lambda body: '**要点**：同类合并[1]。\n依据：[{"sentence": 1, "sources": [1, 7]}]'
    exam = json.loads((await post_json(http_server_client, "/api/chat",
                                       {"message": "归纳概括题的要点怎么合并？", "mode": "概括",
                                        "material": "归纳概括题的要点要同类合并。", "cache": False})).body)
    assert [s["id"] for s in exam["sources"]] == ["merge"]
    assert exam["answer"] == "要点：同类合并。"        # plain text for the sheet
    assert exam["citations"] == [{"sentence": 1, "sources": [1]}] and exam["unknown_citations"] == [7]
    assert "答案里不要出现 [编号]" in system_prompt(fake_llm, 1)


async def test_a_too_long_exam_answer_gets_exactly_one_condense_call(http_server_client, fake_llm):
    fake_llm.reply = lambda body: "1. 设施不足：桶少。" * 20        # always too long
    body = json.loads((await post_json(http_server_client, "/api/chat", EXAM)).body)
    assert fake_llm.calls == 2
    assert "超过了100字的限制" in fake_llm.requests[1]["messages"][-1]["content"]
    assert body["checks"]["revised"] == "condense" and body["checks"]["within_band"] is False
    assert body["over_limit"] is True                            # still too long: said, not hidden


async def test_a_too_short_exam_answer_gets_exactly_one_expand_call(http_server_client, fake_llm):
    longer = "\n".join(f"{n}. 设施不足：分类桶少，清运不及时。" for n in range(1, 6))
    fake_llm.reply = lambda body: longer if "不足本题要求" in body["messages"][-1]["content"] else "1. 设施不足。"
    body = json.loads((await post_json(http_server_client, "/api/chat", EXAM)).body)
    assert fake_llm.calls == 2
    expand = fake_llm.requests[1]["messages"]
    assert expand[-2] == {"role": "assistant", "content": "1. 设施不足。"}
    assert "85～100字" in expand[-1]["content"]
    assert body["checks"]["revised"] == "expand" and body["checks"]["revision_kept"] is True
    assert body["checks"]["within_band"] is True
    assert body["checks"]["points"] == 5 and body["answer"] == longer


async def test_an_answer_within_the_band_gets_no_second_call(http_server_client, fake_llm):
    fake_llm.reply = lambda body: "\n".join(f"{n}. 设施不足：分类桶少，清运不及时。" for n in range(1, 6))
    body = json.loads((await post_json(http_server_client, "/api/chat", EXAM)).body)
    assert fake_llm.calls == 1
    assert body["checks"]["passed"] is True and body["checks"]["band"] == [85, 100]
    assert body["checks"]["points_expected"] == [5, 7]


async def test_a_streamed_exam_answer_is_plain_and_reports_checks_in_done(http_server_client, fake_llm):
    fake_llm.reply = lambda body: '1. 设施不足[1]：桶少。\n依据：[{"sentence": 1, "sources": [1]}]'
    response, chunks = await stream_chat(http_server_client, EXAM)
    events = parse_sse(b"".join(c for _, c in chunks).decode())
    shown = "".join(d["delta"] for n, d in events if n == "message")
    assert shown == "1. 设施不足：桶少。\n"
    name, done = events[-1]
    assert name == "done" and done["checks"]["within_band"] is False and done["checks"]["revised"] is None
    assert fake_llm.calls == 1                                   # no second call after streaming


@pytest.mark.parametrize("alias, mode", [("概括", "summarize"), ("归纳概括", "summarize"), ("分析", "analyze"),
                                         ("对策", "countermeasure"), ("贯彻执行", "document"),
                                         ("大作文", "essay"), ("批改", "grade")])
async def test_chinese_mode_names_are_accepted(http_server_client, fake_llm, alias, mode):
    body = json.loads((await post_json(http_server_client, "/api/chat",
                                       {"message": "怎么答？", "mode": alias, "use_knowledge": False})).body)
    assert body["mode"] == mode


async def test_an_unknown_mode_is_400_naming_the_chinese_names(http_server_client):
    response = await post_json(http_server_client, "/api/chat", {"message": "怎么答？", "mode": "作文"})
    assert response.code == 400 and "概括" in error_of(response)["message"]


# --- offline answers from the candidate's material ---

README_EXAMPLE = {"message": "请按要求作答", "mode": "countermeasure",
                  "material": "某县农村垃圾分类推进缓慢，村民参与度不高……",
                  "question": "针对给定资料中的问题，提出解决对策。", "word_limit": 300}


async def add_bundled(client, *names: str) -> None:
    from core.config import PROJECT_ROOT
    from scripts.reindex import read_markdown
    root = PROJECT_ROOT / "data" / "knowledge"
    docs = [read_markdown(next(root.rglob(f"{name}.md")), root).as_dict() for name in names]
    for doc in docs:
        doc.pop("created_at"), doc.pop("updated_at")
    response = await post_json(client, "/api/knowledge/add", {"documents": docs})
    assert response.code == 201


@pytest.mark.settings(offline=True)
async def test_offline_readme_countermeasure_example_answers_about_waste_sorting(http_server_client):
    await add_bundled(http_server_client, "theme-waste-sorting-living-environment", "theme-rural-revitalization")
    body = json.loads((await post_json(http_server_client, "/api/chat", README_EXAMPLE)).body)
    assert body["model"] == "offline" and body["offline"] is True and "抽取式" in body["notice"]
    assert "垃圾分类" in body["answer"] and "村民参与度" in body["answer"]
    assert body["char_count"] <= 300 and body["over_limit"] is False
    assert "#" not in body["answer"] and "**" not in body["answer"]
    assert body["checks"]["points"] >= 2


@pytest.mark.settings(offline=True)
async def test_offline_long_task_retrieves_on_its_focus(http_server_client):
    await add_bundled(http_server_client, "method-doc-proposal", "method-doc-speech", "theme-rural-revitalization")
    body = json.loads((await post_json(http_server_client, "/api/chat", {
        "message": "请以街道办名义写一份垃圾分类倡议书", "mode": "document"})).body)
    assert "method-doc-proposal" in [s["id"] for s in body["sources"]]
    assert "没有找到" not in body["answer"]
    assert "##" not in body["answer"] and "**" not in body["answer"]
    skeleton = body["answer"].splitlines()[:4]       # the 文种's skeleton in the role the question names
    assert skeleton == ["【倡议书格式骨架】", "标题：垃圾分类倡议书", "称谓：各位居民朋友：", "落款：街道办　×年×月×日"]


@pytest.mark.settings(offline=True)
async def test_offline_greeting_and_general_question_get_different_answers(http_server_client):
    await add_bundled(http_server_client, "method-general-question-reading", "method-time-allocation")
    hello = json.loads((await post_json(http_server_client, "/api/chat", {"message": "你好"})).body)
    general = json.loads((await post_json(http_server_client, "/api/chat",
                                          {"message": "申论和行测有什么区别？"})).body)
    assert hello["answer"].startswith("你好！我是申论助手") and hello["sources"] == []
    assert general["answer"] != hello["answer"] and "你好！" not in general["answer"]


@pytest.mark.settings(offline=True)
async def test_offline_document_follows_the_genre_and_role(http_server_client):
    from core.grading import PracticeBank
    item = PracticeBank.load().get("doc-proposal-food-waste")
    body = json.loads((await post_json(http_server_client, "/api/chat", {
        "message": item.question, "mode": "应用文", "material": item.material, "question": item.question})).body)
    lines = body["answer"].splitlines()
    assert lines[0].endswith("倡议书") and lines[1].endswith("：")
    assert lines[-2:] == ["Y市文明办", "×年×月×日"] and "为此，我们倡议：" in body["answer"]
    assert body["checks"]["format_parts"] == {"标题": True, "称谓": True, "正文": True, "号召": True, "落款": True}
    assert 240 <= body["char_count"] <= 400


@pytest.mark.settings(offline=True)
async def test_chinese_type_names_work_in_grading_too(http_server_client):
    grade = {"answer": "1. 设施不足：桶少。\n2. 宣传单一。", "question": "概括Q市垃圾分类存在的问题。",
             "material": EXAM["material"]}
    graded = json.loads((await post_json(http_server_client, "/api/grade", {**grade, "question_type": "概括"})).body)
    assert graded["question_type"] == "summarize" and graded["question_type_source"] == "given"
    via_chat = json.loads((await post_json(http_server_client, "/api/chat", {**grade, "mode": "批改"})).body)
    assert via_chat["mode"] == "grade" and via_chat["score"] == graded["score"]


@pytest.mark.settings(offline=True)
async def test_offline_paper_question_answers_from_the_sections_it_names(http_server_client):
    # A whole paper's material with the 题目 of its first question (根据“给定资料1”):
    # the answer's points come from 资料1 only, in 概括 mode named in Chinese.
    from core.grading import PracticeBank
    item = PracticeBank.load().get("paper-county-green-plum-q1")
    body = json.loads((await post_json(http_server_client, "/api/chat", {
        "message": "请按要求作答", "mode": "概括", "material": item.material, "question": item.question,
        "use_knowledge": False})).body)
    parts = re.split(r"^资料(\d)$", item.material, flags=re.MULTILINE)[1:]
    sections = dict(zip(parts[::2], parts[1::2], strict=True))
    words = {n: {w for w in re.findall(r"[\u4e00-\u9fff]{4}", text)} for n, text in sections.items()}
    only_elsewhere = set().union(*(words[n] for n in words if n != "1")) - words["1"]
    assert body["mode"] == "summarize" and body["char_count"] <= item.word_limit
    assert not {w for w in only_elsewhere if w in body["answer"]}
    assert sum(1 for w in words["1"] if w in body["answer"]) >= 5
