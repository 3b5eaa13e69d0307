"""Bench 5: the knowledge base: indexing documents/s and search latency at 1k and 10k
documents, against a plain SQLite FTS5 table fed the same jieba segmentation.

The corpora are generated from the bundled one (data/knowledge, 240+ documents): each
generated document takes the title, category and tags of a bundled document and three
paragraphs drawn (seeded) from the whole corpus, ~700 characters, so the vocabulary and
its frequencies are the bundled ones.

- indexing: `scripts/reindex.py --source <jsonl folder>` on an empty data directory
  (process start and jieba's ~1 s dictionary load included), and `POST /api/knowledge/add`
  in batches of 50 on a running server; reference: the same documents segmented with the
  same analyzer (core.knowledge.analyzer: jieba + our dictionary + stop words + search-mode
  expansion) and inserted into an FTS5 table.
- search: the same 24 queries, p50/p99 of `core.knowledge.search.search` in process (the
  service's search without HTTP) vs FTS5 `MATCH … ORDER BY bm25 LIMIT 10` with snippet(),
  at 1k and 10k documents; and p50/p99 through `GET /api/knowledge/search` at c=1. Each
  engine first runs every query once uncounted (warm-up: opening the index is not a
  query's cost), then the queries in turn for --search-seconds; then the median CPU
  time of a query (thread time, 3 rounds), which a busy machine does not inflate the
  way it does wall-clock percentiles.
- quality: MRR@10 of the judged queries in data/eval/retrieval.jsonl on the bundled
  corpus, for the project and for the FTS5 reference on the same documents and tokens.

    python bench/b5_knowledge.py [--sizes 1000,10000] [--search-seconds 3]
"""
from __future__ import annotations

import argparse
import http.client
import json
import random
import re
import resource
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import Report, finish

common.ensure_venv()
from core.knowledge import KnowledgeBase, SearchRequest, analyzer  # noqa: E402

QUERIES = ["乡村振兴", "基层治理", "枫桥经验", "营商环境", "生态文明建设", "共同富裕", "数字政府",
           "归纳概括题怎么答", "对策要具体可行", "形式主义 基层减负", "公共服务均等化", "老龄化 养老服务",
           "文章写作 立意", "应用文格式", "综合分析 评价", "\"乡村 振兴\"", "科技创新", "人才引进",
           "社会治理 网格化", "文化自信", "粮食安全", "绿色发展 碳达峰", "接诉即办", "放管服改革"]


def bundled_documents() -> list[dict]:
    docs = []
    for path in sorted((common.SERVICE_ROOT / "data" / "knowledge").rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        meta: dict[str, str] = {}
        if text.startswith("---"):
            head, _, text = text[3:].partition("\n---")
            for line in head.splitlines():
                key, sep, value = line.partition(":")
                if sep:
                    meta[key.strip()] = value.strip()
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if len(p.strip()) > 20]
        docs.append({"title": meta.get("title") or path.stem, "category": meta.get("category", ""),
                     "tags": [t.strip() for t in meta.get("tags", "").split(",") if t.strip()][:5],
                     "paragraphs": paragraphs})
    return docs


def generate(n: int, out_dir: Path, seed: int = 9) -> Path:
    """n generated documents as one JSONL file in out_dir (the --source of reindex.py)."""
    rng = random.Random(seed)
    base = bundled_documents()
    pool = [p for d in base for p in d["paragraphs"]]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"generated-{n}.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            d = base[i % len(base)]
            content = "\n\n".join([rng.choice(d["paragraphs"] or pool)] + rng.sample(pool, 2))
            fh.write(json.dumps({"id": f"gen-{i}", "title": f"{d['title']}（专题{i}）", "content": content,
                                 "category": d["category"], "tags": d["tags"], "source": "bench"},
                                ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- the FTS5 reference ---

def tokens(text: str) -> str:
    return " ".join(t for w in analyzer.words(text) for t in analyzer.expand(w))


def build_fts(docs: list[dict], path: Path) -> float:
    """Segment and insert every document; returns seconds."""
    started = time.perf_counter()
    conn = sqlite3.connect(path)
    conn.execute("CREATE VIRTUAL TABLE docs USING fts5(id UNINDEXED, title, content, "
                 "title_raw UNINDEXED, content_raw UNINDEXED, tokenize='unicode61')")
    with conn:
        conn.executemany("INSERT INTO docs VALUES (?, ?, ?, ?, ?)",
                         ((d["id"], tokens(d["title"]), tokens(d["content"]), d["title"], d["content"])
                          for d in docs))
    conn.close()
    return time.perf_counter() - started


def fts_query(q: str) -> str:
    terms = {t for w in analyzer.words(q.replace('"', " ")) for t in analyzer.expand(w)}
    return " OR ".join(f'"{t}"' for t in sorted(terms)) or '""'


def fts_search(conn: sqlite3.Connection, q: str) -> list:
    # bm25 with the title weighted like TITLE_BOOST; snippet over the segmented text.
    return conn.execute("SELECT id, title_raw, bm25(docs, 0, 2.5, 1.0) AS score, "
                        "snippet(docs, 2, '<em>', '</em>', '…', 24) FROM docs WHERE docs MATCH ? "
                        "ORDER BY score LIMIT 10", (fts_query(q),)).fetchall()


def latencies(fn, queries: list[str], seconds: float, hard_limit: float = 45.0) -> list[float]:
    """Run the queries in turn for `seconds`, and at least once each (within `hard_limit` s),
    after one uncounted pass over them all: the first query of an engine opens its index
    (Whoosh: the searcher and its view, ~1 s at 10,000 documents; SQLite: its pages), and
    a server answers warm. Both engines get the same warm-up."""
    for q in queries:
        fn(q)
    out = []
    began = time.perf_counter()
    i = 0
    while i < 100_000:
        elapsed = time.perf_counter() - began
        if elapsed >= hard_limit or (elapsed >= seconds and i >= len(queries)):
            break
        q = queries[i % len(queries)]
        started = time.perf_counter()
        fn(q)
        out.append(time.perf_counter() - started)
        i += 1
    return sorted(out)


def cpu_per_query(fn, queries: list[str], rounds: int = 3) -> float:
    """The median CPU time of one query, ms, this thread only (time.thread_time): what
    the search costs whatever else the machine runs, where wall-clock percentiles also
    count the time spent waiting for a core."""
    spent = []
    for _ in range(rounds):
        for q in queries:
            started = time.thread_time()
            fn(q)
            spent.append(time.thread_time() - started)
    return common.median(sorted(spent)) * 1000


def pct(values: list[float], q: float) -> float:
    return common.median(values) * 1000 if q == 50 else \
        values[max(0, int(len(values) * q / 100 + 0.999) - 1)] * 1000


def api_latencies(port: int, queries: list[str], seconds: float) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        def one(q: str) -> None:
            conn.request("GET", "/api/knowledge/search?limit=10&q=" + quote(q))
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"search answered {resp.status}")
        return latencies(one, queries, seconds)
    finally:
        conn.close()


def relevance(report: Report, work: Path) -> None:
    """MRR@10 of the repository's judged queries (data/eval/retrieval.jsonl, the set
    bench/retrieval_eval.py scores in full) on the bundled corpus: the project vs FTS5."""
    import retrieval_eval  # here: it imports this module's FTS5 reference

    judged = retrieval_eval.load_judgements()
    corpus = retrieval_eval.Corpus.build(work / "relevance")
    try:
        ours, ref = (retrieval_eval.evaluate(rank, judged)[0]["all"].mrr
                     for rank in (corpus.project, corpus.fts5))
    finally:
        corpus.close()
    report.add(f"MRR@10, {len(judged)} judged queries, bundled corpus", ours, "",
               reference="FTS5 bm25, same tokens", ref_value=ref,
               note=str(retrieval_eval.JUDGEMENTS.relative_to(common.ROOT)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--search-seconds", type=float, default=3.0)
    ap.add_argument("--add-seconds", type=float, default=6.0)
    ap.add_argument("--budget", type=float, default=600.0,
                    help="seconds this bench may take; a size predicted not to fit is skipped")
    args = ap.parse_args(argv)
    report = Report("b5_knowledge", "knowledge indexing and search vs SQLite FTS5 (same segmentation)")
    report.note(f"before: {common.machine_load()}")
    work = common.tmpdir()
    logs = work / "logs"
    logs.mkdir()
    analyzer.initialize()
    executor = ThreadPoolExecutor(2)
    relevance(report, work)
    sizes = [int(s) for s in args.sizes.split(",")]
    data_dirs: dict[int, Path] = {}
    began = time.perf_counter()
    per_doc = None  # seconds per document of the previous size (reindex + FTS5 build)
    for n in sizes:
        if per_doc is not None:
            predicted = per_doc * n + 3 * args.search_seconds + 15 + n * 0.12 * 24 / 1000
            left = args.budget - (time.perf_counter() - began)
            if predicted > left:
                report.note(f"{n // 1000}k stage skipped: predicted {predicted:.0f} s, {left:.0f} s of the "
                            f"budget left (run `python bench/b5_knowledge.py --sizes {n}` alone)")
                continue
        source = generate(n, work / f"corpus-{n}")
        docs = read_jsonl(source)
        chars = sum(len(d["content"]) for d in docs) / len(docs)
        data = work / f"data-{n}"
        started = time.perf_counter()
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run([sys.executable, str(common.SERVICE_ROOT / "scripts" / "reindex.py"),
                              "--source", str(source.parent), "--data-dir", str(data)],
                             cwd=common.SERVICE_ROOT, capture_output=True, text=True, timeout=900)
        wall = time.perf_counter() - started
        if out.returncode != 0:
            report.note(f"reindex.py failed for {n} documents: {out.stderr[-500:]}")
            continue
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        reindex_cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
        data_dirs[n] = data
        fts_cpu = time.process_time()
        fts_seconds = build_fts(docs, work / f"fts-{n}.sqlite3")
        fts_cpu = time.process_time() - fts_cpu
        report.add(f"reindex.py documents/s, {n} docs", n / wall, "docs/s",
                   reference="FTS5 insert, same segmentation", ref_value=n / fts_seconds,
                   note=f"{wall:.1f} s incl. start-up, ~{chars:.0f} chars/doc")
        # CPU seconds do not depend on what else the machine runs: reindex.py's processes
        # (all of them) against the FTS5 build's.
        report.add(f"reindex.py CPU ms per document, {n} docs", reindex_cpu * 1000 / n, "ms",
                   reference="FTS5 insert, same segmentation", ref_value=fts_cpu * 1000 / n)

        # Search in process: the service's search function vs FTS5, same queries.
        kb = KnowledgeBase.open(data, executor)
        search_ours = lambda q, kb=kb: kb._search(SearchRequest(q=q, limit=10))  # noqa: E731
        ours = latencies(search_ours, QUERIES, args.search_seconds)
        conn = sqlite3.connect(work / f"fts-{n}.sqlite3")
        search_ref = lambda q, conn=conn: fts_search(conn, q)  # noqa: E731
        ref = latencies(search_ref, QUERIES, args.search_seconds)
        report.add(f"search CPU ms per query (median), in process, {n} docs", cpu_per_query(search_ours, QUERIES),
                   "ms", reference="FTS5 bm25 + snippet", ref_value=cpu_per_query(search_ref, QUERIES),
                   note="thread CPU time, 3 rounds of the queries")
        conn.close()
        kb.close()
        for q in (50, 99):
            report.add(f"search p{q} in process, {n} docs", pct(ours, q), "ms",
                       reference=f"FTS5 bm25 + snippet p{q}", ref_value=pct(ref, q),
                       note=f"{len(ours)} queries after a warm-up pass of {len(QUERIES)}, both engines"
                       if q == 50 else "")

        # Search through the API, one client.
        upstream_free = common.start_server(data, log_dir=logs, name=f"search-{n}")
        api = api_latencies(upstream_free.port, QUERIES, args.search_seconds)
        for q in (50, 99):
            report.add(f"search p{q} via GET /api/knowledge/search, {n} docs", pct(api, q), "ms",
                       reference=f"in-process p{q}", ref_value=pct(ours, q), note="c=1" if q == 50 else "")
        if n == sizes[0]:
            # The add API: batches of 50 new documents for a few seconds.
            rng = random.Random(5)
            added, batch_no = 0, 0
            started = time.perf_counter()
            while time.perf_counter() - started < args.add_seconds and batch_no < 200:
                batch = [{**rng.choice(docs), "id": f"api-{batch_no}-{k}"} for k in range(50)]
                for d in batch:
                    d["title"] = d["title"] + f"·增补{batch_no}"
                status, _, raw = common.http("POST", upstream_free.url + "/api/knowledge/add",
                                             {"documents": batch}, timeout=60)
                if status != 201:
                    report.note(f"add answered {status}: {raw[:200]!r}")
                    break
                added += 50
                batch_no += 1
            add_wall = time.perf_counter() - started
            report.add("add API documents/s (batches of 50)", added / add_wall if add_wall else 0, "docs/s",
                       reference="FTS5 insert, same segmentation", ref_value=n / fts_seconds,
                       note=f"{added} docs onto {n}; searchable when answered")
            single, s_started = 0, time.perf_counter()
            while time.perf_counter() - s_started < args.add_seconds / 2 and single < 500:
                d = {**rng.choice(docs), "id": f"one-{single}"}
                status, _, _ = common.http("POST", upstream_free.url + "/api/knowledge/add", d, timeout=60)
                if status != 201:
                    break
                single += 1
            s_wall = time.perf_counter() - s_started
            report.add("add API documents/s (one per request)", single / s_wall if s_wall else 0, "docs/s",
                       reference="batches of 50", ref_value=added / add_wall if add_wall else None)
        upstream_free.stop()
        per_doc = (wall + fts_seconds) / n
    executor.shutdown()
    report.note(f"after: {common.machine_load()}")
    return finish(report)


if __name__ == "__main__":
    sys.exit(main())
