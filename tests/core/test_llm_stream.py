"""Reading an upstream's chat/completions event stream (core.llm.sse_deltas)."""
from __future__ import annotations

import json

import pytest

from core.errors import UpstreamError
from core.llm import Usage, sse_deltas


def event(text: str | None = None, **extra) -> bytes:
    delta = {"content": text} if text is not None else {}
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": delta}], **extra},
                                  ensure_ascii=False).encode() + b"\n\n"


async def reads(*chunks: bytes):
    for chunk in chunks:
        yield chunk


async def collect(*chunks: bytes, usage: Usage | None = None) -> list[str]:
    return [text async for text in sse_deltas(reads(*chunks), usage or Usage())]


async def test_deltas_of_one_read_go_out_together_and_a_lone_delta_at_once():
    out = await collect(event("甲") + event("乙"), event("丙"), b"data: [DONE]\n\n")
    assert out == ["甲乙", "丙", ""]


async def test_an_event_split_across_reads_is_joined_before_it_is_parsed():
    whole = event("归纳概括")
    out = await collect(whole[:9], whole[9:17], whole[17:], b"data: [DONE]\n\n")
    assert "".join(out) == "归纳概括"
    assert out[:2] == ["", ""]  # nothing complete yet: nothing made up


async def test_done_ends_the_stream_even_if_more_follows():
    assert await collect(event("甲") + b"data: [DONE]\n\n" + event("乙")) == ["甲"]


async def test_comments_other_fields_and_crlf_are_skipped():
    out = await collect(b": keep-alive\r\n\r\nevent: message\r\n" + event("甲").replace(b"\n", b"\r\n"))
    assert out == ["甲"]


async def test_usage_is_read_from_the_chunk_that_reports_it():
    usage = Usage()
    await collect(event("甲"), b'data: {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}\n\n',
                  usage=usage)
    assert (usage.prompt_tokens, usage.completion_tokens) == (7, 3)


async def test_an_error_event_mid_stream_is_an_upstream_error():
    with pytest.raises(UpstreamError):
        await collect(event("甲"), b'data: {"error": {"message": "overloaded"}}\n\n')


async def test_a_line_that_is_not_json_is_an_error_not_a_silent_gap():
    with pytest.raises(ValueError):
        await collect(b"data: {not json\n\n")
