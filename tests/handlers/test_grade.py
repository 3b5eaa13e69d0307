"""POST /api/grade, the chat alias, word-limit discipline and the practice API,
through real HTTP, the real openai client and the fake LLM."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from core.grading import GRADE_PROMPT_VERSION, RUBRIC_VERSION
from core.prompts import char_count
from tests.conftest import error_of, post_json
from tests.handlers.test_chat import parse_sse, stream_chat

ITEM = "sum-waste-sorting"
# Hits p1 (设施), p2 (宣传) and p4 (混装混运) by the rules; p3, p5, p6 are missed.
ANSWER = ("Q市垃圾分类存在以下问题：\n1.垃圾桶不够，离楼栋远，清运不及时，老人提着垃圾来回很不方便。\n"
          "2.宣传方式单一，只靠张贴海报、发放手册，居民分不清类别。\n3.分好的垃圾到了中转站又被混装混运，居民觉得分了也白分。")
IMPROVED = "1.投放设施不足。\n2.宣传效果不佳。\n3.居民参与度低。\n4.收运环节脱节。\n5.监管执法不力。\n6.末端处理能力不足。"


def llm_grade(**changes: Any) -> dict[str, Any]:
    """A well-formed model judgement of ANSWER on ITEM."""
    body: dict[str, Any] = {
        "dimensions": {"points": {"comment": "要点覆盖一半"},
                       "structure": {"score": 1.5, "comment": "分条清楚"},
                       "language": {"score": 1, "comment": "表述较简洁"}},
        "points": [{"id": "p1", "status": "hit", "quote": "垃圾桶不够，离楼栋远"},
                   {"id": "p2", "status": "hit", "quote": "宣传方式单一"},
                   {"id": "p3", "status": "missed", "quote": ""},
                   {"id": "p4", "status": "hit", "quote": "混装混运"},
                   {"id": "p5", "status": "missed", "quote": ""},
                   {"id": "p6", "status": "missed", "quote": ""}],
        "overall_comment": "遗漏了执法与末端处理等要点。",
        "suggestions": ["补充监管执法方面的问题", "补充末端处理能力不足"],
        "improved_answer": IMPROVED,
    }
    body.update(changes)
    return body


def is_grading_call(body: dict[str, Any]) -> bool:
    return "阅卷老师" in body["messages"][0]["content"]


def grade_body(**changes: Any) -> dict[str, Any]:
    return {"practice_id": ITEM, "answer": ANSWER, **changes}


async def grade(client, body: dict[str, Any], path: str = "/api/grade"):
    response = await post_json(client, path, body)
    return response, (json.loads(response.body) if response.body else None)


# --- a valid judgement ---

async def test_a_valid_judgement_gives_a_complete_grade_scored_by_code(http_server_client, fake_llm):
    fake_llm.reply = lambda body: json.dumps(llm_grade(), ensure_ascii=False)
    response, g = await grade(http_server_client, grade_body())
    assert response.code == 200
    assert fake_llm.calls == 1
    sent = fake_llm.requests[0]
    assert sent["response_format"] == {"type": "json_object"}
    assert ANSWER in sent["messages"][-1]["content"] and "p6" in sent["messages"][-1]["content"]
    assert g["simulated"] is True and "模拟评分" in g["notice"]
    assert g["grader"] == "llm+rules" and g["model"] == "fake-model"
    assert g["rubric"] == {"id": "practice:sum-waste-sorting", "source": "practice",
                           "version": RUBRIC_VERSION, "point_count": 6}
    assert g["prompt_version"] == GRADE_PROMPT_VERSION
    assert g["question_type"] == "summarize" and g["question_type_source"] == "practice"
    assert g["full_score"] == 15 and g["word_limit"] == 200
    dims = {d["key"]: d for d in g["dimensions"]}
    assert [d["name"] for d in g["dimensions"]] == ["要点", "逻辑结构", "语言表达"]
    # 3 of 6 equal points hit → half of the 12 points marks, whatever the model thinks.
    assert dims["points"]["score"] == 6 and dims["points"]["max"] == 12
    assert dims["points"]["source"] == "rules"
    assert dims["structure"]["score"] == 1.5 and dims["language"]["score"] == 1
    assert dims["structure"]["comment"] == "分条清楚"
    assert g["score"] == 8.5 == sum(d["score"] for d in g["dimensions"])
    assert sorted(p["id"] for p in g["points_hit"]) == ["p1", "p2", "p4"]
    assert sorted(p["id"] for p in g["points_missed"]) == ["p3", "p5", "p6"]
    assert next(p for p in g["points_hit"] if p["id"] == "p1")["judged_by"] == "rules+llm"
    for point in g["points_hit"]:
        assert point["evidence"] and all(e in ANSWER for e in point["evidence"])
        assert point["score"] == 2 and point["max"] == 2
    assert g["char_count"] == char_count(ANSWER) and g["over_limit"] is False
    assert g["suggestions"] == ["补充监管执法方面的问题", "补充末端处理能力不足"]
    assert g["improved_answer"] == IMPROVED
    assert g["improved_answer_char_count"] <= 200
    assert g["deterministic"]["score"] > 0 and g["repairs"] == []
    assert g["usage"]["prompt_tokens"] == 11


async def test_model_quotes_not_in_the_answer_are_dropped_and_weak_ones_count_partial(
        http_server_client, fake_llm):
    points = [{"id": "p6", "status": "hit", "quote": "厨余垃圾处理厂还没建成"},   # not in the answer
              {"id": "p5", "status": "hit", "quote": "宣传方式单一"},              # in it, but unrelated
              {"id": "p3", "status": "partial", "quote": "居民分不清类别"}]         # a fair partial
    fake_llm.reply = lambda body: json.dumps(llm_grade(points=points), ensure_ascii=False)
    response, g = await grade(http_server_client, grade_body())
    assert response.code == 200
    by_id = {p["id"]: p for p in g["points_hit"] + g["points_missed"]}
    assert by_id["p6"]["status"] == "missed" and "舍弃" in by_id["p6"]["note"]
    assert "厨余垃圾处理厂还没建成" not in json.dumps(g["points_hit"], ensure_ascii=False)
    assert by_id["p5"]["status"] == "partial" and "关联弱" in by_id["p5"]["note"]
    assert by_id["p5"]["evidence"] == ["宣传方式单一"] and by_id["p5"]["judged_by"] == "llm"
    assert by_id["p3"]["status"] == "partial"
    # p1 p2 p4 hit, p3 p5 partial: (3 + 1) / 6 of 12 = 8.
    assert next(d for d in g["dimensions"] if d["key"] == "points")["score"] == 8


async def test_out_of_range_scores_are_clamped_not_refused(http_server_client, fake_llm):
    dims = {"structure": {"score": 40, "comment": "很好"}, "language": {"score": -3, "comment": "一般"}}
    fake_llm.reply = lambda body: json.dumps(llm_grade(dimensions=dims), ensure_ascii=False)
    response, g = await grade(http_server_client, grade_body())
    assert response.code == 200 and fake_llm.calls == 1
    scores = {d["key"]: d["score"] for d in g["dimensions"]}
    assert scores["structure"] == 1.5 and scores["language"] == 0
    assert 0 <= g["score"] <= g["full_score"]
    assert any("截断" in r for r in g["repairs"])


async def test_missing_scores_and_suggestions_are_repaired_from_the_rules(http_server_client, fake_llm):
    judgement = llm_grade(dimensions={"structure": {"comment": "分条清楚"}})
    del judgement["suggestions"], judgement["points"]
    fake_llm.reply = lambda body: json.dumps(judgement, ensure_ascii=False)
    response, g = await grade(http_server_client, grade_body())
    assert response.code == 200 and fake_llm.calls == 1
    rules = {d["key"]: d["score"] for d in g["deterministic"]["dimensions"]}
    scores = {d["key"]: d["score"] for d in g["dimensions"]}
    assert scores["structure"] == rules["structure"] and scores["language"] == rules["language"]
    assert g["suggestions"] and all(isinstance(s, str) for s in g["suggestions"])
    assert any("补充要点" in s for s in g["suggestions"])
    assert len(g["repairs"]) >= 3


async def test_a_missing_improved_answer_is_retried_once(http_server_client, fake_llm):
    replies = [llm_grade(improved_answer=None), llm_grade()]
    fake_llm.reply = lambda body: json.dumps(replies[fake_llm.calls - 1], ensure_ascii=False)
    response, g = await grade(http_server_client, grade_body())
    assert response.code == 200
    assert fake_llm.calls == 2
    retry = fake_llm.requests[1]["messages"]
    assert retry[-1]["role"] == "user" and "improved_answer" in retry[-1]["content"]
    assert g["improved_answer"] == IMPROVED
    assert "重试" in g["repairs"][0] and "improved_answer" in g["repairs"][0]


async def test_non_json_then_fenced_json_succeeds_on_the_retry(http_server_client, fake_llm):
    replies = ["好的，我来批改这份答案。总体不错。",
               "```json\n" + json.dumps(llm_grade(), ensure_ascii=False) + "\n```"]
    fake_llm.reply = lambda body: replies[fake_llm.calls - 1]
    response, g = await grade(http_server_client, grade_body())
    assert response.code == 200 and fake_llm.calls == 2
    assert g["score"] == 8.5


async def test_non_json_twice_is_502_after_exactly_two_calls(http_server_client, fake_llm):
    fake_llm.reply = lambda body: "抱歉，我无法按 JSON 格式输出。"
    response, _ = await grade(http_server_client, grade_body())
    assert response.code == 502
    error = error_of(response)
    assert error["code"] == "upstream_error" and "JSON" in error["message"]
    assert fake_llm.calls == 2


async def test_missing_fields_twice_is_502_never_a_half_filled_grade(http_server_client, fake_llm):
    fake_llm.reply = lambda body: json.dumps({"dimensions": {"structure": {"score": 1}}})
    response, _ = await grade(http_server_client, grade_body())
    assert response.code == 502 and error_of(response)["code"] == "upstream_error"
    assert fake_llm.calls == 2


async def test_an_upstream_error_is_502_without_a_retry(http_server_client, fake_llm):
    fake_llm.status = 500
    response, _ = await grade(http_server_client, grade_body())
    assert response.code == 502 and error_of(response)["code"] == "upstream_error"
    assert fake_llm.calls == 1


# --- the improved answer within the limit ---

async def test_an_over_long_improved_answer_is_condensed_once(http_server_client, fake_llm):
    def reply(body):
        if is_grading_call(body):
            return json.dumps(llm_grade(improved_answer="要" * 260), ensure_ascii=False)
        return "压缩后的示范答案。"

    fake_llm.reply = reply
    response, g = await grade(http_server_client, grade_body())
    assert response.code == 200
    assert fake_llm.calls == 2
    condense = fake_llm.requests[1]
    assert "response_format" not in condense
    assert "超过了200字" in condense["messages"][-1]["content"]
    assert g["improved_answer"] == "压缩后的示范答案。"
    assert "压缩一次" in g["improved_answer_note"]


async def test_an_improved_answer_still_too_long_is_trimmed_after_one_condense(http_server_client, fake_llm):
    long_text = "这是一句示范答案的内容。" * 30   # 360 characters
    fake_llm.reply = lambda body: (json.dumps(llm_grade(improved_answer=long_text), ensure_ascii=False)
                                   if is_grading_call(body) else long_text[:-12])
    response, g = await grade(http_server_client, grade_body())
    assert response.code == 200 and fake_llm.calls == 2
    assert g["improved_answer_char_count"] <= 200
    assert g["improved_answer"].endswith("。")
    assert "截断" in g["improved_answer_note"]


# --- offline ---

@pytest.mark.settings(offline=True)
async def test_offline_the_rules_alone_grade_and_say_so(http_server_client, fake_llm):
    response, g = await grade(http_server_client, grade_body())
    assert response.code == 200 and fake_llm.calls == 0
    assert g["grader"] == "rules" and g["model"] == "offline" and g["prompt_version"] is None
    assert "离线模式" in g["notice"] and "模拟评分" in g["notice"]
    assert g["score"] == g["deterministic"]["score"]
    assert sorted(p["id"] for p in g["points_hit"]) == ["p1", "p2", "p4"]
    assert g["improved_answer_source"] == "reference"
    assert char_count(g["improved_answer"]) <= 200
    assert any("补充要点" in s for s in g["suggestions"])


@pytest.mark.settings(offline=True)
async def test_offline_without_a_rubric_points_come_from_the_material(http_server_client):
    body = {"material": "某县推行河长制后，部分河段仍有垃圾堆积，巡河记录流于形式，"
                        "村民参与护河的积极性不高。县里建立了民间河长队伍，定期开展巡河。",
            "question": "概括某县河道治理中存在的问题。", "answer": "1.垃圾堆积。\n2.巡河流于形式。",
            "word_limit": 150}
    response, g = await grade(http_server_client, body)
    assert response.code == 200
    assert g["question_type"] == "summarize" and g["question_type_source"] == "question"
    assert g["full_score"] == 15
    assert g["rubric"]["source"] == "material" and "自动提取" in g["notice"]
    assert g["improved_answer_source"] == "outline"
    assert char_count(g["improved_answer"]) <= 150


# --- request validation ---

@pytest.mark.parametrize("body, field", [
    ({"question": "概括问题", "material": "资料"}, "answer"),
    ({"answer": "", "question": "概括问题", "material": "资料"}, "answer"),
    ({"answer": ["a"], "question": "概括问题", "material": "资料"}, "answer"),
    ({"answer": "答案", "material": "资料"}, "question"),
    ({"answer": "答案", "question": "概括问题"}, "material"),
    ({"answer": "答案", "practice_id": "no-such-item"}, "practice_id"),
    ({"answer": "答案", "practice_id": 7}, "practice_id"),
    ({"answer": "答案", "question": "概括", "material": "资料", "full_score": 0}, "full_score"),
    ({"answer": "答案", "question": "概括", "material": "资料", "full_score": "15"}, "full_score"),
    ({"answer": "答案", "question": "概括", "material": "资料", "word_limit": 5}, "word_limit"),
    ({"answer": "答案", "question": "概括", "material": "资料", "question_type": "诗歌"}, "question_type"),
    ({"answer": "答案", "question": "概括", "material": "资料", "genre": "小说"}, "genre"),
    ({"answer": "字" * 10_001, "question": "概括", "material": "资料"}, "answer"),
    ({"answer": "答案", "question": "问" * 2001, "material": "资料"}, "question"),
    ({"answer": "答案", "question": "概括", "scoring_points": {"label": "a"}}, "scoring_points"),
    ({"answer": "答案", "question": "概括", "scoring_points": [{"label": "设施不足"}]}, "scoring_points[0].score"),
    ({"answer": "答案", "question": "概括", "scoring_points": [{"label": "", "score": 2}]}, "scoring_points[0].label"),
    ({"answer": "答案", "question": "概括",
      "scoring_points": [{"label": "设施不足", "score": 2, "keywords": [1]}]}, "scoring_points[0].keywords"),
    ([1, 2], "请求体"),
])
async def test_bad_grade_requests_are_400_naming_the_field(http_server_client, fake_llm, body, field):
    response = await post_json(http_server_client, "/api/grade", body)
    assert response.code == 400
    error = error_of(response)
    assert error["code"] == "invalid_request" and field in error["message"]
    assert fake_llm.calls == 0


async def test_a_non_json_grade_body_is_invalid_json(http_server_client):
    response = await post_json(http_server_client, "/api/grade", b"answer=1")
    assert response.code == 400 and error_of(response)["code"] == "invalid_json"


async def test_explicit_type_and_full_score_are_honoured(http_server_client, fake_llm):
    fake_llm.reply = lambda body: json.dumps(llm_grade(dimensions={
        "format": {"score": 3, "comment": "格式基本完整"}, "structure": {"score": 2, "comment": "层次清楚"},
        "language": {"score": 2, "comment": "语言得体"}}), ensure_ascii=False)
    body = {"material": "某市餐饮浪费现象突出。", "question": "请拟写一份材料。", "answer": "倡议书\n各位市民：\n请节约。",
            "question_type": "应用文", "genre": "倡议书", "full_score": 30}
    response, g = await grade(http_server_client, body)
    assert response.code == 200
    assert g["question_type"] == "document" and g["question_type_source"] == "given"
    assert g["genre"] == "倡议书" and g["full_score"] == 30
    assert [d["key"] for d in g["dimensions"]] == ["points", "format", "structure", "language"]
    assert sum(d["max"] for d in g["dimensions"]) == 30
    failed = {c["key"] for c in g["structure_checks"] if not c["passed"]}
    assert "signature" in failed  # no 落款


@pytest.mark.settings(max_concurrent_requests=1)
async def test_grading_holds_a_concurrency_slot(http_server_client, fake_llm, ctx):
    fake_llm.latency = 0.6
    fake_llm.reply = lambda body: json.dumps(llm_grade(), ensure_ascii=False)
    grading = asyncio.ensure_future(grade(http_server_client, grade_body()))
    for _ in range(100):
        if ctx.slots.in_use:
            break
        await asyncio.sleep(0.02)
    busy = await post_json(http_server_client, "/api/chat", {"message": "hi", "use_knowledge": False})
    assert busy.code == 503 and error_of(busy)["code"] == "server_busy"
    response, _ = await grading
    assert response.code == 200 and ctx.slots.in_use == 0


# --- JSON mode fallback ---

class _NoJsonMode(tornado.web.RequestHandler):
    """An OpenAI-compatible endpoint that refuses `response_format`."""

    def initialize(self, seen: list[dict[str, Any]]) -> None:
        self.seen = seen

    def post(self) -> None:
        body = json.loads(self.request.body)
        self.seen.append(body)
        if "response_format" in body:
            self.set_status(400)
            self.finish({"error": {"message": "Unsupported parameter: response_format",
                                   "type": "invalid_request_error"}})
            return
        self.finish({"id": "x", "object": "chat.completion", "created": 0, "model": "plain",
                     "choices": [{"index": 0, "finish_reason": "stop", "message": {
                         "role": "assistant", "content": json.dumps(llm_grade(), ensure_ascii=False)}}]})


async def test_an_endpoint_without_json_mode_is_asked_prompt_only(http_server_client, ctx):
    seen: list[dict[str, Any]] = []
    sock, port = bind_unused_port()
    server = HTTPServer(tornado.web.Application([(r"/v1/chat/completions", _NoJsonMode, {"seen": seen})]))
    server.add_sockets([sock])
    try:
        ctx.llm.base_url = f"http://127.0.0.1:{port}/v1"
        first, g = await grade(http_server_client, grade_body())
        assert first.code == 200 and g["model"] == "plain"
        assert len(seen) == 2 and "response_format" not in seen[1]
        second, _ = await grade(http_server_client, grade_body())
        assert second.code == 200
        assert len(seen) == 3 and "response_format" not in seen[2]  # remembered
    finally:
        server.stop()


# --- the chat alias ---

async def test_chat_grade_mode_with_an_answer_is_the_grader(http_server_client, fake_llm):
    fake_llm.reply = lambda body: json.dumps(llm_grade(), ensure_ascii=False)
    response, g = await grade(http_server_client, {"mode": "grade", **grade_body()}, path="/api/chat")
    assert response.code == 200 and fake_llm.calls == 1
    assert response.headers["X-Cache"] == "BYPASS"
    assert g["mode"] == "grade" and g["score"] == 8.5 and g["simulated"] is True
    assert g["answer"].startswith("【归纳概括·模拟评分】8.5 / 15 分")
    assert "遗漏要点" in g["answer"] and IMPROVED in g["answer"]
    for key in ("id", "model", "sources", "cached", "char_count", "usage", "server_id", "elapsed_ms"):
        assert key in g


async def test_chat_grade_mode_without_an_answer_stays_a_chat(http_server_client, fake_llm):
    response = await post_json(http_server_client, "/api/chat",
                               {"mode": "grade", "message": "请帮我看看怎么提分", "use_knowledge": False})
    assert response.code == 200
    body = json.loads(response.body)
    assert body["mode"] == "grade" and "score" not in body
    assert "批改" in fake_llm.requests[0]["messages"][0]["content"]


async def test_chat_grade_alias_refuses_streaming_and_validates_like_grade(http_server_client, fake_llm):
    streamed = await post_json(http_server_client, "/api/chat", {"mode": "grade", "stream": True, **grade_body()})
    assert streamed.code == 400 and "stream" in error_of(streamed)["message"]
    bad = await post_json(http_server_client, "/api/chat", {"mode": "grade", "answer": 3, "question": "q"})
    assert bad.code == 400 and "answer" in error_of(bad)["message"]
    assert fake_llm.calls == 0


# --- word-limit discipline in /api/chat ---

CHAT = {"message": "请作答", "mode": "summarize", "material": "资料", "question": "概括问题",
        "word_limit": 20, "use_knowledge": False, "cache": False}


async def test_an_over_limit_answer_is_condensed_exactly_once(http_server_client, fake_llm):
    fake_llm.reply = lambda body: "短答案：要点一、要点二。" if "超过了20字" in body["messages"][-1]["content"] \
        else "字" * 30
    response = await post_json(http_server_client, "/api/chat", CHAT)
    body = json.loads(response.body)
    assert response.code == 200 and fake_llm.calls == 2
    assert body["answer"] == "短答案：要点一、要点二。"
    assert body["over_limit"] is False and body["char_count"] == 12
    assert body["usage"]["prompt_tokens"] == 22  # both calls
    condense = fake_llm.requests[1]["messages"]
    assert condense[-2] == {"role": "assistant", "content": "字" * 30}


async def test_an_answer_still_over_the_limit_is_reported_truthfully(http_server_client, fake_llm):
    fake_llm.reply = lambda body: "字" * 30 if fake_llm.calls == 1 else "字" * 25
    response = await post_json(http_server_client, "/api/chat", CHAT)
    body = json.loads(response.body)
    assert fake_llm.calls == 2
    assert body["over_limit"] is True and body["char_count"] == 25


@pytest.mark.parametrize("changes", [{"mode": "chat"}, {"word_limit": None}, {"word_limit": 32}])  # 30 of 32: in the band
async def test_no_condensing_outside_answer_modes_limits_or_overruns(http_server_client, fake_llm, changes):
    fake_llm.reply = lambda body: "字" * 30
    response = await post_json(http_server_client, "/api/chat", {**CHAT, **changes})
    assert response.code == 200 and fake_llm.calls == 1


async def test_a_cached_condensed_answer_is_served_without_condensing_again(http_server_client, fake_llm):
    fake_llm.reply = lambda body: "短答案。" if "超过了" in body["messages"][-1]["content"] else "字" * 30
    first = await post_json(http_server_client, "/api/chat", {**CHAT, "cache": True})
    again = await post_json(http_server_client, "/api/chat", {**CHAT, "cache": True})
    assert json.loads(first.body)["answer"] == json.loads(again.body)["answer"] == "短答案。"
    assert again.headers["X-Cache"] == "HIT" and fake_llm.calls == 2


async def test_a_streamed_answer_is_not_condensed_but_reports_over_limit(http_server_client, fake_llm):
    fake_llm.reply = lambda body: "字" * 30
    response, chunks = await stream_chat(http_server_client, CHAT)
    events = parse_sse(b"".join(c for _, c in chunks).decode())
    name, done = events[-1]
    assert name == "done" and done["over_limit"] is True and done["char_count"] == 30
    assert fake_llm.calls == 1


# --- the practice API ---

async def test_practice_list_and_filter(http_server_client):
    response = await http_server_client.fetch("/api/practice")
    body = json.loads(response.body)
    assert response.code == 200 and body["total"] == len(body["items"]) >= 8
    first = body["items"][0]
    assert {"id", "title", "question_type", "question", "word_limit", "full_score"} <= set(first)
    assert "material" not in first and "reference_answer" not in first
    for name, key in (("概括", "summarize"), ("countermeasure", "countermeasure"), ("应用文", "document")):
        filtered = json.loads((await http_server_client.fetch(
            "/api/practice?type=" + tornado.escape.url_escape(name))).body)
        assert filtered["total"] >= 2
        assert {i["question_type"] for i in filtered["items"]} == {key}
    bad = await http_server_client.fetch("/api/practice?type=poem", raise_error=False)
    assert bad.code == 400 and "type" in error_of(bad)["message"]


async def test_practice_item_and_unknown_id(http_server_client):
    response = await http_server_client.fetch(f"/api/practice/{ITEM}")
    item = json.loads(response.body)
    assert response.code == 200
    assert item["id"] == ITEM and len(item["material"]) >= 600
    assert item["reference_answer"] and len(item["scoring_points"]) == 6
    assert all(p["phrasings"] for p in item["scoring_points"])
    missing = await http_server_client.fetch("/api/practice/no-such-item", raise_error=False)
    assert missing.code == 404 and error_of(missing)["code"] == "not_found"


@pytest.mark.settings(offline=True)
async def test_fetch_answer_and_grade_a_practice_item_offline(http_server_client):
    listing = json.loads((await http_server_client.fetch("/api/practice?type=文章")).body)
    item = json.loads((await http_server_client.fetch(f"/api/practice/{listing['items'][0]['id']}")).body)
    response, g = await grade(http_server_client, {"practice_id": item["id"], "answer": item["reference_answer"]})
    assert response.code == 200
    assert g["question_type"] == "essay" and g["full_score"] == 40
    # Marked by 四类卷: the reference essay is 一类卷 (33–40), and the dimensions add up to it.
    assert g["essay_class"] == "一类卷" and 33 <= g["score"] <= 40
    assert g["score"] == sum(d["score"] for d in g["dimensions"])
    assert [d["key"] for d in g["dimensions"]] == ["theme", "points", "structure", "language"]
    assert [d["name"] for d in g["dimensions"]] == ["立意", "内容", "逻辑结构", "语言表达"]


async def test_without_any_scoring_point_the_model_scores_content(http_server_client, fake_llm):
    fake_llm.reply = lambda body: json.dumps(llm_grade(dimensions={
        "points": {"score": 9, "comment": "内容基本完整"}, "structure": {"score": 1, "comment": "尚可"},
        "language": {"score": 1, "comment": "尚可"}}), ensure_ascii=False)
    body = {"material": "资料很短。", "question": "概括问题。", "answer": "1.问题一。\n2.问题二。"}
    response, g = await grade(http_server_client, body)
    assert response.code == 200 and g["rubric"]["point_count"] == 0
    assert '"points": {"score"' in fake_llm.requests[0]["messages"][0]["content"]
    points = next(d for d in g["dimensions"] if d["key"] == "points")
    assert points["score"] == 9 and points["source"] == "llm"
    assert g["score"] == 11


@pytest.mark.settings(offline=True, rate_limit_per_minute=2)
async def test_grading_shares_the_rate_limit(http_server_client):
    codes = [(await post_json(http_server_client, "/api/grade", grade_body())).code for _ in range(3)]
    assert codes == [200, 200, 429]
    refused = await post_json(http_server_client, "/api/grade", grade_body())
    assert error_of(refused)["code"] == "rate_limited" and "Retry-After" in refused.headers


# --- a teacher's own rubric, and the rules' caps over the model ---

TEACHER_POINTS = [{"label": "投放设施不足", "score": 3, "phrasings": ["垃圾桶不够", "投放点远"]},
                  {"label": "宣传效果不佳", "score": 3, "phrasings": ["宣传方式单一"]},
                  {"label": "末端处理能力不足", "score": 2, "keywords": ["厨余", "处理厂"]}]


@pytest.mark.settings(offline=True)
async def test_scoring_points_from_the_request_grade_end_to_end(http_server_client):
    question = "根据给定资料，概括Q市垃圾分类存在的问题。（15分）要求：不超过200字。"
    response, g = await grade(http_server_client, {"question": question, "answer": ANSWER,
                                                   "scoring_points": TEACHER_POINTS})
    assert response.code == 200
    assert g["points_source"] == "request" == g["rubric"]["source"] and g["rubric"]["point_count"] == 3
    assert "请求给出的评分细则" in g["notice"]
    by_label = {p["label"]: p for p in g["points_hit"] + g["points_missed"]}
    assert by_label["投放设施不足"]["status"] == "hit" and by_label["宣传效果不佳"]["status"] == "hit"
    assert by_label["末端处理能力不足"]["status"] == "missed"
    assert all(e in ANSWER for p in g["points_hit"] for e in p["evidence"])
    points = next(d for d in g["dimensions"] if d["key"] == "points")
    assert points["score"] == 9  # 6 of 8 weighted marks of a 12-point dimension
    assert (g["full_score"], g["word_limit"], g["word_limit_source"]) == (15, 200, "question")


@pytest.mark.settings(offline=True)
async def test_a_practice_item_graded_by_the_teachers_points_says_so(http_server_client):
    response, g = await grade(http_server_client, grade_body(scoring_points=TEACHER_POINTS))
    assert response.code == 200 and g["points_source"] == "request" and g["practice_id"] == ITEM
    assert g["rubric"]["point_count"] == 3


@pytest.mark.settings(offline=True)
async def test_material_points_carry_their_source_sentence(http_server_client, ctx):
    item = ctx.grading.practice.get("sum-old-community-renewal")
    response, g = await grade(http_server_client, {"question": item.question, "material": item.material,
                                                   "answer": item.reference_answer})
    assert response.code == 200 and g["points_source"] == "material"
    for p in g["points_hit"] + g["points_missed"]:
        assert p["material_quote"] in item.material and len(p["label"]) <= 12


WRONG_TASK = ("M区老旧小区存在以下问题：\n1.管网老化，没有电梯，停车困难。\n2.过去改造居民没有发言权。\n"
              "3.路面刚铺好又被挖开，反复开挖。\n4.加装电梯难以协调低层住户，矛盾难以化解。\n5.改造资金来源单一。\n"
              "6.改造后无人管理，居民担心。")


async def test_the_model_cannot_lift_a_grade_over_the_rules_caps(http_server_client, fake_llm):
    """A model that finds every point and gives full marks: the 审题 cap still holds."""
    judgement = {"dimensions": {"points": {"comment": "很好"}, "structure": {"score": 1.5, "comment": "清楚"},
                                "language": {"score": 9, "comment": "流畅"}},
                 "points": [{"id": f"p{n}", "status": "hit", "quote": "居民没有发言权"} for n in range(1, 7)],
                 "overall_comment": "答得很全面。", "suggestions": ["继续保持"], "improved_answer": "1.问需于民。"}
    fake_llm.reply = lambda body: json.dumps(judgement, ensure_ascii=False)
    response, g = await grade(http_server_client, {"practice_id": "sum-old-community-renewal", "answer": WRONG_TASK})
    assert response.code == 200 and g["grader"] == "llm+rules"
    assert "审题错误" in fake_llm.requests[0]["messages"][-1]["content"]  # the model is told the cap
    assert g["caps"][0]["rule"] == "审题" and g["score"] <= 0.3 * g["full_score"]
    assert g["score"] == sum(d["score"] for d in g["dimensions"])
    assert g["overall_comment"].startswith("审题错误") and g["suggestions"][0].startswith("审题错误")
    assert any("截断" in r for r in g["repairs"])  # language 9 > its maximum


async def test_a_model_quoting_a_bare_heading_earns_at_most_a_partial(http_server_client, fake_llm):
    answer = "1.挖掘特色。2.规范服务管理。3.加强人才培训。"
    judgement = {"dimensions": {"points": {"comment": "-"}, "structure": {"score": 1, "comment": "-"},
                                "language": {"score": 1, "comment": "-"}},
                 "points": [{"id": "p2", "status": "hit", "quote": "2.规范服务管理。"},
                            {"id": "p6", "status": "hit", "quote": "一次办好所有证照"}],
                 "overall_comment": "-", "suggestions": ["写清怎么做"], "improved_answer": "1.挖掘特色。"}
    fake_llm.reply = lambda body: json.dumps(judgement, ensure_ascii=False)
    response, g = await grade(http_server_client, {"practice_id": "cm-rural-homestay", "answer": answer})
    assert response.code == 200
    by_id = {p["id"]: p for p in g["points_hit"] + g["points_missed"]}
    assert by_id["p2"]["status"] == "partial" and "只是标题" in by_id["p2"]["note"]
    assert by_id["p2"]["evidence"] == []
    assert by_id["p6"]["status"] == "missed" and "舍弃" in by_id["p6"]["note"]  # invented evidence
    assert g["score"] <= g["full_score"] / 2


async def test_a_model_cannot_lift_a_thirty_six_character_essay_out_of_the_fourth_class(http_server_client, fake_llm):
    essay = "办好民生小事\n民生小事很重要。\n要倾听民意。\n要健全机制。\n干部要有为民情怀。"
    judgement = {"dimensions": {"theme": {"score": 12, "comment": "-"}, "points": {"comment": "-"},
                                "structure": {"score": 8, "comment": "-"}, "language": {"score": 8, "comment": "-"}},
                 "points": [{"id": "t1", "status": "hit", "quote": "办好民生小事"},
                            {"id": "p1", "status": "hit", "quote": "要倾听民意。"},
                            {"id": "p3", "status": "hit", "quote": "要健全机制。"},
                            {"id": "p4", "status": "hit", "quote": "干部要有为民情怀。"}],
                 "overall_comment": "-", "suggestions": ["-"], "improved_answer": "办好民生小事……"}
    fake_llm.reply = lambda body: json.dumps(judgement, ensure_ascii=False)
    response, g = await grade(http_server_client, {"practice_id": "essay-small-livelihood-matters", "answer": essay})
    assert response.code == 200 and g["grader"] == "llm+rules"
    assert "四类卷" in fake_llm.requests[0]["messages"][0]["content"]  # the prompt states the real scale
    assert g["essay_class"] == "四类卷" and g["score"] <= 10
    assert g["overall_comment"].startswith("四类卷")
