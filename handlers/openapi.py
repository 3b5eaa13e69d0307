"""GET /api/openapi.json: the contract as an OpenAPI 3.1 description.

Kept true by tests: every route of the app is described with exactly the methods
it implements, and schemathesis checks live answers against these schemas.
"""
from __future__ import annotations

from typing import Any

from core import __version__
from core.auth import CLIENT
from core.chat import MAX_HISTORY_TURNS, MAX_MATERIAL_CHARS, MAX_MESSAGE_CHARS, MAX_QUESTION_CHARS
from core.grading import PracticeBank
from core.grading.practice import MAX_THEME_CHARS
from core.grading.request import (MAX_ANSWER_CHARS, MAX_MATERIAL_CHARS as GRADE_MATERIAL_CHARS, MAX_PHRASING_CHARS,
                                  MAX_PHRASINGS, MAX_POINT_LABEL, MAX_POINTS,
                                  MAX_QUESTION_CHARS as GRADE_QUESTION_CHARS, MAX_REFERENCE_CHARS)
from core.grading.rubric import TYPE_ALIASES
from core.grading.structure import GENRE_PARTS
from core.knowledge import service as kb
from core.openai_compat import GRADE_MODEL, MAX_USER_CHARS, MODEL_MODES
from core.prompts import MODE_ALIASES, MODES
from handlers.base import BaseHandler

_ERROR_STATUSES = {
    "400": "请求体不是 JSON，或字段缺失、类型错误、越界（invalid_json / invalid_request）",
    "401": "配置了密钥而未提供或提供了错误的密钥（unauthorized）",
    "403": "客户端密钥访问管理员操作（forbidden）",
    "404": "资源不存在（not_found）",
    "413": "请求体超过 MAX_BODY_BYTES（payload_too_large）",
    "429": "令牌桶已空（rate_limited），见 Retry-After",
    "502": "大模型返回错误、无法解析的内容，或无法连接（upstream_error）",
    "503": "并发已满（server_busy）、知识库索引正在重建（index_unavailable，见 Retry-After）、"
           "搜索超过时间预算（search_timeout）、健康检查失败，或清空缓存时共享存储（Redis）不可用",
    "504": "大模型超时（upstream_timeout）",
    "507": "数据目录所在磁盘已满或只读，写入被拒绝，读取不受影响（insufficient_storage）",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: str, schema: str = "Error") -> dict[str, Any]:
    return {s: _json(_ref(schema), _ERROR_STATUSES[s]) for s in statuses}


def _operation(summary: str, ok: dict[str, Any], *errors: str, secured: bool = True,
               body: dict[str, Any] | None = None, params: list[dict[str, Any]] | None = None,
               extra: dict[str, Any] | None = None, error_schema: str = "Error") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**ok, **_errors(*errors, schema=error_schema)}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    if not secured:
        op["security"] = []
    op.update(extra or {})
    return op


def _query(name: str, schema: dict[str, Any], required: bool = False, description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


_STR = {"type": "string"}
_INT = {"type": "integer"}
_NUM = {"type": "number"}
_BOOL = {"type": "boolean"}
_STRS = {"type": "array", "items": _STR}


# What Python's str.strip() removes (the validators' notion of blank), which is not
# JSON Schema's \s: \x1c-\x1f and \x85 are blank to Python, \ufeff is not.
_PY_SPACE = ("\\t\\n\\u000b\\f\\r\\u001c-\\u001f \\u0085\\u00a0\\u1680\\u2000-\\u200a"
             "\\u2028\\u2029\\u202f\\u205f\\u3000")


def _text(max_len: int, *, required: bool = False) -> dict[str, Any]:
    """A string field as core.validation reads it: no NUL; when required, not blank."""
    pattern = f"^[^\\u0000]*[^\\u0000{_PY_SPACE}][^\\u0000]*$" if required else "^[^\\u0000]*$"
    return {"type": "string", "maxLength": max_len, "pattern": pattern}


_CONSOLE_PAGE = {"200": {"description": "网页控制台（HTML）", "content": {"text/html": {"schema": _STR}}}}
# A client that follows the redirect gets the page itself.
_TO_CONSOLE = {"302": {"description": "跳转到 /console/（Location 头）"}, **_CONSOLE_PAGE}
CONSOLE_PATHS = {  # the web console's pages (docs/console.md)
    "/": {"get": _operation("跳转到网页控制台", _TO_CONSOLE, secured=False)},
    "/console": {"get": _operation("跳转到网页控制台", _TO_CONSOLE, secured=False)},
    "/console/": {"get": _operation("网页控制台", _CONSOLE_PAGE, secured=False)},
    "/static/{doc_id}": {"get": _operation(
        "控制台的静态文件（带 ?v= 哈希时长期缓存）",
        {"200": {"description": "JavaScript、CSS 或 SVG", "content": {"*/*": {"schema": _STR}}}}, "404",
        secured=False, params=[{"name": "doc_id", "in": "path", "required": True, "description": "static/ 下的文件路径",
                                "schema": {"type": "string", "pattern": "^console/[a-z]+\\.(js|css|svg)$"}}])},
}


def _phrase(max_len: int) -> dict[str, Any]:
    """A phrasing as core.grading.request reads it: 2 to max_len characters once stripped."""
    return {"type": "string", "maxLength": max_len, "pattern": "^\\s*[^\\s\\u0000][^\\u0000]*[^\\s\\u0000]\\s*$"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["code", "message", "status", "request_id"],
            "properties": {"code": _STR, "message": _STR, "status": _INT, "request_id": _STR}}},
    },
    "ChatRequest": {
        "type": "object", "required": ["message"],
        "description": "只有 message 必填；也可以省略 message，让 messages 以一条 user 消息结尾。"
                       "可选字段为 null 时按未提供处理。",
        "properties": {
            "message": _text(MAX_MESSAGE_CHARS, required=True),
            "messages": _nullable({"type": "array", "maxItems": MAX_HISTORY_TURNS, "items": {
                "type": "object", "required": ["role", "content"],
                "properties": {"role": {"enum": ["user", "assistant"]},
                               "content": _text(MAX_MESSAGE_CHARS, required=True)}}}),
            "mode": _nullable({"enum": list(MODE_ALIASES),
                               "description": "题型模式：英文键或中文名（概括、分析、对策、应用文、文章、批改……）"}),
            "material": _nullable(_text(MAX_MATERIAL_CHARS)),
            "question": _nullable(_text(MAX_QUESTION_CHARS)),
            "word_limit": _nullable({"type": "integer", "minimum": 10, "maximum": 10000}),
            "use_knowledge": _nullable(_BOOL), "stream": _nullable(_BOOL), "cache": _nullable(_BOOL),
            "temperature": _nullable({"type": "number", "minimum": 0, "maximum": 2}),
            "max_tokens": _nullable({"type": "integer", "minimum": 1, "maximum": 8192}),
        },
    },
    "Source": {"type": "object", "required": ["id", "title", "score", "snippet"],
               "properties": {"id": _STR, "title": _STR, "score": _NUM, "snippet": _STR}},
    "ChatAnswer": {
        "type": "object",
        "required": ["id", "answer", "mode", "model", "sources", "cached", "char_count", "usage",
                     "server_id", "elapsed_ms"],
        "properties": {
            "id": _STR, "answer": _STR, "mode": {"enum": list(MODES)}, "model": _STR,
            "sources": {"type": "array", "items": _ref("Source")}, "cached": _BOOL,
            "char_count": _INT, "word_limit": {"type": ["integer", "null"]}, "over_limit": _BOOL,
            "unknown_citations": {"type": "array", "items": _INT},
            "citations": {"type": "array", "description": "答题模式：第 sentence 行（从 1 起）依据的 sources 编号",
                          "items": {"type": "object", "properties": {"sentence": _INT,
                                                                     "sources": {"type": "array", "items": _INT}}}},
            "checks": {"type": "object", "description": "答题模式的自检：字数区间、要点数、文种格式、是否改写过"},
            "offline": _BOOL, "notice": _STR,
            "usage": {"type": "object", "properties": {"prompt_tokens": _INT, "completion_tokens": _INT}},
            "server_id": _STR, "elapsed_ms": _NUM,
        },
    },
    "ChatEvent": {
        "description": "流式回答中的一个 SSE 事件：先 event: sources（用了知识库时），再若干无名事件（data 为"
                       " {\"delta\": …}），最后 event: done（回答对象去掉 answer）。第一段输出之后出错为 event: error；"
                       "之前出错（如大模型无法连接）则不是事件流，而是普通的错误 JSON（502/503/504）。",
        "type": "object", "required": ["data"],
        "properties": {
            "event": {"enum": ["message", "sources", "done", "error"]},
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": {"anyOf": [
                {"type": "object", "required": ["delta"], "properties": {"delta": _STR}},
                {"type": "object", "required": ["sources"],
                 "properties": {"sources": {"type": "array", "items": _ref("Source")}}},
                {"type": "object", "required": ["id", "mode", "model", "char_count", "server_id"]},
                _ref("Error"),
            ]}},
        },
    },
    "SearchAnswer": {
        "type": "object", "required": ["query", "total", "took_ms", "results"],
        "properties": {"query": _STR, "total": _INT, "took_ms": _NUM, "results": {"type": "array", "items": {
            "type": "object", "required": ["id", "title", "category", "tags", "score", "snippet"],
            "properties": {"id": _STR, "title": _STR, "category": _STR, "tags": _STRS, "score": _NUM,
                           "snippet": _STR}}}},
    },
    "NewDocument": {
        "type": "object", "required": ["title", "content"],
        "properties": {
            "id": _nullable({"type": "string", "pattern": "^([A-Za-z0-9][A-Za-z0-9._:\\-]{0,127})?$",
                             "not": {"enum": ["search", "add"]},
                             "description": "省略或为空时自动生成；已存在则替换"}),
            "title": _text(kb.MAX_TITLE_CHARS, required=True),
            "content": _text(kb.MAX_CONTENT_CHARS, required=True),
            "category": _nullable(_text(kb.MAX_CATEGORY_CHARS)),
            "tags": {"anyOf": [
                {"type": "array", "maxItems": kb.MAX_TAGS,
                 "items": {"type": "string", "maxLength": kb.MAX_TAG_CHARS, "pattern": "^[^,\\u0000]*$"}},
                {"type": "string", "description": "逗号分隔的标签", "pattern": "^[^\\u0000]*$",
                 "maxLength": kb.MAX_TAG_CHARS},
                {"type": "null"}]},
            "source": _nullable(_text(kb.MAX_SOURCE_CHARS)),
        },
    },
    "Document": {
        "type": "object", "required": ["id", "title", "content"],
        "properties": {"id": _STR, "title": _STR, "content": _STR, "category": _STR, "tags": _STRS,
                       "source": _STR},
    },
    "DocumentList": {
        "type": "object", "required": ["total", "limit", "offset", "documents"],
        "properties": {"total": _INT, "limit": _INT, "offset": _INT, "documents": {"type": "array", "items": {
            "type": "object", "required": ["id", "title", "category", "tags", "updated_at"],
            "properties": {"id": _STR, "title": _STR, "category": _STR, "tags": _STRS, "updated_at": _STR}}}},
    },
    "Added": {"type": "object", "required": ["added", "ids"],
              "properties": {"added": _INT, "ids": _STRS}},
    "Health": {
        "type": "object", "required": ["status", "server_id", "pid", "version", "uptime_s", "checks"],
        "properties": {"status": {"enum": ["ok", "fail"]}, "server_id": _STR, "pid": _INT, "version": _STR,
                       "uptime_s": _NUM, "draining": _BOOL, "disk_free_bytes": _INT, "documents": _INT,
                       "checks": {"type": "object", "required": ["disk", "cache", "index", "store", "llm"],
                                  "properties": {"store": {"enum": ["ok", "degraded"]},
                                                 "disk": {"enum": ["ok", "full", "read_only"]}},
                                  "additionalProperties": _STR},
                       "llm": {"type": "object", "required": ["provider", "state", "since"],
                               "description": "大模型上游最近一次真实调用的结果（/health 自己不调用大模型）",
                               "properties": {"provider": {"enum": ["openai", "offline"]},
                                              "state": {"enum": ["unknown", "ok", "failing"]},
                                              "since": {"type": ["string", "null"]},
                                              "error": {"type": ["string", "null"]},
                                              "message": {"type": ["string", "null"]}}}},
    },
    "Metrics": {
        "type": "object",
        "required": ["total_requests", "concurrent_requests", "cache_hit_rate", "rate_limited_requests",
                     "average_response_time", "cache_size", "server_id", "uptime_s", "memory_rss_bytes",
                     "cpu_percent"],
        "properties": {"total_requests": _INT, "concurrent_requests": _INT, "cache_hit_rate": _NUM,
                       "rate_limited_requests": _INT, "average_response_time": _NUM, "cache_size": _INT,
                       "server_id": _STR, "uptime_s": _NUM, "memory_rss_bytes": _INT, "cpu_percent": _NUM,
                       "history": {"type": "array", "description": "最近 15 分钟的 [时间, 总请求数, p95 毫秒, 错误数]",
                                   "items": {"type": "array", "items": _NUM, "minItems": 4, "maxItems": 4}}},
    },
    "FleetMetrics": {
        "type": "object", "required": ["scope", "instances", "totals", "servers"],
        "properties": {"scope": {"const": "fleet"}, "instances": _INT, "totals": {"type": "object"},
                       "servers": {"type": "array", "items": _ref("Metrics")},
                       "degraded": _BOOL},
    },
}

# Grading and practice (issue 8). The practice and paper ids are the bundled ones, so that a
# schema-valid body is one the service accepts.
_BANK = PracticeBank.load()
PRACTICE_IDS = [item.id for item in _BANK.list()]
PAPER_IDS = [paper.id for paper in _BANK.papers()]
POINT_SOURCES = ["request", "practice", "reference", "material", "none"]
GRADING_SCHEMAS = {
    "GradeRequest": {
        "type": "object", "required": ["answer"],
        "description": "answer 必填；不带 practice_id 时 question 与 material（或 reference、scoring_points）也必填。"
                       "可选字段为 null 时按未提供处理。",
        "anyOf": [
            {"required": ["practice_id"], "properties": {"practice_id": {"enum": PRACTICE_IDS}}},
            {"required": ["question", "material"],
             "properties": {"question": _text(GRADE_QUESTION_CHARS, required=True),
                            "material": _text(GRADE_MATERIAL_CHARS, required=True)}},
            {"required": ["question", "reference"],
             "properties": {"question": _text(GRADE_QUESTION_CHARS, required=True),
                            "reference": _text(MAX_REFERENCE_CHARS, required=True)}},
            {"required": ["question", "scoring_points"],
             "properties": {"question": _text(GRADE_QUESTION_CHARS, required=True),
                            "scoring_points": {"type": "array"}}},
        ],
        "properties": {
            "answer": _text(MAX_ANSWER_CHARS, required=True),
            "practice_id": _nullable({"enum": PRACTICE_IDS}),
            "question": _nullable(_text(GRADE_QUESTION_CHARS)),
            "material": _nullable(_text(GRADE_MATERIAL_CHARS)),
            "reference": _nullable(_text(MAX_REFERENCE_CHARS)),
            "question_type": _nullable({"enum": sorted(TYPE_ALIASES)}),
            "genre": _nullable({"enum": list(GENRE_PARTS)}),
            "full_score": _nullable({"type": "integer", "minimum": 1, "maximum": 100}),
            "word_limit": _nullable({"type": "integer", "minimum": 10, "maximum": 10000}),
            "scoring_points": _nullable({
                "type": "array", "minItems": 1, "maxItems": MAX_POINTS, "items": _ref("ScoringPointIn"),
                "description": "教师自己的评分细则，代替程序提取的得分点（points_source 为 request）；"
                               "score 为各点的相对分值，至少一个 dimension 为 points 的得分点。",
                "contains": {"anyOf": [{"not": {"required": ["dimension"]}},
                                       {"properties": {"dimension": {"enum": ["points", None]}}}]}}),
        },
    },
    "ScoringPointIn": {
        "type": "object", "required": ["label", "score"],
        "properties": {
            "label": _text(MAX_POINT_LABEL, required=True),
            "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
            "phrasings": _nullable({"type": "array", "maxItems": MAX_PHRASINGS, "items": _phrase(MAX_PHRASING_CHARS),
                                    "description": "同义表述：任一表述原样出现或其核心词都写到即命中"}),
            "keywords": _nullable({"type": "array", "maxItems": MAX_PHRASINGS, "items": _phrase(MAX_PHRASING_CHARS),
                                   "description": "关键词组：按覆盖比例判定（两个以上关键词才算部分命中）"}),
            "dimension": _nullable({"enum": ["points", "theme"]}),
        },
    },
    "GradeCap": {
        "type": "object", "required": ["rule", "limit", "deduct", "reason"],
        "properties": {"rule": {"enum": ["审题", "文种", "字数", "照抄", "类卷"]},
                       "limit": {"type": ["number", "null"]}, "deduct": _NUM, "reason": _STR},
    },
    "GradeDimension": {
        "type": "object", "required": ["key", "name", "score", "max", "comment", "source"],
        "properties": {"key": {"enum": ["points", "structure", "language", "format", "theme"]},
                       "name": _STR, "score": _NUM, "max": _NUM, "comment": _STR,
                       "source": {"enum": ["rules", "llm"]}},
    },
    "GradePoint": {
        "type": "object", "required": ["id", "label", "dimension", "status", "score", "max", "evidence"],
        "properties": {"id": _STR, "label": _STR, "dimension": {"enum": ["points", "theme"]},
                       "status": {"enum": ["hit", "partial", "missed"]}, "score": _NUM, "max": _NUM,
                       "evidence": _STRS, "judged_by": _STR, "note": _STR,
                       "material_quote": {"type": "string",
                                          "description": "程序提取的得分点所依据的资料（或参考答案）原句"}},
    },
    "Grade": {
        "type": "object",
        "required": ["id", "simulated", "notice", "grader", "model", "rubric", "prompt_version",
                     "question_type", "score", "full_score", "dimensions", "points_hit", "points_missed",
                     "char_count", "word_limit", "over_limit", "structure_checks", "suggestions",
                     "improved_answer", "deterministic", "usage", "server_id", "elapsed_ms"],
        "properties": {
            "id": _STR, "simulated": {"const": True}, "notice": _STR,
            "grader": {"enum": ["llm+rules", "rules"]}, "model": _STR,
            "rubric": {"type": "object", "required": ["id", "source", "version", "point_count"],
                       "properties": {"id": _STR, "source": {"enum": POINT_SOURCES},
                                      "version": _STR, "point_count": _INT}},
            "points_source": {"enum": POINT_SOURCES},
            "full_score_source": {"enum": ["request", "practice", "question", "default"]},
            "word_limit_source": {"enum": ["request", "practice", "question", None]},
            "word_floor": {"type": ["integer", "null"]},
            "caps": {"type": "array", "items": _ref("GradeCap")},
            "essay_class": {"enum": ["一类卷", "二类卷", "三类卷", "四类卷", None]},
            "task": {"type": ["object", "null"], "properties": {
                "asked": {"type": ["string", "null"]}, "given": {"type": ["string", "null"]}, "mismatch": _BOOL}},
            "answer_genre": {"type": ["string", "null"]},
            "prompt_version": {"type": ["string", "null"]},
            "practice_id": {"type": ["string", "null"]},
            "question_type": {"enum": ["summarize", "analyze", "countermeasure", "document", "essay"]},
            "question_type_label": _STR,
            "question_type_source": {"enum": ["given", "practice", "question", "default"]},
            "genre": {"type": ["string", "null"]},
            "score": _NUM, "full_score": _NUM,
            "dimensions": {"type": "array", "items": _ref("GradeDimension")},
            "points_hit": {"type": "array", "items": _ref("GradePoint")},
            "points_missed": {"type": "array", "items": _ref("GradePoint")},
            "char_count": _INT, "word_limit": {"type": ["integer", "null"]}, "over_limit": _BOOL,
            "structure_checks": {"type": "array", "items": {
                "type": "object", "required": ["key", "name", "passed", "detail"],
                "properties": {"key": _STR, "name": _STR, "passed": _BOOL, "detail": _STR, "dimension": _STR}}},
            "overall_comment": _STR, "suggestions": _STRS,
            "improved_answer": _STR, "improved_answer_char_count": _INT, "improved_answer_limit": _INT,
            "improved_answer_source": {"enum": ["llm", "reference", "outline"]},
            "improved_answer_note": {"type": ["string", "null"]},
            "deterministic": {"type": "object", "required": ["score", "dimensions", "points"]},
            "repairs": _STRS,
            "usage": {"type": "object", "properties": {"prompt_tokens": _INT, "completion_tokens": _INT}},
            "server_id": _STR, "elapsed_ms": _NUM,
        },
    },
    "PracticeSummary": {
        "type": "object",
        "required": ["id", "title", "question_type", "question_type_label", "question", "word_limit", "full_score"],
        "properties": {"id": _STR, "title": _STR,
                       "question_type": {"enum": ["summarize", "analyze", "countermeasure", "document", "essay"]},
                       "question_type_label": _STR, "genre": {"type": ["string", "null"]}, "question": _STR,
                       "word_limit": _INT, "full_score": _INT, "material_chars": _INT,
                       "scoring_point_count": _INT, "tags": _STRS},
    },
    "PracticeItem": {
        "allOf": [_ref("PracticeSummary"), {
            "type": "object", "required": ["material", "reference_answer", "scoring_points"],
            "properties": {"material": _STR, "reference_answer": _STR, "note": _STR,
                           "scoring_points": {"type": "array", "items": {
                               "type": "object", "required": ["id", "label", "score", "phrasings"],
                               "properties": {"id": _STR, "label": _STR, "score": _NUM, "phrasings": _STRS,
                                              "dimension": {"enum": ["points", "theme"]}}}}}}],
    },
}
SCHEMAS.update(GRADING_SCHEMAS)

# The OpenAI-compatible door (/v1). Bounds are the /api/chat ones: the same validators run.
_V1_PART = {"type": "object", "required": ["type", "text"],
            "properties": {"type": {"const": "text"},
                           "text": _text(MAX_MESSAGE_CHARS // 8, required=True)}}
_V1_CONTENT = {"anyOf": [_text(MAX_MESSAGE_CHARS, required=True),
                         {"type": "array", "minItems": 1, "maxItems": 8, "items": _V1_PART}]}
_V1_MESSAGE = {"type": "object", "required": ["role", "content"],
               "properties": {"role": {"enum": ["system", "developer", "user", "assistant"]},
                              "content": _V1_CONTENT}}
_V1_COMMON = {
    "messages": {"type": "array", "minItems": 1, "maxItems": MAX_HISTORY_TURNS, "items": _V1_MESSAGE,
                 "contains": {"type": "object", "properties": {"role": {"const": "user"}}},
                 "description": "最后一条用户消息是问题（可按【资料】【题目】【字数】分节），之前的是对话历史；"
                                "system 消息被忽略（使用申论助手自己的提示词）"},
    "stream": _nullable(_BOOL),
    "stream_options": _nullable({"type": "object", "properties": {"include_usage": _nullable(_BOOL)}}),
    "temperature": _nullable({"type": "number", "minimum": 0, "maximum": 2}),
    "max_tokens": _nullable({"type": "integer", "minimum": 1, "maximum": 8192}),
    "max_completion_tokens": _nullable({"type": "integer", "minimum": 1, "maximum": 8192}),
    "n": _nullable({"const": 1}), "user": _nullable(_text(MAX_USER_CHARS)),
    "material": _nullable(_text(MAX_MATERIAL_CHARS)),
    "word_limit": _nullable({"type": "integer", "minimum": 10, "maximum": 10000}),
}
V1_SCHEMAS = {
    "OpenAIError": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["message", "type", "code", "param"],
                                 "properties": {"message": _STR, "type": _STR, "code": _STR,
                                                "param": {"type": ["string", "null"]}}}},
    },
    "ChatCompletionRequest": {
        "description": "OpenAI chat completions 请求；模型名选择题型模式。额外字段 material、question、word_limit"
                       "（批改模型另需 question 与 material，答案是最后一条用户消息或 answer 字段）。",
        "oneOf": [
            {"type": "object", "required": ["model", "messages"],
             "properties": {"model": {"enum": [m for m in MODEL_MODES if m != GRADE_MODEL]}, **_V1_COMMON,
                            "question": _nullable(_text(MAX_QUESTION_CHARS))}},
            {"type": "object", "required": ["model", "messages", "question", "material"],
             "properties": {"model": {"const": GRADE_MODEL}, **_V1_COMMON,
                            "question": _text(GRADE_QUESTION_CHARS, required=True),
                            "material": _text(GRADE_MATERIAL_CHARS, required=True)}},
        ],
    },
    "ChatCompletion": {
        "type": "object", "required": ["id", "object", "created", "model", "choices", "usage", "shenlun"],
        "properties": {
            "id": _STR, "object": {"const": "chat.completion"}, "created": _INT, "model": _STR,
            "choices": {"type": "array", "items": {
                "type": "object", "required": ["index", "message", "finish_reason"],
                "properties": {"index": _INT, "finish_reason": _STR, "message": {
                    "type": "object", "required": ["role", "content"],
                    "properties": {"role": {"const": "assistant"}, "content": _STR}}}}},
            "usage": {"type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
                      "properties": {"prompt_tokens": _INT, "completion_tokens": _INT, "total_tokens": _INT}},
            "shenlun": {"type": "object", "description": "申论助手的附加信息：sources、char_count、over_limit、"
                                                          "cached；批改模型另有 grade"},
        },
    },
    "ChatCompletionChunk": {
        "description": "流式回答：若干 data: {chat.completion.chunk}，最后一个带 finish_reason 与 shenlun，"
                       "stream_options.include_usage 时再有一个只带 usage 的块，然后 data: [DONE]；出错时 data: {error}。",
        "type": "object", "required": ["data"],
        "properties": {"data": _STR},
    },
    "ModelList": {
        "type": "object", "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {
            "type": "object", "required": ["id", "object", "created", "owned_by"],
            "properties": {"id": {"enum": list(MODEL_MODES)}, "object": {"const": "model"},
                           "created": _INT, "owned_by": _STR}}}},
    },
}
SCHEMAS.update(V1_SCHEMAS)
V1_PATHS = {
    "/v1/chat/completions": {"post": _operation(
        "OpenAI 兼容的对话接口（整段或流式）", {
            "200": {"description": "chat.completion；`stream: true` 时为 text/event-stream", "content": {
                "application/json": {"schema": _ref("ChatCompletion")},
                "text/event-stream": {"schema": _ref("ChatCompletionChunk")}}}},
        "400", "401", "404", "413", "429", "502", "503", "504", body=_ref("ChatCompletionRequest"),
        error_schema="OpenAIError")},
    "/v1/models": {"get": _operation(
        "可用模型（即题型模式）", {"200": _json(_ref("ModelList"), "模型列表")}, "401", error_schema="OpenAIError")},
}

PRACTICE_ID = {"name": "doc_id", "in": "path", "required": True,
               "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{1,63}$"}}

GRADING_PATHS = {
    "/api/grade": {"post": _operation(
        "批改考生答案（模拟评分：要点、维度分、修改建议、示范答案）", {"200": _json(_ref("Grade"), "评分结果")},
        "400", "401", "413", "429", "502", "503", "504", body=_ref("GradeRequest"))},
    "/api/practice": {"get": _operation(
        "练习题列表（不含资料与参考答案），可按题型、文种、主题、套卷筛选", {"200": _json(
            {"type": "object", "required": ["total", "items", "papers"],
             "properties": {"total": _INT, "items": {"type": "array", "items": _ref("PracticeSummary")},
                            "papers": {"type": "array", "items": {
                                "type": "object",
                                "required": ["id", "title", "total_minutes", "reading_minutes", "questions"],
                                "properties": {"id": _STR, "title": _STR, "exam": _STR, "total_minutes": _INT,
                                               "reading_minutes": _INT, "full_score": _INT,
                                               "question_count": _INT, "questions": {"type": "array"}}}}}},
            "练习题")}, "400", "401",
        params=[_query("type", {"enum": sorted(TYPE_ALIASES)}, description="题型（英文键或 概括/分析/对策/应用文/文章）"),
                _query("genre", {"enum": list(GENRE_PARTS)}, description="应用文文种（倡议书、公开信、讲话稿……）"),
                _query("theme", {"type": "string", "maxLength": MAX_THEME_CHARS},
                       description="主题：标签或标题中含有的词（如 养老、人工智能）；空白为不筛选"),
                _query("paper", {"enum": PAPER_IDS}, description="套卷编号：按题号列出该套卷的题目")])},
    "/api/practice/{doc_id}": {"get": _operation(
        "一道练习题（资料、题目、参考答案、评分要点）", {"200": _json(_ref("PracticeItem"), "练习题")},
        "401", "404", params=[PRACTICE_ID])},
}


DOC_ID = {"name": "doc_id", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:\\-]{0,127}$"}}


def build_spec() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the service."""
    paths: dict[str, Any] = {
        "/api/chat": {"post": _operation(
            "申论问答（整段或流式）", {
                "200": {"description": "回答；`stream: true` 时为 text/event-stream", "content": {
                    "application/json": {"schema": _ref("ChatAnswer")},
                    "text/event-stream": {"schema": _ref("ChatEvent")}}}},
            "400", "401", "413", "429", "502", "503", "504", body=_ref("ChatRequest"))},
        "/api/knowledge": {"get": _operation(
            "文档列表（分页，最近更新的在前；不含正文）", {"200": _json(_ref("DocumentList"), "一页文档")},
            "400", "401", "429",
            params=[_query("limit", {"type": "integer", "minimum": 1, "maximum": kb.MAX_LIST_LIMIT}),
                    _query("offset", {"type": "integer", "minimum": 0, "maximum": kb.MAX_LIST_OFFSET}),
                    _query("category", {"type": "string", "maxLength": kb.MAX_CATEGORY_CHARS},
                           description="只列出该分类的文档")])},
        "/api/knowledge/search": {"get": _operation(
            "知识库中文关键词搜索", {"200": _json(_ref("SearchAnswer"), "搜索结果")}, "400", "401", "429", "503",
            params=[_query("q", {"type": "string", "maxLength": kb.MAX_QUERY_CHARS,
                                 # Tornado drops control characters from query arguments.
                                 "pattern": "[^\\s\\u0000-\\u001f\\u007f]"}, True,
                           "关键词，空格分隔（默认任一词命中，都命中的排前）；加英文双引号为短语"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": kb.MAX_LIMIT}),
                    _query("offset", {"type": "integer", "minimum": 0, "maximum": kb.MAX_OFFSET}),
                    _query("category", {"type": "string", "maxLength": kb.MAX_CATEGORY_CHARS}),
                    _query("tag", {"type": "string", "maxLength": kb.MAX_TAG_CHARS}),
                    _query("mode", {"enum": ["or", "and"]})])},
        "/api/knowledge/add": {"post": _operation(
            "添加或替换文档（管理员）", {"201": _json(_ref("Added"), "已写入")}, "400", "401", "403", "413", "429", "503", "507",
            body={"oneOf": [_ref("NewDocument"), {"type": "object", "required": ["documents"], "properties": {
                "documents": {"type": "array", "minItems": 1, "maxItems": kb.MAX_BATCH, "items": _ref("NewDocument")}}}]})},
        "/api/knowledge/{doc_id}": {
            "get": _operation("读取文档", {"200": _json(_ref("Document"), "文档")}, "401", "404", "429",
                              params=[DOC_ID]),
            "delete": _operation("删除文档（管理员）", {"200": _json(
                {"type": "object", "required": ["deleted"], "properties": {"deleted": _STR}}, "已删除")},
                "401", "403", "404", "429", "503", "507", params=[DOC_ID]),
        },
        "/api/cache/clear": {"post": _operation(
            "清空共享缓存（管理员）", {"200": _json({"type": "object", "required": ["cleared"],
                                            "properties": {"cleared": _INT}}, "清除的条目数")}, "401", "403", "503")},
        "/api/metrics": {"get": _operation(
            "本实例或整机指标（scope=fleet 需管理员）",
            {"200": _json({"oneOf": [_ref("Metrics"), _ref("FleetMetrics")]}, "指标")}, "400", "401", "403", "404",
            params=[_query("scope", {"enum": ["instance", "fleet"]})])},
        "/metrics": {"get": _operation(
            "Prometheus 文本格式指标", {"200": {"description": "text/plain; version=0.0.4",
                                          "content": {"text/plain": {"schema": _STR}}}}, "404", secured=False)},
        "/health": {"get": _operation(
            "健康检查", {"200": _json(_ref("Health"), "正常"), "503": _json(_ref("Health"), "某项检查失败")},
            "404", secured=False)},
        **GRADING_PATHS,
        **V1_PATHS,
        **CONSOLE_PATHS,
        "/api/openapi.json": {"get": _operation(
            "本文档", {"200": _json({"type": "object"}, "OpenAPI 3.1")}, "401")},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "申论助手 API", "version": __version__,
                 "description": "见 docs/api.md。/api/* 的错误均为 Error 形状，/v1/* 的错误为 OpenAI 的 OpenAIError 形状。"},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"apiKey": []}, {}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
    }


class OpenAPIHandler(BaseHandler):
    auth = {"GET": CLIENT}
    _spec: dict[str, Any] | None = None

    def get(self) -> None:
        if OpenAPIHandler._spec is None:
            OpenAPIHandler._spec = build_spec()
        self.write_json(OpenAPIHandler._spec)


default_handlers = [(r"/api/openapi.json", OpenAPIHandler)]
