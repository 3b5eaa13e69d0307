#!/usr/bin/env python3
"""Import a folder of documents into the knowledge store, then rebuild the search index.

    python scripts/reindex.py [--source DIR] [--data-dir DIR] [--no-import] [--if-empty] [--procs N]

Files (searched recursively, in name order):
  *.md     optional front matter between two '---' lines: id, title, category,
           tags (comma separated), source; the rest is the content. Without a title,
           the first '# heading' line (or else the file name) is the title.
  *.txt    title = file name without extension; category = the folder it is in.
  *.jsonl  one document per line: {"id", "title", "content", "category", "tags", "source"}.
A document without an id gets one derived from its path (and line), so importing the same
folder again updates those documents instead of duplicating them. Documents added through
the API are kept: the index is rebuilt from the WHOLE store, into a new directory, and
switched atomically while the servers keep answering (see core/knowledge/index.py).

Settings come from the environment (DATA_DIR) through core.config.Settings.
Exit status: 0 done (skipped files are reported), 1 the rebuild failed, 2 bad arguments.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.config import ConfigError, Settings  # noqa: E402
from core.errors import InvalidRequest  # noqa: E402
from core.knowledge import analyzer  # noqa: E402
from core.knowledge.index import rebuild  # noqa: E402
from core.knowledge.service import parse_document  # noqa: E402
from core.knowledge.store import Document, DocumentStore  # noqa: E402

SUFFIXES = (".md", ".txt", ".jsonl")


class SourceError(ValueError):
    """A file that cannot be imported; the message says where and why."""


def _path_id(rel: str) -> str:
    return "f-" + hashlib.sha1(rel.encode("utf-8")).hexdigest()[:16]


def _folder_category(path: Path, source: Path) -> str:
    parent = path.parent
    return "" if parent == source else parent.name


def parse_front_matter(text: str) -> tuple[dict[str, str], str]:
    """(fields, body) of a Markdown file; no front matter gives ({}, text)."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}, text
    for end in range(1, len(lines)):
        if lines[end].strip() == "---":
            break
    else:
        return {}, text
    fields: dict[str, str] = {}
    for line in lines[1:end]:
        if ":" in line and not line.lstrip().startswith("#"):
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip().strip("\"'")
    return fields, "\n".join(lines[end + 1:])


def _tags(raw: str) -> list[str]:
    raw = raw.strip().strip("[]")
    return [t.strip().strip("\"'") for t in raw.replace("，", ",").split(",") if t.strip().strip("\"'")]


def read_markdown(path: Path, source: Path) -> Document:
    fields, body = parse_front_matter(path.read_text(encoding="utf-8"))
    title = fields.get("title", "")
    if not title:
        lines = body.splitlines()
        for n, line in enumerate(lines):
            if line.strip():
                if line.lstrip().startswith("#"):
                    title = line.strip().lstrip("#").strip()
                    body = "\n".join(lines[n + 1:])  # the heading is the title, not content
                break
        title = title or path.stem
    rel = path.relative_to(source).as_posix()
    return _validated({"id": fields.get("id") or _path_id(rel), "title": title, "content": body.strip(),
                       "category": fields.get("category") or _folder_category(path, source),
                       "tags": _tags(fields.get("tags", "")), "source": fields.get("source", "")}, rel)


def read_text(path: Path, source: Path) -> Document:
    rel = path.relative_to(source).as_posix()
    return _validated({"id": _path_id(rel), "title": path.stem,
                       "content": path.read_text(encoding="utf-8").strip(),
                       "category": _folder_category(path, source)}, rel)


def read_jsonl(path: Path, source: Path) -> Iterator[Document]:
    rel = path.relative_to(source).as_posix()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise SourceError(f"{rel}:{n}: not a JSON object") from None
        if isinstance(item, dict) and not item.get("id"):
            item = {**item, "id": _path_id(f"{rel}:{n}")}
        yield _validated(item, f"{rel}:{n}")


def _validated(item: object, where: str) -> Document:
    # The API's own validation, so a folder can hold nothing the API would refuse.
    try:
        return parse_document(item)
    except InvalidRequest as exc:
        raise SourceError(f"{where}: {exc.message}") from None


def read_folder(source: Path) -> tuple[list[Document], list[str]]:
    """Every document under `source` and a list of problems (one per skipped file/line)."""
    docs: list[Document] = []
    problems: list[str] = []
    for path in sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES):
        if any(part.startswith(".") for part in path.relative_to(source).parts):
            continue
        try:
            if path.suffix.lower() == ".md":
                docs.append(read_markdown(path, source))
            elif path.suffix.lower() == ".txt":
                docs.append(read_text(path, source))
            else:
                for doc in read_jsonl(path, source):
                    docs.append(doc)
        except (SourceError, UnicodeDecodeError) as exc:
            problems.append(str(exc) if isinstance(exc, SourceError)
                            else f"{path.relative_to(source)}: not UTF-8 text")
    return docs, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT / "data" / "knowledge",
                        help="folder of .md/.txt/.jsonl documents (default: data/knowledge)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="data directory (default: DATA_DIR, else the project's index/)")
    parser.add_argument("--no-import", action="store_true",
                        help="only rebuild the index from the store")
    parser.add_argument("--if-empty", action="store_true",
                        help="do nothing if the store already has documents (first-run set-up)")
    parser.add_argument("--procs", type=int, default=min(4, os.cpu_count() or 1),
                        help="processes that segment and index in parallel (default: the CPUs, at most 4)")
    args = parser.parse_args(argv)
    if args.procs < 1:
        parser.error("--procs must be at least 1")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"配置错误 / configuration error: {exc}", file=sys.stderr)
        return 2
    data_dir = (args.data_dir or settings.data_dir).expanduser().resolve()
    started = time.monotonic()
    analyzer.initialize()
    store = DocumentStore(data_dir / "knowledge" / "documents.sqlite3")
    if args.if_empty and store.count():
        print(f"reindex: {store.count()} document(s) already in {data_dir}; nothing to do", file=sys.stderr)
        store.close()
        return 0
    try:
        if not args.no_import:
            source = args.source.expanduser().resolve()
            if not source.is_dir():
                print(f"reindex: source folder not found: {source}", file=sys.stderr)
                return 2
            docs, problems = read_folder(source)
            for problem in problems:
                print(f"reindex: skipped {problem}", file=sys.stderr)
            unique = list({doc.id: doc for doc in docs}.values())  # a later file with the same id wins
            for start in range(0, len(unique), 500):
                store.upsert(unique[start:start + 500])
            print(f"reindex: imported {len(unique)} document(s) from {source}"
                  + (f", skipped {len(problems)}" if problems else ""), file=sys.stderr)
        stats = _rebuild(data_dir, store, args.procs)
    except RuntimeError as exc:
        print(f"reindex: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"documents {stats.documents}, passages {stats.passages}, {time.monotonic() - started:.1f}s")
    return 0


def _rebuild(data_dir: Path, store: DocumentStore, procs: int):
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm
        # A terminal that reports no size (0×0) would make tqdm draw nothing; shutil
        # falls back to 80×24 there.
        size = shutil.get_terminal_size()
        bar = tqdm(total=0, unit="doc", desc="indexing", file=sys.stderr,
                   ncols=size.columns, nrows=size.lines)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    try:
        return rebuild(data_dir / "knowledge", store, progress=progress, procs=procs)
    finally:
        if bar is not None:
            bar.close()


if __name__ == "__main__":
    sys.exit(main())
