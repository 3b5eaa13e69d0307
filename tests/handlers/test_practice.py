"""GET /api/practice and GET /api/practice/{id} through real HTTP: every bundled item
keeps the invariants of an exam question, and the type, genre, theme and paper filters."""
from __future__ import annotations

import json
import re
from typing import Any

import pytest
from tornado.escape import url_escape

from core.chat.wordlimit import char_count
from tests.conftest import post_json

TYPES = ("summarize", "analyze", "countermeasure", "document", "essay")
COMMON_GENRES = ("倡议书", "公开信", "讲话稿", "简报", "调研报告", "新闻稿", "情况说明", "工作方案")


async def get(client, path: str, **params: str) -> tuple[int, Any]:
    query = "&".join(f"{k}={url_escape(v)}" for k, v in params.items())
    response = await client.fetch(path + ("?" + query if query else ""), raise_error=False)
    return response.code, json.loads(response.body)


async def all_items(client) -> list[dict[str, Any]]:
    code, listing = await get(client, "/api/practice")
    assert code == 200
    items = []
    for summary in listing["items"]:
        code, item = await get(client, f"/api/practice/{summary['id']}")
        assert code == 200
        items.append(item)
    return items


async def test_every_item_keeps_the_invariants_of_an_exam_question(http_server_client):
    items = await all_items(http_server_client)
    assert len(items) >= 40
    assert len({i["id"] for i in items}) == len(items)
    for item in items:
        iid, points = item["id"], item["scoring_points"]
        # a teacher's 评分细则: the points add up to the full score
        assert sum(p["score"] for p in points) == item["full_score"], iid
        assert 600 <= len(item["material"]) <= 1500, iid
        # the question states its score and limit as a real paper does
        assert f"（{item['full_score']}分）" in item["question"], iid
        assert re.search(rf"(不超过|～){item['word_limit']}字", item["question"]), iid
        answer = char_count(item["reference_answer"])
        assert answer <= item["word_limit"], (iid, answer)
        lower = re.search(r"(\d+)～\d+字", item["question"])
        assert lower is None or answer >= int(lower.group(1)), (iid, answer)
        assert len({p["id"] for p in points}) == len(points), iid
        for point in points:
            assert point["label"].strip() and point["score"] > 0, iid
            assert point["phrasings"] and all(p.strip() for p in point["phrasings"]), (iid, point["id"])
            # at least one phrasing is written in the material or the teacher's answer
            assert any(p in item["material"] or p in item["reference_answer"]
                       for p in point["phrasings"]), (iid, point["id"])


async def test_the_bank_covers_every_type_the_common_genres_and_three_papers(http_server_client):
    code, listing = await get(http_server_client, "/api/practice")
    assert code == 200 and listing["total"] == len(listing["items"]) >= 40
    counts = {t: sum(1 for i in listing["items"] if i["question_type"] == t) for t in TYPES}
    assert min(counts.values()) >= 5, counts
    genres = {i["genre"] for i in listing["items"] if i["genre"]}
    assert set(COMMON_GENRES) <= genres
    assert len(listing["papers"]) >= 3


async def test_the_genre_filter_lists_only_that_genre(http_server_client):
    for genre in COMMON_GENRES:
        code, body = await get(http_server_client, "/api/practice", genre=genre)
        assert code == 200 and body["total"] >= 1, genre
        assert {(i["question_type"], i["genre"]) for i in body["items"]} == {("document", genre)}


async def test_the_theme_filter_matches_tags_or_title_and_combines_with_type(http_server_client):
    code, body = await get(http_server_client, "/api/practice", theme="县域")
    assert code == 200 and body["total"] >= 3
    assert all(any("县域" in t for t in i["tags"]) or "县域" in i["title"] for i in body["items"])
    code, both = await get(http_server_client, "/api/practice", theme="县域", type="对策")
    assert code == 200 and 1 <= both["total"] < body["total"]
    assert {i["id"] for i in both["items"]} <= {i["id"] for i in body["items"]}
    assert {i["question_type"] for i in both["items"]} == {"countermeasure"}
    code, none = await get(http_server_client, "/api/practice", theme="没有这个主题")
    assert code == 200 and none["total"] == 0 and none["items"] == []
    _, every = await get(http_server_client, "/api/practice")
    code, blank = await get(http_server_client, "/api/practice", theme="  ")
    assert code == 200 and blank["total"] == every["total"]  # a blank theme filters nothing


async def test_a_paper_lists_its_questions_in_order_with_the_exam_timing(http_server_client):
    _, listing = await get(http_server_client, "/api/practice")
    for paper in listing["papers"]:
        code, body = await get(http_server_client, "/api/practice", paper=paper["id"])
        assert code == 200 and [p["id"] for p in body["papers"]] == [paper["id"]]
        orders = [i["paper"]["order"] for i in body["items"]]
        assert orders == list(range(1, len(orders) + 1)) and 4 <= len(orders) <= 5
        assert {i["paper"]["id"] for i in body["items"]} == {paper["id"]}
        assert body["items"][-1]["question_type"] == "essay"  # a paper ends with its 大作文
        timing = body["papers"][0]
        assert timing["question_count"] == len(orders)
        assert timing["full_score"] == sum(i["full_score"] for i in body["items"])
        minutes = timing["reading_minutes"] + sum(i["paper"]["suggested_minutes"] for i in body["items"])
        assert minutes <= timing["total_minutes"]
        # one material, lent to every question of the paper
        materials = set()
        for summary in body["items"]:
            _, item = await get(http_server_client, f"/api/practice/{summary['id']}")
            materials.add(item["material"])
        assert len(materials) == 1
    standalone = [i for i in listing["items"] if i["paper"] is None]
    assert len(standalone) >= 20


async def test_a_bad_filter_is_refused_with_the_parameter_named(http_server_client):
    for params, name in (({"genre": "诗歌"}, "genre"), ({"genre": ""}, "genre"),
                         ({"paper": "no-such-paper"}, "paper"), ({"paper": ""}, "paper"),
                         ({"theme": "主" * 21}, "theme"), ({"type": "poem", "genre": "公开信"}, "type")):
        code, body = await get(http_server_client, "/api/practice", **params)
        assert code == 400 and body["error"]["code"] == "invalid_request", params
        assert name in body["error"]["message"], params


@pytest.mark.settings(offline=True)
async def test_a_question_of_a_paper_is_graded_by_practice_id_with_its_own_rubric(http_server_client):
    _, listing = await get(http_server_client, "/api/practice", paper="paper-old-street-renewal", type="对策")
    [summary] = listing["items"]
    _, item = await get(http_server_client, f"/api/practice/{summary['id']}")
    body = {"practice_id": item["id"], "answer": item["reference_answer"]}
    response = await post_json(http_server_client, "/api/grade", body)
    grade = json.loads(response.body)
    assert response.code == 200 and grade["practice_id"] == item["id"]
    assert grade["score"] == grade["full_score"] == item["full_score"]
    assert grade["points_missed"] == []
