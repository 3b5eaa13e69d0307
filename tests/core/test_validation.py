"""The field readers: what a bad field is, said once, with the field named in Chinese."""
from __future__ import annotations

import pytest

from core.errors import InvalidRequest
from core.validation import (
    read_bool,
    read_choice,
    read_float,
    read_int,
    read_str,
    read_str_list,
    require_object,
)


def refused(reader, *args, **kwargs) -> str:
    with pytest.raises(InvalidRequest) as raised:
        reader(*args, **kwargs)
    return raised.value.message


def test_an_integer_field_takes_whole_numbers_in_its_bounds():
    assert read_int({"n": 5}, "n", lo=1, hi=10) == 5
    assert read_int({"n": 5.0}, "n", lo=1, hi=10) == 5  # JSON 5.0 is a whole number
    assert read_int({}, "n", lo=1, hi=10, default=3) == 3
    assert read_int({"n": None}, "n", lo=1, hi=10) is None
    assert refused(read_int, {"n": 11}, "n", lo=1, hi=10) == "字段 n 必须在 1 到 10 之间"
    for bad in (True, 5.5, "5", [5]):
        assert refused(read_int, {"n": bad}, "n", lo=1, hi=10) == "字段 n 必须是整数"


def test_a_number_field_refuses_booleans_strings_and_non_finite_values():
    assert read_float({"t": 1}, "t", lo=0.0, hi=2.0, default=0.7) == 1.0
    assert read_float({}, "t", lo=0.0, hi=2.0, default=0.7) == 0.7
    for bad in (True, "1"):
        assert refused(read_float, {"t": bad}, "t", lo=0.0, hi=2.0, default=0.7) == "字段 t 必须是数字"
    for bad in (float("nan"), float("inf"), 2.5):
        assert refused(read_float, {"t": bad}, "t", lo=0.0, hi=2.0, default=0.7) == "字段 t 必须在 0.0 到 2.0 之间"


def test_a_text_field_refuses_nul_length_and_blank_when_required():
    assert read_str({"m": "你好"}, "m", max_len=5) == "你好"
    assert read_str({}, "m", max_len=5) == ""
    assert refused(read_str, {}, "m", max_len=5, required=True) == "缺少字段 m"
    assert refused(read_str, {"m": "  \n"}, "m", max_len=5, required=True) == "字段 m 不能为空"
    assert refused(read_str, {"m": "a\x00b"}, "m", max_len=5) == "字段 m 含有非法字符"
    assert refused(read_str, {"m": "一二三四五六"}, "m", max_len=5) == "字段 m 过长（最多 5 个字符）"
    assert refused(read_str, {"m": 5}, "m", max_len=5) == "字段 m 必须是字符串"


def test_booleans_and_choices_are_exact():
    assert read_bool({"b": False}, "b", default=True) is False
    assert refused(read_bool, {"b": 0}, "b", default=True) == "字段 b 必须是 true 或 false"
    assert read_choice({"mode": "essay"}, "mode", {"essay", "chat"}, default="chat") == "essay"
    assert "必须是以下之一" in refused(read_choice, {"mode": "Essay"}, "mode", {"essay"}, default="essay")


def test_a_list_field_takes_an_array_or_a_comma_separated_string():
    assert read_str_list({"tags": "乡村, 治理,,"}, "tags", max_items=3, max_len=4) == ["乡村", "治理"]
    assert read_str_list({"tags": ["乡村"]}, "tags", max_items=3, max_len=4) == ["乡村"]
    assert refused(read_str_list, {"tags": ["a", "b"]}, "tags", max_items=1, max_len=4) == "字段 tags 最多 1 项"
    assert refused(read_str_list, {"tags": [1]}, "tags", max_items=3, max_len=4) == "字段 tags 必须是字符串数组"
    assert "过长或含有非法字符" in refused(read_str_list, {"tags": ["abcde"]}, "tags", max_items=3, max_len=4)


def test_a_body_must_be_a_json_object():
    assert require_object({"a": 1}) == {"a": 1}
    assert refused(require_object, [1]) == "请求体 必须是 JSON 对象"
