"""The OpenAI chat-completions dialect, translated to and from our own requests.

`/v1/chat/completions` is a second door to the same chat and grading services: a
request in OpenAI's shape becomes an `/api/chat` (or `/api/grade`) payload, which the
same validators check against the same bounds; the answer goes back in OpenAI's
`chat.completion` / `chat.completion.chunk` shapes. Our own fields (sources, char
count, the grade) travel under one extra key, `shenlun`, that OpenAI clients ignore.

The mode is chosen by the model name (`shenlun-summarize` …). Material, question and
word limit come from extra request fields, or from the last user message written in
sections (`【资料】…【题目】…【字数】300`), so a plain chat client can send them too.
Nothing here knows HTTP.
"""
from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import ConfigDict, Field

from core.chat.prompts import MAX_MATERIAL_CHARS, MAX_QUESTION_CHARS
from core.chat.service import (
    MAX_HISTORY_TURNS,
    MAX_MESSAGE_CHARS,
    MAX_TOKENS,
    TEMPERATURE,
    ChatRequest,
)
from core.chat.wordlimit import WORD_LIMIT
from core.errors import InvalidRequest, NotFound, error_class
from core.validation import (
    FIELD,
    NOT_BLANK,
    Check,
    Choice,
    Flag,
    Shape,
    Text,
    refuse,
)

# Model name → chat mode. The order is the order `GET /v1/models` lists them in.
MODEL_MODES: dict[str, str] = {
    "shenlun": "chat",
    "shenlun-summarize": "summarize",
    "shenlun-analyze": "analyze",
    "shenlun-countermeasure": "countermeasure",
    "shenlun-document": "document",
    "shenlun-essay": "essay",
    "shenlun-grade": "grade",
}
GRADE_MODEL = "shenlun-grade"
MAX_USER_CHARS = 256  # OpenAI's end-user id: accepted and checked, not used
OWNER = "shenlun"
# Fixed, so the model list is the same on every instance and every call.
_MODELS_CREATED = 1_764_547_200  # 2025-12-01

# Section headings of the last user message, and the request field each one fills.
_SECTION_FIELDS = {
    "资料": "material", "给定资料": "material", "材料": "material",
    "题目": "question", "问题": "question", "作答要求": "question",
    "答案": "answer", "我的答案": "answer", "考生答案": "answer",
    "字数": "word_limit", "字数限制": "word_limit",
}
_HEADING = re.compile(
    r"^[ \t]*(?:【(?P<bracketed>{names})】|(?P<plain>{names})[ \t]*[：:])[ \t]*".format(
        names="|".join(sorted(_SECTION_FIELDS, key=len, reverse=True))),
    re.MULTILINE)
_LIMIT_NUMBER = re.compile(r"\d{1,5}")



def model_list() -> dict[str, Any]:
    """`GET /v1/models`: the modes as models."""
    return {"object": "list", "data": [
        {"id": name, "object": "model", "created": _MODELS_CREATED, "owned_by": OWNER}
        for name in MODEL_MODES]}


def error_body(code: str, message: str) -> dict[str, Any]:
    """An error in OpenAI's shape; `code` stays our stable English code, `type` is the
    catalogue's OpenAI type of it."""
    return {"error": {"message": message, "type": error_class(code).openai_type,
                      "code": code, "param": None}}


def split_sections(text: str) -> tuple[str, dict[str, str]]:
    """The free text before the first section heading, and each section's content.

    `"请作答\\n【资料】甲\\n【题目】乙"` → `("请作答", {"material": "甲", "question": "乙"})`.
    A text without headings is all free text."""
    heads = list(_HEADING.finditer(text))
    if not heads:
        return text, {}
    sections: dict[str, str] = {}
    for n, head in enumerate(heads):
        end = heads[n + 1].start() if n + 1 < len(heads) else len(text)
        name = _SECTION_FIELDS[head.group("bracketed") or head.group("plain")]
        body = text[head.end():end].strip()
        if body:
            sections[name] = body
    return text[:heads[0].start()].strip(), sections


_NO_MODEL = "缺少{field}（可用：" + "、".join(MODEL_MODES) + "）"


def _model(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise refuse(_NO_MODEL)
    if value not in MODEL_MODES:
        raise NotFound(f"模型 {value[:60]} 不存在，可用：" + "、".join(MODEL_MODES))
    return value


def _text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a content array."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        if not all(isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
                   for part in content):
            raise refuse("{field}：只支持文本内容")
        # A NUL can reach no answer, log or store; in a part of a content array it is
        # dropped (a whole string carrying one is refused by the chat validator).
        return "".join(part["text"] for part in content).replace("\x00", "")
    raise refuse("{field} 必须是字符串或文本数组")


# The parts documented: at most CONTENT_PARTS, so that their sum stays within the
# /api/chat bound of a message (the check joins them and lets that bound judge).
CONTENT_PARTS = 8
_CONTENT = Check(_text_of, {"anyOf": [
    Text(MAX_MESSAGE_CHARS, required=True).schema,
    {"type": "array", "minItems": 1, "maxItems": CONTENT_PARTS, "items": {
        "type": "object", "required": ["type", "text"],
        "properties": {"type": {"const": "text"},
                       "text": Text(MAX_MESSAGE_CHARS // CONTENT_PARTS, required=True).schema}}}]})


class Message(Shape):
    """One message of an OpenAI conversation."""

    documented_required = ("content",)  # a system message may leave it out: it is dropped

    role: Annotated[str, Choice(("system", "developer", "user", "assistant"))]
    content: Annotated[str, _CONTENT] = ""


class StreamOptions(Shape):
    include_usage: Annotated[bool, Flag()] = False


def _limit_number(value: Any) -> Any:
    """A limit written as text ("300字", as in a 【字数】 section) as its number."""
    found = _LIMIT_NUMBER.search(value) if isinstance(value, str) else None
    return int(found.group()) if found else value


def _word_limit(value: Any) -> int:
    checked: int = WORD_LIMIT.check(_limit_number(value))
    return checked


class CompletionBody(Shape):
    """A `/v1/chat/completions` body as sent; the bounds shared with /api/chat are its."""

    model_config = ConfigDict(json_schema_extra=lambda schema: _by_model(schema))

    model: Annotated[str, Check(_model, {"enum": list(MODEL_MODES)})]
    messages: Annotated[tuple[Message, ...], Field(min_length=1, json_schema_extra={
        "maxItems": MAX_HISTORY_TURNS, "contains": {"type": "object", "properties": {"role": {"const": "user"}}},
        "description": "最后一条用户消息是问题（可按【资料】【题目】【字数】分节），之前的是对话历史；"
                       "system 消息被忽略（使用申论助手自己的提示词）"})]
    stream: Annotated[bool, Flag()] = False
    stream_options: StreamOptions = StreamOptions()
    temperature: Annotated[float | None, TEMPERATURE] = None
    max_tokens: Annotated[int | None, MAX_TOKENS] = None
    max_completion_tokens: Annotated[int | None, MAX_TOKENS] = None
    n: Annotated[int, Check(_one, {"const": 1})] = 1
    user: Annotated[str, Text(MAX_USER_CHARS)] = ""
    material: Annotated[str | None, Text(MAX_MATERIAL_CHARS)] = None
    question: Annotated[str | None, Text(MAX_QUESTION_CHARS)] = None
    word_limit: Annotated[int | None, Check(_word_limit, WORD_LIMIT.schema)] = None
    use_knowledge: Annotated[bool | None, Flag()] = None
    cache: Annotated[bool | None, Flag()] = None


def _by_model(schema: dict[str, Any]) -> None:
    # The grading model needs a question and material: one alternative per kind of model.
    props, required = schema.pop("properties"), schema.pop("required")
    given = {name: dict(props[name]["anyOf"][0], pattern=NOT_BLANK) for name in ("question", "material")}
    schema["oneOf"] = [
        {"type": "object", "required": required,
         "properties": {**props, "model": {"enum": [m for m in MODEL_MODES if m != GRADE_MODEL]}}},
        {"type": "object", "required": [*required, "question", "material"],
         "properties": {**props, "model": {"const": GRADE_MODEL}, **given}}]
    schema["description"] = ("OpenAI chat completions 请求；模型名选择题型模式。额外字段 material、question、word_limit"
                             "（批改模型另需 question 与 material，答案是最后一条用户消息或 answer 字段）。")


@dataclass(frozen=True)
class CompletionRequest:
    """A `/v1/chat/completions` body, translated: which service, with which payload."""

    model: str
    mode: str
    chat: ChatRequest
    grade: dict[str, Any] | None = None  # an /api/grade body, for the grading model
    stream: bool = False
    include_usage: bool = False

    @classmethod
    def from_payload(cls, payload: Any) -> CompletionRequest:
        """Validate the OpenAI-shaped parts; the chat and grade validators check the rest."""
        if isinstance(payload, dict) and payload.get("model") is None:
            raise InvalidRequest(_NO_MODEL.replace(FIELD, "model"))  # before any other field
        body = CompletionBody.parse(payload)
        history = _conversation(body.messages)
        free, sections = split_sections(history[-1]["content"])
        given = {"material": body.material, "question": body.question, "word_limit": body.word_limit,
                 "answer": payload.get("answer")}
        fields = {**sections, **{k: v for k, v in given.items() if v is not None}}
        if "word_limit" in fields:
            fields["word_limit"] = _limit_number(fields["word_limit"])
        mode = MODEL_MODES[body.model]
        # The chat validator checks what every model shares (the history, the sections)
        # against the one declaration of their bounds, grading included.
        chat = ChatRequest.from_payload(_chat_payload(mode, free, fields, history[:-1], body))
        grade = _grade_payload(free, fields, payload) if body.model == GRADE_MODEL else None
        return cls(model=body.model, mode=mode, chat=chat, grade=grade, stream=body.stream,
                   include_usage=body.stream_options.include_usage)


def _one(value: Any) -> int:
    if value != 1:
        raise refuse("{field}：只支持 1 个回答")
    return 1


def _conversation(messages: tuple[Message, ...]) -> list[dict[str, str]]:
    """User and assistant turns as plain text, ending with the last user turn.

    System turns are dropped: the exam prompts are ours, and a client's generic
    system prompt must not replace them."""
    turns = [{"role": m.role, "content": m.content} for m in messages if m.role in ("user", "assistant")]
    last_user = max((n for n, turn in enumerate(turns) if turn["role"] == "user"), default=None)
    if last_user is None:
        raise InvalidRequest("字段 messages 中至少要有一条用户消息")
    # The last user message is the question; an assistant "prefill" after it is not
    # something our answers continue from, so it is left out.
    return turns[:last_user + 1]


def _chat_payload(mode: str, free: str, fields: Mapping[str, Any], history: list[dict[str, str]],
                  body: CompletionBody) -> dict[str, Any]:
    message = free or fields.get("question") or fields.get("answer") or ("请按要求作答" if fields else "")
    out: dict[str, Any] = {
        "message": message, "messages": history, "mode": mode, "stream": body.stream,
        "material": fields.get("material"), "question": fields.get("question"),
        "word_limit": fields.get("word_limit"), "temperature": body.temperature,
        # max_completion_tokens is OpenAI's new name for max_tokens: it wins when both are given.
        "max_tokens": body.max_completion_tokens or body.max_tokens,
        "use_knowledge": body.use_knowledge, "cache": body.cache,
    }
    return {k: v for k, v in out.items() if v is not None}


def _grade_payload(free: str, fields: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    # The answer is its section, or else the message's free text.
    body = {"answer": fields.get("answer") or free, "material": fields.get("material"),
            "question": fields.get("question"), "word_limit": fields.get("word_limit"),
            **{k: data[k] for k in ("practice_id", "question_type", "full_score", "genre", "reference")
               if data.get(k) is not None}}
    return {k: v for k, v in body.items() if v is not None}


def _usage(usage: Mapping[str, int] | None) -> dict[str, int]:
    prompt = int((usage or {}).get("prompt_tokens", 0))
    completion = int((usage or {}).get("completion_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _extra(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Our answer's metadata, for the `shenlun` field."""
    keep = ("mode", "sources", "citations", "checks", "char_count", "word_limit", "over_limit", "cached",
            "unknown_citations", "offline", "notice", "server_id", "elapsed_ms")
    return {k: meta[k] for k in keep if k in meta}


class Completion:
    """Renders one answer in OpenAI's shapes, whole or as chunks of one stream."""

    def __init__(self, model: str, *, include_usage: bool = False) -> None:
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage

    def whole(self, text: str, meta: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A `chat.completion` object."""
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": _usage(meta.get("usage")),
                "shenlun": {**_extra(meta), **(extra or {})}}

    def chunk(self, delta: Mapping[str, Any], finish: str | None = None,
              extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One `chat.completion.chunk`."""
        out: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                               "model": self.model,
                               "choices": [{"index": 0, "delta": dict(delta), "finish_reason": finish}]}
        if extra:
            out["shenlun"] = dict(extra)
        return out

    def opening(self) -> dict[str, Any]:
        """The first chunk: the assistant's role, no text yet."""
        return self.chunk({"role": "assistant", "content": ""})

    def closing(self, meta: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The last chunks: `finish_reason` with our metadata, then usage when asked for."""
        chunks = [self.chunk({}, "stop", {**_extra(meta), **(extra or {})})]
        if self.include_usage:
            chunks.append({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                           "model": self.model, "choices": [], "usage": _usage(meta.get("usage"))})
        return chunks
