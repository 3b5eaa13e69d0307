"""The request shapes: one declaration of a field gives both its check and its schema,
and a refusal names the field in Chinese. Real pydantic models, no mocks."""
from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import Field

from core.chat.service import ChatBody
from core.errors import CATALOGUE, InvalidRequest, ServiceError, for_status
from core.validation import Integer, Query, QueryInt, RecentBodies, Shape, Text, json_schemas


class Item(Shape):
    name: Annotated[str, Text(5, required=True)]
    size: Annotated[int, Integer(1, 3)] = 2


class Basket(Shape):
    items: Annotated[tuple[Item, ...], Field(max_length=2)] = ()


class Page(Query):
    limit: Annotated[int, QueryInt(1, 9)] = 5


def test_one_declaration_gives_the_check_and_the_schema():
    schema = json_schemas(Basket)
    assert schema["Item"]["properties"]["name"]["maxLength"] == 5
    assert schema["Item"]["properties"]["size"]["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 3}
    assert schema["Item"]["required"] == ["name"]
    assert Basket.parse({"items": [{"name": "abcde", "size": 3}]}).items[0].size == 3
    with pytest.raises(InvalidRequest) as err:
        Basket.parse({"items": [{"name": "abcde"}, {"name": "abcdef"}]})
    assert err.value.message == "字段 items[1].name 过长（最多 5 个字符）"


@pytest.mark.parametrize("payload, message", [
    ({"items": [{"size": 2}]}, "缺少字段 items[0].name"),
    ({"items": [{"name": "a", "size": 4}]}, "字段 items[0].size 必须在 1 到 3 之间"),
    ({"items": [{"name": "a", "size": True}]}, "字段 items[0].size 必须是整数"),
    ({"items": [{"name": "a"}] * 3}, "字段 items 最多 2 项"),
    ({"items": "a"}, "字段 items 必须是数组"),
    ({"items": [1]}, "字段 items[0] 必须是对象"),
    ([], "请求体 必须是 JSON 对象"),
])
def test_a_refusal_names_the_field(payload, message):
    with pytest.raises(InvalidRequest) as err:
        Basket.parse(payload)
    assert err.value.message == message


def test_null_is_not_given_and_an_integral_float_is_an_integer():
    assert Item.parse({"name": "a", "size": None}).size == 2
    assert Item.parse({"name": "a", "size": 3.0}).size == 3
    with pytest.raises(InvalidRequest, match="缺少字段 name"):
        Item.parse({"name": None})


def test_query_parameters_are_named_as_parameters_and_blank_is_not_given():
    assert Page.from_params({"limit": [" 7 "]}).limit == 7
    assert Page.from_params({"limit": ["  "]}).limit == 5
    with pytest.raises(InvalidRequest, match="^参数 limit 必须是 1 到 9 之间的整数$"):
        Page.from_params({"limit": ["10"]})


def test_the_chat_schema_documents_what_its_check_requires():
    schema = json_schemas(ChatBody)["ChatBody"]
    assert schema["required"] == ["message"] and schema["properties"]["message"]["type"] == "string"
    assert schema["properties"]["max_tokens"]["anyOf"][0]["maximum"] == 8192
    with pytest.raises(InvalidRequest, match="max_tokens"):
        ChatBody.parse({"message": "hi", "max_tokens": 8193})


def test_the_catalogue_declares_each_code_once_with_a_status():
    assert len({cls.code for cls in CATALOGUE.values()}) == len(CATALOGUE)
    assert for_status(404).code == "not_found" and for_status(400).code == "invalid_request"
    assert for_status(418) is ServiceError
    with pytest.raises(TypeError, match="declared twice"):
        type("Again", (ServiceError,), {"code": "not_found"})


def test_recent_bodies_keep_the_newest_small_bodies_only():
    recent: RecentBodies[str] = RecentBodies(entries=2, max_bytes=8)
    for raw in (b"one", b"two", b"three"):
        recent.put(raw, raw.decode())
    assert [recent.get(raw) for raw in (b"one", b"two", b"three")] == [None, "two", "three"]
    recent.put(b"123456789", "too big")
    assert recent.get(b"123456789") is None and recent.get(b"three") == "three"
