"""Field readers for request payloads: one place that says what a bad field is.

Each reader raises `InvalidRequest` whose message names the field, so every
endpoint rejects bad input the same way. JSON booleans are not numbers here.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, overload

from core.errors import InvalidRequest

_MISSING = object()


def require_object(payload: Any, name: str = "请求体") -> Mapping[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidRequest(f"{name} 必须是 JSON 对象")
    return payload


def read_str(data: Mapping[str, Any], name: str, *, max_len: int, required: bool = False,
             default: str = "", allow_empty: bool = True) -> str:
    value = data.get(name, _MISSING)
    if value is _MISSING or value is None:
        if required:
            raise InvalidRequest(f"缺少字段 {name}")
        return default
    if not isinstance(value, str):
        raise InvalidRequest(f"字段 {name} 必须是字符串")
    if "\x00" in value:
        raise InvalidRequest(f"字段 {name} 含有非法字符")
    if len(value) > max_len:
        raise InvalidRequest(f"字段 {name} 过长（最多 {max_len} 个字符）")
    if (required or not allow_empty) and not value.strip():
        raise InvalidRequest(f"字段 {name} 不能为空")
    return value


@overload
def read_int(data: Mapping[str, Any], name: str, *, lo: int, hi: int, default: int) -> int: ...
@overload
def read_int(data: Mapping[str, Any], name: str, *, lo: int, hi: int, default: None = None) -> int | None: ...


def read_int(data: Mapping[str, Any], name: str, *, lo: int, hi: int,
             default: int | None = None) -> int | None:
    """The integer field `name` within [lo, hi]; `default` when absent or null (an int
    default: the result is an int)."""
    value = data.get(name, _MISSING)
    if value is _MISSING or value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InvalidRequest(f"字段 {name} 必须是整数")
    if not lo <= value <= hi:
        raise InvalidRequest(f"字段 {name} 必须在 {lo} 到 {hi} 之间")
    return value


def read_float(data: Mapping[str, Any], name: str, *, lo: float, hi: float,
               default: float) -> float:
    value = data.get(name, _MISSING)
    if value is _MISSING or value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"字段 {name} 必须是数字")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise InvalidRequest(f"字段 {name} 必须在 {lo} 到 {hi} 之间")
    return float(value)


def read_bool(data: Mapping[str, Any], name: str, *, default: bool) -> bool:
    value = data.get(name, _MISSING)
    if value is _MISSING or value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequest(f"字段 {name} 必须是 true 或 false")
    return value


def read_choice(data: Mapping[str, Any], name: str, choices: Mapping[str, Any] | set[str], *,
                default: str) -> str:
    value = data.get(name, _MISSING)
    if value is _MISSING or value is None:
        return default
    if not isinstance(value, str) or value not in choices:
        raise InvalidRequest(f"字段 {name} 必须是以下之一：{', '.join(choices)}")
    return value


def read_str_list(data: Mapping[str, Any], name: str, *, max_items: int, max_len: int) -> list[str]:
    value = data.get(name, _MISSING)
    if value is _MISSING or value is None:
        return []
    if isinstance(value, str):
        value = [v for v in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"字段 {name} 必须是字符串数组")
    items = [v.strip() for v in value if v.strip()]
    if len(items) > max_items:
        raise InvalidRequest(f"字段 {name} 最多 {max_items} 项")
    if any(len(v) > max_len or "\x00" in v for v in items):
        raise InvalidRequest(f"字段 {name} 的某一项过长或含有非法字符")
    return items
