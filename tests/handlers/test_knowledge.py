"""The knowledge endpoints and grounded chat through real HTTP."""
from __future__ import annotations

import json
import os
import threading
import urllib.parse

import pytest

from core.knowledge.service import SEARCH_NICE
from tests.conftest import error_of, post_json
from tests.handlers.test_chat import parse_sse, stream_chat

FENGQIAO = {"id": "fengqiao", "title": "新时代枫桥经验", "category": "主题", "tags": ["基层治理", "枫桥经验"],
            "source": "测试", "content": "枫桥经验的核心是依靠群众就地化解矛盾纠纷，做到小事不出村、大事不出镇、矛盾不上交。"}
SUMMARIZE = {"id": "summarize", "title": "归纳概括题的四步法", "category": "方法", "tags": ["归纳概括"],
             "content": "归纳概括题分四步：审题、找点、加工、成文。要点分条，关键词前置，不照抄资料长句。"}


async def add(client, body, **kwargs):
    response = await post_json(client, "/api/knowledge/add", body, **kwargs)
    return response, json.loads(response.body)


async def search(client, q, **params):
    query = urllib.parse.urlencode({"q": q, **params}, doseq=True)
    response = await client.fetch(f"/api/knowledge/search?{query}", raise_error=False)
    return response, json.loads(response.body)


async def test_add_then_get_and_find(http_server_client):
    response, body = await add(http_server_client, FENGQIAO)
    assert response.code == 201
    assert body == {"added": 1, "ids": ["fengqiao"]}

    got = await http_server_client.fetch("/api/knowledge/fengqiao")
    doc = json.loads(got.body)
    assert {k: doc[k] for k in FENGQIAO} == FENGQIAO
    assert doc["created_at"].endswith("+00:00") and doc["updated_at"] >= doc["created_at"]

    response, found = await search(http_server_client, "枫桥经验 化解矛盾")
    assert response.code == 200
    assert set(found) == {"query", "total", "took_ms", "results"}
    assert found["query"] == "枫桥经验 化解矛盾" and found["total"] == 1
    assert isinstance(found["took_ms"], float)
    (result,) = found["results"]
    assert result["id"] == "fengqiao" and result["title"] == "新时代枫桥经验"
    assert result["category"] == "主题" and result["tags"] == ["基层治理", "枫桥经验"]
    assert result["score"] > 0 and "<em>枫桥经验</em>" in result["snippet"]


async def test_batch_add_without_ids_and_upsert_by_id(http_server_client, ctx):
    response, body = await add(http_server_client, {"documents": [
        {"title": "甲", "content": "网格员走访独居老人。"},
        {"title": "乙", "content": "社区食堂解决老年人吃饭难。"}]})
    assert response.code == 201 and body["added"] == 2
    assert len(set(body["ids"])) == 2
    # The same id again replaces the document: new words found, old ones gone.
    first = body["ids"][0]
    response, _ = await add(http_server_client, {"id": first, "title": "甲", "content": "加装电梯议事会。"})
    assert response.code == 201
    assert (await search(http_server_client, "网格员"))[1]["total"] == 0
    assert [r["id"] for r in (await search(http_server_client, "加装电梯"))[1]["results"]] == [first]
    assert ctx.knowledge.store.count() == 2


async def test_delete(http_server_client):
    await add(http_server_client, FENGQIAO)
    response = await http_server_client.fetch("/api/knowledge/fengqiao", method="DELETE")
    assert response.code == 200 and json.loads(response.body) == {"deleted": "fengqiao"}
    missing = await http_server_client.fetch("/api/knowledge/fengqiao", raise_error=False)
    assert missing.code == 404 and error_of(missing)["code"] == "not_found"
    assert (await search(http_server_client, "枫桥经验"))[1]["total"] == 0
    again = await http_server_client.fetch("/api/knowledge/fengqiao", method="DELETE", raise_error=False)
    assert again.code == 404 and "fengqiao" in error_of(again)["message"]


async def test_search_pagination_filters_and_modes(http_server_client):
    docs = [{"id": f"doc-{n:02d}", "title": f"第{n}篇", "category": "单数" if n % 2 else "双数",
             "tags": ["标签甲"] if n < 5 else [], "content": f"垃圾分类第{n}条做法。" + "垃圾分类。" * (n % 4)}
            for n in range(15)]
    assert (await add(http_server_client, {"documents": docs}))[0].code == 201
    first = (await search(http_server_client, "垃圾分类", limit=10))[1]
    second = (await search(http_server_client, "垃圾分类", limit=10, offset=10))[1]
    assert first["total"] == second["total"] == 15
    assert len(first["results"]) == 10 and len(second["results"]) == 5
    assert not {r["id"] for r in first["results"]} & {r["id"] for r in second["results"]}
    assert (await search(http_server_client, "垃圾分类", category="单数"))[1]["total"] == 7
    assert (await search(http_server_client, "垃圾分类", tag="标签甲"))[1]["total"] == 5
    assert (await search(http_server_client, "垃圾分类 不存在的词", mode="and"))[1]["total"] == 0
    assert (await search(http_server_client, "垃圾分类 不存在的词"))[1]["total"] == 15


@pytest.mark.parametrize("params, field", [
    ({}, "q"),
    ({"q": ""}, "q"),
    ({"q": "   "}, "q"),
    ({"q": "乡村振兴", "limit": "51"}, "limit"),
    ({"q": "乡村振兴", "limit": "0"}, "limit"),
    ({"q": "乡村振兴", "limit": "ten"}, "limit"),
    ({"q": "乡村振兴", "offset": "-1"}, "offset"),
    ({"q": "乡村振兴", "offset": "1.5"}, "offset"),
    ({"q": "乡村振兴", "mode": "xor"}, "mode"),
    ({"q": "字" * 201}, "q"),
])
async def test_bad_search_parameters_are_400_naming_the_field(http_server_client, params, field):
    query = urllib.parse.urlencode(params)
    response = await http_server_client.fetch(f"/api/knowledge/search?{query}", raise_error=False)
    assert response.code == 400
    error = error_of(response)
    assert error["code"] == "invalid_request" and field in error["message"]


@pytest.mark.parametrize("body, field", [
    ({"content": "正文"}, "title"),
    ({"title": "标题"}, "content"),
    ({"title": "标题", "content": "   "}, "content"),
    ({"title": 1, "content": "正文"}, "title"),
    ({"title": "标题", "content": ["正文"]}, "content"),
    ({"title": "标题", "content": "正文", "tags": [1, 2]}, "tags"),
    ({"title": "标题", "content": "正文", "tags": {"a": 1}}, "tags"),
    ({"title": "标题", "content": "正文", "tags": ["有,逗号"]}, "tags"),
    ({"title": "标题", "content": "正文", "category": 3}, "category"),
    ({"title": "标", "content": "正文", "source": False}, "source"),
    ({"title": "标题" * 101, "content": "正文"}, "title"),
    ({"title": "标题", "content": "正文", "id": "has space"}, "id"),
    ({"title": "标题", "content": "正文", "id": "search"}, "id"),
    ({"title": "标题", "content": "正文", "id": 7}, "id"),
    ({"documents": "not a list"}, "documents"),
    ({"documents": []}, "documents"),
    ({"documents": [{"title": "甲", "content": "正文"}] * 101}, "documents"),
    ({"documents": [{"title": "甲", "content": "正文"}, {"title": "乙"}]}, "documents[1].content"),
    ({"documents": [{"id": "x", "title": "甲", "content": "甲"}, {"id": "x", "title": "乙", "content": "乙"}]},
     "documents[1].id"),
    ({"documents": [{"title": "甲", "content": "正文"}, "text"]}, "documents[1]"),
    (["not", "an", "object"], "请求体"),
])
async def test_bad_documents_are_400_and_change_nothing(http_server_client, ctx, body, field):
    response, answer = await add(http_server_client, body)
    assert response.code == 400
    error = error_of(response)
    assert error["code"] == "invalid_request" and field in error["message"]
    assert ctx.knowledge.store.count() == 0
    assert (await search(http_server_client, "正文 甲 乙"))[1]["total"] == 0


async def test_non_json_add_is_invalid_json(http_server_client, ctx):
    response, _ = await add(http_server_client, b"{title: oops")
    assert response.code == 400 and error_of(response)["code"] == "invalid_json"
    assert ctx.knowledge.store.count() == 0


async def test_unknown_and_malformed_ids_are_404(http_server_client):
    for path in ("/api/knowledge/nope", "/api/knowledge/%E4%B8%AD%E6%96%87", "/api/knowledge/a/b"):
        for method in ("GET", "DELETE"):
            response = await http_server_client.fetch(path, method=method, raise_error=False)
            assert response.code == 404, (path, method)
            assert error_of(response)["code"] == "not_found"


async def test_wrong_methods_are_405(http_server_client):
    response = await http_server_client.fetch("/api/knowledge/add", raise_error=False)
    assert response.code == 405 and response.headers["Allow"] == "POST"
    response = await post_json(http_server_client, "/api/knowledge/search", {})
    assert response.code == 405


# --- grounded chat ---

async def test_chat_prompt_carries_the_retrieved_passages(http_server_client, fake_llm):
    await add(http_server_client, {"documents": [FENGQIAO, SUMMARIZE]})
    fake_llm.reply = lambda body: "依靠群众就地化解矛盾[1]。"
    response = await post_json(http_server_client, "/api/chat", {"message": "枫桥经验怎样化解矛盾纠纷？"})
    assert response.code == 200
    body = json.loads(response.body)
    assert [s["id"] for s in body["sources"]] == ["fengqiao"]
    (source,) = body["sources"]
    assert source["title"] == "新时代枫桥经验" and source["score"] > 0
    assert "<em>枫桥经验</em>" in source["snippet"]
    assert body["unknown_citations"] == []
    prompt = "\n".join(m["content"] for m in fake_llm.requests[0]["messages"])
    assert FENGQIAO["content"] in prompt and "[1] 《新时代枫桥经验》" in prompt
    assert SUMMARIZE["content"] not in prompt  # not relevant: not sent


async def test_greeting_retrieves_nothing(http_server_client, fake_llm):
    await add(http_server_client, {"documents": [FENGQIAO, SUMMARIZE]})
    response = await post_json(http_server_client, "/api/chat", {"message": "你好"})
    assert json.loads(response.body)["sources"] == []
    assert all("参考资料" not in m["content"] for m in fake_llm.requests[0]["messages"])


async def test_use_knowledge_false_skips_retrieval(http_server_client, fake_llm):
    await add(http_server_client, FENGQIAO)
    response = await post_json(http_server_client, "/api/chat",
                               {"message": "枫桥经验怎样化解矛盾纠纷？", "use_knowledge": False})
    assert json.loads(response.body)["sources"] == []
    assert FENGQIAO["content"] not in json.dumps(fake_llm.requests[0], ensure_ascii=False)


async def test_streamed_chat_sends_sources_before_the_first_delta(http_server_client, fake_llm):
    await add(http_server_client, {"documents": [FENGQIAO, SUMMARIZE]})
    fake_llm.reply = lambda body: "归纳概括要先审题，再找点。[1]"
    response, chunks = await stream_chat(http_server_client, {"message": "归纳概括题怎么找点？"})
    assert response.code == 200
    events = parse_sse(b"".join(c for _, c in chunks).decode())
    names = [name for name, _ in events]
    assert names[0] == "sources" and names.index("sources") < names.index("message")
    assert [s["id"] for s in events[0][1]["sources"]] == ["summarize"]
    assert events[-1][0] == "done" and events[-1][1]["sources"] == events[0][1]["sources"]
    prompt = "\n".join(m["content"] for m in fake_llm.requests[0]["messages"])
    assert SUMMARIZE["content"] in prompt


@pytest.mark.settings(offline=True)
async def test_offline_chat_answers_from_the_knowledge_base(http_server_client):
    await add(http_server_client, FENGQIAO)
    body = json.loads((await post_json(http_server_client, "/api/chat",
                                       {"message": "枫桥经验怎样化解矛盾纠纷？"})).body)
    assert body["sources"][0]["id"] == "fengqiao"
    assert "新时代枫桥经验" in body["answer"]


# --- GET /api/knowledge: the list ---

async def listing(client, **params):
    query = urllib.parse.urlencode(params)
    response = await client.fetch(f"/api/knowledge?{query}", raise_error=False)
    return response, json.loads(response.body)


async def test_list_pages_through_every_document_latest_updated_first(http_server_client):
    for n in range(5):
        await add(http_server_client, {"id": f"doc-{n}", "title": f"第{n}篇", "content": "内容" * 500,
                                       "category": "方法" if n % 2 else "主题", "tags": [f"t{n}"]})
    await add(http_server_client, {"id": "doc-1", "title": "第1篇（改）", "content": "新内容",
                                   "category": "方法", "tags": ["t1"]})
    response, first = await listing(http_server_client, limit=2)
    assert response.code == 200
    assert (first["total"], first["limit"], first["offset"]) == (5, 2, 0)
    assert first["documents"][0] == {"id": "doc-1", "title": "第1篇（改）", "category": "方法",
                                     "tags": ["t1"], "updated_at": first["documents"][0]["updated_at"]}
    seen = [d["id"] for d in first["documents"]]
    for offset in (2, 4):
        seen += [d["id"] for d in (await listing(http_server_client, limit=2, offset=offset))[1]["documents"]]
    assert sorted(seen) == [f"doc-{n}" for n in range(5)]  # every document once, no content
    _, past_end = await listing(http_server_client, offset=5)
    assert past_end["total"] == 5 and past_end["documents"] == []
    _, methods = await listing(http_server_client, category="方法")
    assert methods["total"] == 2 and {d["id"] for d in methods["documents"]} == {"doc-1", "doc-3"}


@pytest.mark.parametrize("params, name", [
    ({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"limit": "x"}, "limit"),
    ({"offset": "-1"}, "offset"), ({"offset": "1000001"}, "offset"), ({"category": "类" * 51}, "category"),
])
async def test_list_bounds_are_400_naming_the_parameter(http_server_client, params, name):
    response, _ = await listing(http_server_client, **params)
    assert response.code == 400
    error = error_of(response)
    assert error["code"] == "invalid_request" and name in error["message"]


@pytest.mark.settings(api_keys=("client-key-for-tests-15b01",), admin_api_keys=("admin-key-for-tests-15b02",))
async def test_list_needs_a_client_key(http_server_client):
    assert (await http_server_client.fetch("/api/knowledge", raise_error=False)).code == 401
    response = await http_server_client.fetch("/api/knowledge", headers={"X-API-Key": "client-key-for-tests-15b01"})
    assert response.code == 200 and json.loads(response.body)["total"] == 0


async def test_a_search_past_its_time_budget_is_a_503_naming_it(http_server_client, monkeypatch):
    from core.knowledge import service
    await add(http_server_client, FENGQIAO)
    monkeypatch.setattr(service, "SEARCH_BUDGET_SECONDS", -1.0)  # every search is already late
    for q in ("枫桥经验 化解矛盾", '"枫桥 经验"'):  # both query paths: words, and a phrase
        response, body = await search(http_server_client, q)
        assert response.code == 503 and body["error"]["code"] == "search_timeout", q
        assert "检索超时" in body["error"]["message"]
    monkeypatch.setattr(service, "SEARCH_BUDGET_SECONDS", 1.0)
    response, body = await search(http_server_client, '"枫桥 经验"')
    assert response.code == 200 and [r["id"] for r in body["results"]] == ["fengqiao"]


async def test_a_pause_after_single_adds_merges_their_segments(http_server_client, ctx, monkeypatch):
    import asyncio

    from core.knowledge import service
    monkeypatch.setattr(service, "COMPACT_AFTER_SECONDS", 0.2)
    index = ctx.knowledge.index

    def segments():
        return len(index._index(index.current_name())._segments())

    before = segments()
    for n in range(10):  # each add commits a segment of its own and merges nothing
        doc = {"id": f"one-{n}", "title": f"第{n}篇", "content": "单篇写入测试。"}
        assert (await add(http_server_client, doc))[0].code == 201
    assert segments() >= before + 10 - 1
    for _ in range(50):  # the pause: merged in the background
        await asyncio.sleep(0.1)
        if segments() < before + 3:
            break
    assert segments() < before + 3
    assert (await search(http_server_client, "单篇写入测试", limit=20))[1]["total"] == 10


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread priorities are Linux's")
async def test_searches_run_on_a_thread_below_the_loops_priority(http_server_client):
    loop_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert (await add(http_server_client, FENGQIAO))[0].code == 201
    response, found = await search(http_server_client, "枫桥经验")
    assert response.code == 200 and found["results"][0]["id"] == "fengqiao"
    searchers = [t for t in threading.enumerate() if t.name.startswith("shenlun-search")]
    assert searchers  # the thread that answered is still there, idle
    for thread in searchers:
        assert thread.native_id is not None
        assert os.getpriority(os.PRIO_PROCESS, thread.native_id) == min(19, loop_nice + SEARCH_NICE)
    # Only the search thread: the loop (this thread) keeps its priority.
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == loop_nice
