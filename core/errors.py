"""The one error catalogue of the service.

Every error a client may see is a `ServiceError` subclass declaring, once, its stable
English `code`, its HTTP `status`, its default Chinese `message` and the `type` an
OpenAI client expects on `/v1/*`. `handlers/base.py` (status of a code, Tornado's own
errors), the OpenAPI error responses, the `/v1` error shape and the error table of
docs/api.md (checked by tests/test_docs.py) are all read from `CATALOGUE`. The status
is a plain int: core knows no HTTP framework, only the number the contract names.
"""
from __future__ import annotations

from typing import ClassVar

CATALOGUE: dict[str, type[ServiceError]] = {}  # code → class, in declaration order


class ServiceError(Exception):
    """An error a client may see: a stable `code`, its `status` and a Chinese `message`."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    message = "服务器内部错误"
    openai_type: ClassVar[str] = "api_error"  # OpenAI SDKs pick their exception by status

    def __init__(self, message: str | None = None, *, retry_after: float | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.message = message or self.message
        self.retry_after = retry_after
        self.headers = dict(headers or {})
        super().__init__(self.message)

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.code in CATALOGUE and CATALOGUE[cls.code] is not cls:
            raise TypeError(f"error code {cls.code} is declared twice")
        CATALOGUE[cls.code] = cls


CATALOGUE[ServiceError.code] = ServiceError


def error_class(code: str) -> type[ServiceError]:
    """The catalogue's class of `code` (internal_error for an unknown one)."""
    return CATALOGUE.get(code, ServiceError)


def for_status(status: int) -> type[ServiceError]:
    """The first-declared class of `status`, for errors raised outside our code
    (Tornado's 404/405, a malformed request); internal_error for any other status."""
    return next((cls for cls in CATALOGUE.values() if cls.status == status), ServiceError)


# Order matters only within a status: the first is the one `for_status` answers.

class InvalidRequest(ServiceError):
    code, status, message = "invalid_request", 400, "请求格式或参数不正确"
    openai_type = "invalid_request_error"


class InvalidJson(ServiceError):
    code, status, message = "invalid_json", 400, "请求体不是合法的 UTF-8 JSON"
    openai_type = "invalid_request_error"


class Unauthorized(ServiceError):
    code, status, message = "unauthorized", 401, "缺少或错误的 API 密钥"
    openai_type = "authentication_error"


class Forbidden(ServiceError):
    code, status, message = "forbidden", 403, "该操作需要管理员密钥"
    openai_type = "permission_error"


class NotFound(ServiceError):
    code, status, message = "not_found", 404, "请求的资源不存在"
    openai_type = "not_found_error"


class MethodNotAllowed(ServiceError):
    code, status, message = "method_not_allowed", 405, "不支持该请求方法"
    openai_type = "invalid_request_error"


class PayloadTooLarge(ServiceError):
    code, status, message = "payload_too_large", 413, "请求体过大"
    openai_type = "invalid_request_error"


class RateLimited(ServiceError):
    code, status, message = "rate_limited", 429, "请求过于频繁，请稍后再试"
    openai_type = "rate_limit_error"


class UpstreamError(ServiceError):
    code, status, message = "upstream_error", 502, "大模型服务返回了错误或无法解析的结果"
    UNREACHABLE = "无法连接大模型服务"
    EMPTY = "大模型服务返回了空回答"

    @classmethod
    def http(cls, status: int) -> UpstreamError:
        """The upstream answered an HTTP error status."""
        return cls(f"大模型服务返回错误（HTTP {status}）")


class ServerBusy(ServiceError):
    code, status, message = "server_busy", 503, "服务器繁忙，请稍后再试"


class IndexUnavailable(ServiceError):
    code, status, message = "index_unavailable", 503, "知识库索引正在从文档库重建，请稍后再试（文档不会丢失）"

    def __init__(self, message: str | None = None, *, retry_after: float | None = 2,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message, retry_after=retry_after, headers=headers)


class SearchTimeout(ServiceError):
    code, status = "search_timeout", 503
    message = "检索超时：这个查询匹配的内容太多，请换更具体的词，或用引号限定短语后再试"


class UpstreamTimeout(ServiceError):
    code, status, message = "upstream_timeout", 504, "大模型服务响应超时"


class InsufficientStorage(ServiceError):
    code, status, message = "insufficient_storage", 507, "数据目录所在磁盘空间已满，暂时无法写入（查询不受影响）"
