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
from dataclasses import dataclass
from typing import Any, Mapping

from core.chat import ChatRequest
from core.errors import InvalidRequest, NotFound, error_class
from core.validation import read_bool, read_str, require_object

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
    def from_payload(cls, payload: Any) -> "CompletionRequest":
        """Validate the OpenAI-shaped parts; the chat and grade validators check the rest."""
        data = require_object(payload)
        model = data.get("model")
        if not isinstance(model, str) or not model.strip():
            raise InvalidRequest("缺少字段 model（可用：" + "、".join(MODEL_MODES) + "）")
        if model not in MODEL_MODES:
            raise NotFound(f"模型 {model[:60]} 不存在，可用：" + "、".join(MODEL_MODES))
        read_str(data, "user", max_len=MAX_USER_CHARS)
        n = data.get("n")
        if n is not None and n != 1:
            raise InvalidRequest("字段 n：只支持 1 个回答")
        history = _read_messages(data.get("messages"))
        free, sections = split_sections(history[-1]["content"])
        stream = read_bool(data, "stream", default=False)
        options = data.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise InvalidRequest("字段 stream_options 必须是对象")
        include_usage = read_bool(options or {}, "include_usage", default=False)
        fields = {**sections, **{k: data[k] for k in ("material", "question", "answer", "word_limit")
                                 if data.get(k) is not None}}
        if isinstance(fields.get("word_limit"), str):
            found = _LIMIT_NUMBER.search(fields["word_limit"])
            fields["word_limit"] = int(found.group()) if found else fields["word_limit"]
        mode = MODEL_MODES[model]
        # The chat validator checks the fields every model shares (messages, temperature,
        # max_tokens…) against the one declaration of their bounds, grading included.
        chat = ChatRequest.from_payload(_chat_payload(mode, free, fields, history[:-1], data, stream))
        grade = _grade_payload(free, fields, data) if model == GRADE_MODEL else None
        return cls(model=model, mode=mode, chat=chat, grade=grade, stream=stream,
                   include_usage=include_usage)


def _read_messages(raw: Any) -> list[dict[str, str]]:
    """User and assistant turns as plain text, ending with the last user turn.

    System turns are dropped: the exam prompts are ours, and a client's generic
    system prompt must not replace them."""
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("字段 messages 必须是非空数组")
    turns: list[dict[str, str]] = []
    for n, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InvalidRequest(f"字段 messages[{n}] 必须是对象")
        role = item.get("role")
        if role in ("system", "developer"):
            continue
        if role not in ("user", "assistant"):
            raise InvalidRequest(f"字段 messages[{n}].role 必须是 system、user 或 assistant")
        turns.append({"role": role, "content": _text_of(item.get("content"), n)})
    last_user = max((n for n, turn in enumerate(turns) if turn["role"] == "user"), default=None)
    if last_user is None:
        raise InvalidRequest("字段 messages 中至少要有一条用户消息")
    # The last user message is the question; an assistant "prefill" after it is not
    # something our answers continue from, so it is left out.
    return turns[:last_user + 1]


def _text_of(content: Any, n: int) -> str:
    """A message's text: a string, or the text parts of a content array."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequest(f"字段 messages[{n}].content：只支持文本内容")
            parts.append(part["text"])
        # A NUL can reach no answer, log or store; in a part of a content array it is
        # dropped (a whole string carrying one is refused by the chat validator).
        return "".join(parts).replace("\x00", "")
    if content is None:
        return ""
    raise InvalidRequest(f"字段 messages[{n}].content 必须是字符串或文本数组")


def _chat_payload(mode: str, free: str, fields: Mapping[str, Any], history: list[dict[str, str]],
                  data: Mapping[str, Any], stream: bool) -> dict[str, Any]:
    message = free or fields.get("question") or fields.get("answer") or ("请按要求作答" if fields else "")
    body: dict[str, Any] = {
        "message": message, "messages": history, "mode": mode, "stream": stream,
        "material": fields.get("material"), "question": fields.get("question"),
        "word_limit": fields.get("word_limit"), "temperature": data.get("temperature"),
        "max_tokens": _max_tokens(data),
        "use_knowledge": data.get("use_knowledge"), "cache": data.get("cache"),
    }
    return {k: v for k, v in body.items() if v is not None}


def _max_tokens(data: Mapping[str, Any]) -> Any:
    """`max_completion_tokens` (OpenAI's new name) if given, else `max_tokens`."""
    given = [data[k] for k in ("max_completion_tokens", "max_tokens") if data.get(k) is not None]
    if len(given) == 2:  # the one not used is still checked, by the chat validator's bound
        ChatRequest.from_payload({"message": "-", "max_tokens": given[1]})
    return given[0] if given else None


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
