"""Request shapes: pydantic models whose fields say once what a good value is.

A request body is a `Shape` (a pydantic model); each field is annotated with one of
the checks below (`Annotated[str, Text(200)]`; `Integer`, `Number`, `Flag`, `Choice`,
`Words`, `Phrases`), which carries the field's bounds once and gives both the check
and the JSON Schema the OpenAPI document shows (`json_schemas`, read by
`handlers/openapi.py`), so the two cannot drift. `Shape.parse` turns the first failure into `InvalidRequest` whose
Chinese message names the field (`messages[3].content`). JSON booleans are not
numbers here, and a `null` optional field counts as not given.
"""
from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, ClassVar, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationError, model_validator
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue, models_json_schema
from pydantic_core import PydanticCustomError, core_schema

from core.errors import InvalidRequest

FIELD = "{field}"  # where a message names its field ("字段 x", "参数 x"), filled in by Shape.parse
REF_TEMPLATE = "#/components/schemas/{model}"
T = TypeVar("T")

# What Python's str.strip() removes (the checks' notion of blank), which is not
# JSON Schema's \s: \x1c-\x1f and \x85 are blank to Python, \ufeff is not.
PY_SPACE = ("\\t\\n\\u000b\\f\\r\\u001c-\\u001f \\u0085\\u00a0\\u1680\\u2000-\\u200a"
             "\\u2028\\u2029\\u202f\\u205f\\u3000")
NO_NUL = "^[^\\u0000]*$"
_DIGITS = re.compile(r"[+-]?\d{1,9}")
NOT_BLANK = f"^[^\\u0000]*[^\\u0000{PY_SPACE}][^\\u0000]*$"

NOT_STRING = "{field} 必须是字符串"
_NOT_STRINGS = "{field} 必须是字符串数组"
_TOO_MANY = "{field} 最多 {max_items} 项"
_OUT_OF_RANGE = "{field} 必须在 {lo} 到 {hi} 之间"

# pydantic's own failures (structure: objects, arrays, missing keys), in Chinese.
_BUILTIN = {
    "missing": "缺少{field}",
    "model_type": "{field} 必须是对象",
    "model_attributes_type": "{field} 必须是对象",
    "dict_type": "{field} 必须是对象",
    "list_type": "{field} 必须是数组",
    "tuple_type": "{field} 必须是数组",
    "too_long": "{field} 最多 {max_length} 项",
    "too_short": "{field} 不能为空",
}


def refuse(message: str, **context: Any) -> PydanticCustomError:
    """A field's failure; `message` names the field as `{field}` (FIELD)."""
    return PydanticCustomError("invalid_field", message, context or None)


class Check:
    """Field metadata (`text: Annotated[str, Text(200)] = ""`): one function that checks
    a value and the JSON Schema that documents the same rule."""

    def __init__(self, check: Callable[[Any], Any], schema: dict[str, Any], **extra: Any) -> None:
        self.check = check
        self.schema = {**schema, **extra}

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self.check)

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return dict(self.schema)


def Text(max_len: int, *, required: bool = False, **extra: Any) -> Check:
    """A string of at most `max_len` characters without NUL; when required, not blank."""
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise refuse(NOT_STRING)
        if "\x00" in value:
            raise refuse("{field} 含有非法字符")
        if len(value) > max_len:
            raise refuse("{field} 过长（最多 {max_len} 个字符）", max_len=max_len)
        if required and not value.strip():
            raise refuse("{field} 不能为空")
        return value
    schema = {"type": "string", "maxLength": max_len, "pattern": NOT_BLANK if required else NO_NUL}
    return Check(check, schema, **extra)


def Integer(lo: int, hi: int, **extra: Any) -> Check:
    """An integer from `lo` to `hi` (a float with no fraction counts; a boolean does not)."""
    def check(value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise refuse("{field} 必须是整数")
        if not lo <= value <= hi:
            raise refuse(_OUT_OF_RANGE, lo=lo, hi=hi)
        return value
    return Check(check, {"type": "integer", "minimum": lo, "maximum": hi}, **extra)


def Number(lo: float, hi: float, *, above_lo: bool = False, **extra: Any) -> Check:
    """A finite number from `lo` (excluded when `above_lo`) to `hi`."""
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise refuse("{field} 必须是数字")
        if not math.isfinite(value) or not (lo < value if above_lo else lo <= value) or value > hi:
            if above_lo:
                raise refuse("{field} 必须是大于 {lo}、不超过 {hi} 的数字", lo=lo, hi=hi)
            raise refuse(_OUT_OF_RANGE, lo=lo, hi=hi)
        return float(value)
    low = "exclusiveMinimum" if above_lo else "minimum"
    return Check(check, {"type": "number", low: lo, "maximum": hi}, **extra)


def Flag(**extra: Any) -> Check:
    """true or false."""
    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            raise refuse("{field} 必须是 true 或 false")
        return value
    return Check(check, {"type": "boolean"}, **extra)


_NO_BLANK: Any = object()


def Choice(choices: Collection[str] | Mapping[str, str], *, message: str | None = None,
           blank: Any = _NO_BLANK, key: Callable[[str], str] = str.strip, **extra: Any) -> Check:
    """One of `choices` (surrounding blanks ignored); a mapping's value is the one kept,
    so a table of aliases answers the canonical name. With `blank`, a blank string is
    no choice and answers `blank`; `key` says how a value is read (stripped)."""
    names = list(choices)
    refusal = message or "{field} 必须是以下之一：" + "、".join(names)

    def check(value: Any) -> Any:
        name = key(value) if isinstance(value, str) else None
        if name == "" and blank is not _NO_BLANK:
            return blank
        if name is None or name not in choices:
            raise refuse(refusal)
        return choices[name] if isinstance(choices, Mapping) else name
    return Check(check, {"enum": names}, **extra)


def Words(max_items: int, max_len: int, **extra: Any) -> Check:
    """Short strings (tags): an array, or one comma-separated string; blanks dropped,
    duplicates kept once; no item holds a comma."""
    def check(value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = value.split(",")
        elif isinstance(value, list) and any(isinstance(v, str) and "," in v for v in value):
            raise refuse("{field} 的标签不能含有逗号")
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise refuse(_NOT_STRINGS)
        items = [v.strip() for v in value if v.strip()]
        if len(items) > max_items:
            raise refuse(_TOO_MANY, max_items=max_items)
        if any(len(v) > max_len or "\x00" in v for v in items):
            raise refuse("{field} 的某一项过长或含有非法字符")
        return tuple(dict.fromkeys(items))
    item = {"type": "string", "maxLength": max_len, "pattern": "^[^,\\u0000]*$"}
    return Check(check, {"anyOf": [{"type": "array", "maxItems": max_items, "items": item},
                                   {"type": "string", "description": "逗号分隔", "pattern": NO_NUL,
                                    "maxLength": max_len}]}, **extra)


def Phrases(max_items: int, max_len: int, **extra: Any) -> Check:
    """Phrasings: at most `max_items` strings of 2 to `max_len` characters once
    stripped; duplicates kept once."""
    def check(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise refuse(_NOT_STRINGS)
        if len(value) > max_items:
            raise refuse(_TOO_MANY, max_items=max_items)
        if any(len(v.strip()) < 2 or len(v) > max_len or "\x00" in v for v in value):
            raise refuse("{field} 的每一项须为 2～{max_len} 个字符", max_len=max_len)
        return tuple(dict.fromkeys(v.strip() for v in value))
    # Two characters at least: a first and a last that are neither blank nor NUL.
    item = {"type": "string", "maxLength": max_len, "pattern": "^\\s*[^\\s\\u0000][^\\u0000]*[^\\s\\u0000]\\s*$"}
    return Check(check, {"type": "array", "maxItems": max_items, "items": item}, **extra)


def field_name(loc: tuple[int | str, ...], where: str = "") -> str:
    """`("messages", 3, "content")` → `messages[3].content` (under `where`)."""
    name = where
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


class _Schema(GenerateJsonSchema):
    """JSON Schema as the checks read a body: an optional field may be `null` (read as
    not given); no generated titles (noise in the OpenAPI document)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def model_schema(self, schema: core_schema.ModelSchema) -> dict[str, Any]:
        out = super().model_schema(schema)
        out.pop("title", None)
        if out.get("description") == inspect.cleandoc(schema["cls"].__doc__ or ""):
            del out["description"]  # a docstring is for developers, in English
        return out

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> dict[str, Any]:
        out = super().default_schema(schema)
        default = out.pop("default", None)
        return {"anyOf": [out, {"type": "null"}], "default": default}


class Shape(BaseModel):
    """A request body: its fields, their bounds, its JSON Schema."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    noun: ClassVar[str] = "字段"  # what a message calls one of its keys
    # Keys the OpenAPI document marks required (and not null) though the check can do
    # without them: what a client is meant to send (`message`, with `messages` optional).
    documented_required: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _null_is_not_given(cls, data: Any) -> Any:
        # A null optional field takes its default; a null required one is missing.
        if isinstance(data, dict) and None in data.values():
            return {key: value for key, value in data.items() if value is not None}
        return data

    @classmethod
    def parse(cls, payload: Any, where: str = "") -> Self:
        """Validate a decoded JSON value; raises InvalidRequest naming the first bad field."""
        if not isinstance(payload, dict):
            raise InvalidRequest(f"{where or '请求体'} 必须是 JSON 对象")
        try:
            return cls.model_validate(payload)
        except ValidationError as exc:
            raise InvalidRequest(describe(exc, where, cls.noun)) from None

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        out = handler(schema)
        if cls.documented_required:
            target = handler.resolve_ref_schema(out)
            for name in cls.documented_required:
                prop = target["properties"][name]
                target["properties"][name] = prop["anyOf"][0]  # not null either
            target["required"] = [*target.get("required", []), *cls.documented_required]
        return out


def describe(exc: ValidationError, where: str = "", noun: str = "字段") -> str:
    """The first failure of `exc` in Chinese, naming its field."""
    error = exc.errors(include_url=False)[0]
    name = f"{noun} {field_name(error['loc'], where)}"
    if error["type"] == "invalid_field":
        return error["msg"].replace(FIELD, name)
    template = _BUILTIN.get(error["type"], "{field} 的值不合法")
    return template.replace(FIELD, name).format(**(error.get("ctx") or {}))


class Query(Shape):
    """Query-string parameters: the last value of each (every value of a `repeated`
    one); a blank value counts as not given, but for the `exact` ones (a name given
    empty names nothing)."""

    noun = "参数"
    repeated: ClassVar[tuple[str, ...]] = ()
    exact: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_params(cls, params: Mapping[str, Sequence[str]]) -> Self:
        """Validate query-string parameters (name → values); raises InvalidRequest."""
        given: dict[str, Any] = {}
        for name, values in params.items():
            if name in cls.repeated:
                given[name] = list(values)
            elif values and (values[-1].strip() or name in cls.exact):
                given[name] = values[-1]
        return cls.parse(given)


def QueryText(max_len: int, *, required: bool = False, **extra: Any) -> Check:
    """`Text` in a query string, where Tornado drops control characters (NUL too)
    before any check sees them: the schema does not forbid what never arrives."""
    text = Text(max_len, required=required)
    schema = {"type": "string", "maxLength": max_len}
    if required:  # blank once Tornado has dropped the control characters
        schema["pattern"] = f"[^{PY_SPACE}\\u0000-\\u001f\\u007f]"
    return Check(text.check, schema, **extra)


def QueryInt(lo: int, hi: int, **extra: Any) -> Check:
    """A whole number from `lo` to `hi`, written in a query string."""
    def check(value: Any) -> int:
        raw = value.strip() if isinstance(value, str) else ""
        if not _DIGITS.fullmatch(raw) or not lo <= int(raw) <= hi:
            raise refuse("{field} 必须是 {lo} 到 {hi} 之间的整数", lo=lo, hi=hi)
        return int(raw)
    return Check(check, {"type": "integer", "minimum": lo, "maximum": hi}, **extra)


def json_schemas(*shapes: type[BaseModel], mode: JsonSchemaMode = "validation") -> dict[str, Any]:
    """The JSON Schemas of `shapes` and of every model they use, by model name, with
    `$ref`s into an OpenAPI document's components."""
    _, top = models_json_schema([(s, mode) for s in shapes], ref_template=REF_TEMPLATE,
                                schema_generator=_Schema)
    return dict(top.get("$defs", {}))


class RecentBodies(Generic[T]):
    """The validated form of the last distinct small request bodies, per process.

    A cache hit is an identical request asked again, and its body's JSON decoding and
    validation cost more than the rest of the hit's own steps (bench/hit_costs.py): the
    same bytes validate to the same value, so they are validated once. Only bodies that
    validated are kept (a refused one is refused anew, with its message), the values
    must be immutable (the same one is handed to every request with those bytes), and
    bodies over `max_bytes` are never kept, so the memory is bounded by
    `entries × max_bytes`.
    """

    def __init__(self, *, entries: int = 256, max_bytes: int = 4096) -> None:
        self.entries = entries
        self.max_bytes = max_bytes
        self._values_per_process: dict[bytes, T] = {}

    def get(self, raw: bytes) -> T | None:
        """The value `raw` validated to, if it is one of the recent bodies."""
        return self._values_per_process.get(raw) if len(raw) <= self.max_bytes else None

    def put(self, raw: bytes, value: T) -> None:
        """Remember what `raw` validated to (a no-op for a body over `max_bytes`)."""
        if len(raw) > self.max_bytes:
            return
        if len(self._values_per_process) >= self.entries:
            # The oldest goes: dicts keep insertion order.
            del self._values_per_process[next(iter(self._values_per_process))]
        self._values_per_process[raw] = value
