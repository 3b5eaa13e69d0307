"""Retrieval quality on the bundled corpus: MRR@10, recall@5 and P@1 of the project's
search over the judged queries of data/eval/retrieval.jsonl, and in the same run of a
bare reference, jieba + SQLite FTS5 on the same documents with the same dictionary.

- project: data/knowledge imported and indexed the way scripts/reindex.py does it (its
  folder reader, the document store, `core.knowledge.index.rebuild`) in a temporary data
  directory, queried through `core.knowledge.search.search` (what GET
  /api/knowledge/search answers), top 10 documents.
- reference: the same documents segmented by the project's analyzer (jieba + the 申论
  user dictionary + stop words + search-mode pieces), FTS5 `MATCH` of the query's pieces
  OR-ed, `ORDER BY bm25` with the title weighted like the project's title boost (the
  FTS5 table of bench/b5_knowledge.py).

A judged query names the documents that should rank first (`relevant`). Per query:
reciprocal rank of the first relevant document in the top 10 (0 if none), the share of
the relevant documents found in the top 5, and whether the first result is relevant;
each averaged over the queries, overall and by query style (keyword / question /
colloquial). The judgements were written before looking at any result; a miss is a
finding about the search or the documents, never a reason to edit the judgement.

    python bench/retrieval_eval.py [--misses]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.ensure_venv()
from b5_knowledge import build_fts, fts_search  # noqa: E402

from core.knowledge import analyzer  # noqa: E402
from core.knowledge import search as searching  # noqa: E402
from core.knowledge.index import SharedIndex, rebuild  # noqa: E402
from core.knowledge.store import DocumentStore  # noqa: E402

CORPUS = common.SERVICE_ROOT / "data" / "knowledge"
JUDGEMENTS = common.ROOT / "data" / "eval" / "retrieval.jsonl"
TOP = 10
RECALL_AT = 5
TARGET_MRR = 0.92

Ranker = Callable[[str], list[str]]


@dataclass(frozen=True)
class Judged:
    """One query and the ids of the documents that should rank first."""

    query: str
    relevant: tuple[str, ...]
    style: str


def load_judgements(path: Path = JUDGEMENTS) -> list[Judged]:
    """The judged queries of a JSONL file ({"query", "relevant", "style"} per line)."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            rows.append(Judged(item["query"], tuple(item["relevant"]), item.get("style", "")))
    return rows


def _reindex_module():
    spec = importlib.util.spec_from_file_location("reindex_script",
                                                  common.SERVICE_ROOT / "scripts" / "reindex.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Corpus:
    """The bundled documents indexed both ways in `work`; close() releases the files."""

    work: Path
    documents: list = field(default_factory=list)
    _store: DocumentStore | None = None
    _index: SharedIndex | None = None
    _fts: sqlite3.Connection | None = None

    @classmethod
    def build(cls, work: Path, source: Path = CORPUS) -> Corpus:
        analyzer.initialize()
        docs, problems = _reindex_module().read_folder(source)
        if problems:
            raise RuntimeError(f"corpus does not import cleanly: {problems}")
        corpus = cls(work, docs)
        root = work / "knowledge"
        corpus._store = DocumentStore(root / "documents.sqlite3")
        corpus._store.upsert(docs)
        rebuild(root, corpus._store)
        corpus._index = SharedIndex(root, corpus._store)
        fts_path = work / "fts.sqlite3"
        build_fts([{"id": d.id, "title": d.title, "content": d.content} for d in docs], fts_path)
        corpus._fts = sqlite3.connect(fts_path)
        return corpus

    def project(self, query: str) -> list[str]:
        """The project's ranking: ids of the top documents."""
        page = searching.search(self._index.searcher(), query, limit=TOP)
        return [r["id"] for r in page.results]

    def fts5(self, query: str) -> list[str]:
        """The reference ranking: jieba + FTS5 bm25."""
        return [row[0] for row in fts_search(self._fts, query)][:TOP]

    def close(self) -> None:
        if self._fts is not None:
            self._fts.close()
        if self._index is not None:
            self._index.close()
        if self._store is not None:
            self._store.close()


@dataclass(frozen=True)
class Scores:
    """Averages over a set of queries."""

    queries: int
    mrr: float
    recall: float
    p1: float


def score_one(ranked: Sequence[str], relevant: Iterable[str]) -> tuple[float, float, float]:
    """(reciprocal rank in the top 10, recall in the top 5, precision at 1) of one ranking."""
    relevant = set(relevant)
    rr = next((1.0 / n for n, doc in enumerate(ranked[:TOP], 1) if doc in relevant), 0.0)
    recall = len(relevant & set(ranked[:RECALL_AT])) / len(relevant)
    return rr, recall, float(bool(ranked) and ranked[0] in relevant)


def evaluate(rank: Ranker, judged: Sequence[Judged]) -> tuple[dict[str, Scores], list[tuple[Judged, list[str]]]]:
    """Scores overall ("all") and per style, and the queries whose first result is not relevant."""
    per_query = []
    misses = []
    for item in judged:
        ranked = rank(item.query)
        per_query.append((item.style, score_one(ranked, item.relevant)))
        if not ranked or ranked[0] not in item.relevant:
            misses.append((item, ranked))
    groups: dict[str, list[tuple[float, float, float]]] = {"all": [s for _, s in per_query]}
    for style, s in per_query:
        groups.setdefault(style, []).append(s)
    return ({name: Scores(len(rows), *(sum(col) / len(rows) for col in zip(*rows, strict=True)))
             for name, rows in groups.items()}, misses)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--misses", action="store_true", help="list the queries whose first result is not relevant")
    args = ap.parse_args(argv)
    judged = load_judgements()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="retrieval-eval-") as tmp:
        corpus = Corpus.build(Path(tmp))
        built = time.perf_counter() - started
        try:
            results = {name: evaluate(rank, judged)
                       for name, rank in (("project", corpus.project), ("fts5", corpus.fts5))}
        finally:
            corpus.close()
    print(f"retrieval eval: {len(corpus.documents)} documents, {len(judged)} judged queries "
          f"({JUDGEMENTS.relative_to(common.ROOT)}), index built in {built:.1f}s")
    print(f"{'search':<9}{'queries':<17}{'MRR@10':>8}{'recall@5':>10}{'P@1':>7}")
    for name, (scores, _) in results.items():
        for group, s in scores.items():
            print(f"{name:<9}{group + ' (' + str(s.queries) + ')':<17}{s.mrr:>8.3f}{s.recall:>10.3f}{s.p1:>7.3f}")
    project, fts = results["project"][0]["all"], results["fts5"][0]["all"]
    print(f"project MRR@10 {project.mrr:.3f} vs FTS5 {fts.mrr:.3f} (ratio {project.mrr / fts.mrr:.2f}); "
          f"target ≥ {TARGET_MRR}: {'met' if project.mrr >= TARGET_MRR else 'NOT met'}")
    if args.misses:
        for name, (_, misses) in results.items():
            print(f"\n{name}: first result not relevant for {len(misses)} queries")
            for item, ranked in misses:
                print(f"  {item.query}  want {list(item.relevant)}  got {ranked[:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
