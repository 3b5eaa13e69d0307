"""Just enough YAML to read docker-compose.yml in tests (PyYAML is not a dependency).

Block mappings and sequences, plain and quoted scalars, flow sequences of scalars,
comments, anchors (&name), aliases (*name) and merge keys (<<: *name). Scalars stay
strings. Anything else raises ValueError, so the compose file stays in this subset.
"""
from __future__ import annotations

import re
from typing import Any

_ANCHOR = re.compile(r"^&([\w-]+)\s*(.*)$")


def loads(text: str) -> Any:
    lines = []
    for raw in text.splitlines():
        line = _strip_comment(raw).rstrip()
        if line.strip():
            lines.append((len(line) - len(line.lstrip(" ")), line.strip()))
    parser = _Parser(lines)
    value = parser.block(0)
    if parser.pos != len(lines):
        raise ValueError(f"unexpected line: {lines[parser.pos][1]!r}")
    return value


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _scalar(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text[:1] in "{|>!%@`":
        raise ValueError(f"unsupported YAML: {text!r}")
    return text


def _split_key(text: str) -> tuple[str, str] | None:
    match = re.match(r"^(\"[^\"]*\"|'[^']*'|[^\s:'\"][^:]*?)\s*:(?:\s+(.*))?$", text)
    if not match:
        return None
    return _scalar(match.group(1)), (match.group(2) or "")


class _Parser:
    def __init__(self, lines: list[tuple[int, str]]) -> None:
        self.lines = lines
        self.pos = 0
        self.anchors: dict[str, Any] = {}

    def block(self, indent: int) -> Any:
        if self.pos >= len(self.lines):
            return None
        ind, text = self.lines[self.pos]
        if ind < indent:
            return None
        if text.startswith("- ") or text == "-":
            return self.sequence(ind)
        return self.mapping(ind)

    def mapping(self, indent: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        while self.pos < len(self.lines):
            ind, text = self.lines[self.pos]
            if ind < indent:
                break
            if ind > indent:
                raise ValueError(f"bad indentation: {text!r}")
            pair = _split_key(text)
            if pair is None:
                raise ValueError(f"expected key: value, got {text!r}")
            key, rest = pair
            self.pos += 1
            value = self.value(rest, indent)
            if key == "<<":
                if not isinstance(value, dict):
                    raise ValueError("<< needs a mapping")
                for k, v in value.items():
                    result.setdefault(k, v)
            else:
                result[key] = value
        return result

    def sequence(self, indent: int) -> list[Any]:
        result: list[Any] = []
        while self.pos < len(self.lines):
            ind, text = self.lines[self.pos]
            if ind != indent or not (text.startswith("- ") or text == "-"):
                if ind > indent:
                    raise ValueError(f"bad indentation: {text!r}")
                break
            item = text[1:].strip()
            pair = _split_key(item) if item and item[0] not in "'\"[" else None
            if pair is not None:
                # "- key: value" opens a mapping whose keys line up after "- ".
                self.lines[self.pos] = (indent + 2, item)
                result.append(self.mapping(indent + 2))
            else:
                self.pos += 1
                result.append(self.value(item, indent))
        return result

    def value(self, rest: str, indent: int) -> Any:
        anchor = None
        match = _ANCHOR.match(rest)
        if match:
            anchor, rest = match.group(1), match.group(2)
        if rest.startswith("*"):
            name = rest[1:].strip()
            if name not in self.anchors:
                raise ValueError(f"unknown alias *{name}")
            value = self.anchors[name]
        elif rest.startswith("["):
            if not rest.endswith("]"):
                raise ValueError(f"unsupported flow sequence: {rest!r}")
            inner = rest[1:-1].strip()
            value = [_scalar(part) for part in inner.split(",")] if inner else []
        elif rest:
            value = _scalar(rest)
        else:
            nested = self.block(indent + 1)
            value = nested if nested is not None else ""
        if anchor:
            self.anchors[anchor] = value
        return value
