"""The one error type of the service.

Core code raises `ServiceError` (or a subclass) with a stable English `code` and a
Chinese `message`; `handlers/base.py` maps the code to an HTTP status and writes the
contract's error JSON. Nothing else turns exceptions into answers.
"""
from __future__ import annotations


class ServiceError(Exception):
    """An error a client may see: a stable `code` and a Chinese `message`."""

    code = "internal_error"
    message = "服务器内部错误"

    def __init__(self, message: str | None = None, *, retry_after: float | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.message = message or self.message
        self.retry_after = retry_after
        self.headers = dict(headers or {})
        super().__init__(self.message)


class InvalidJson(ServiceError):
    code = "invalid_json"
    message = "请求体不是合法的 UTF-8 JSON"


class InvalidRequest(ServiceError):
    code = "invalid_request"
    message = "请求参数不合法"


class Unauthorized(ServiceError):
    code = "unauthorized"
    message = "缺少或错误的 API 密钥"


class Forbidden(ServiceError):
    code = "forbidden"
    message = "该操作需要管理员密钥"


class NotFound(ServiceError):
    code = "not_found"
    message = "请求的资源不存在"


class PayloadTooLarge(ServiceError):
    code = "payload_too_large"
    message = "请求体过大"


class RateLimited(ServiceError):
    code = "rate_limited"
    message = "请求过于频繁，请稍后再试"


class ServerBusy(ServiceError):
    code = "server_busy"
    message = "服务器繁忙，请稍后再试"


class UpstreamError(ServiceError):
    code = "upstream_error"
    message = "大模型服务返回了错误或无法解析的结果"


class UpstreamTimeout(ServiceError):
    code = "upstream_timeout"
    message = "大模型服务响应超时"


class IndexUnavailable(ServiceError):
    code = "index_unavailable"
    message = "知识库索引正在从文档库重建，请稍后再试（文档不会丢失）"

    def __init__(self, message: str | None = None, *, retry_after: float | None = 2,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message, retry_after=retry_after, headers=headers)


class SearchTimeout(ServiceError):
    code = "search_timeout"
    message = "检索超时：这个查询匹配的内容太多，请换更具体的词，或用引号限定短语后再试"


class InsufficientStorage(ServiceError):
    code = "insufficient_storage"
    message = "数据目录所在磁盘空间已满，暂时无法写入（查询不受影响）"
