"""The knowledge base: a durable document store, a shared jieba + Whoosh index, search
and retrieval for grounded chat.

    analyzer.py   our Chinese analyzer (jieba with the 申论 user dictionary, stop words)
    store.py      the document store (SQLite, the source of truth)
    passages.py   documents → passages, the unit indexed and retrieved
    index.py      the shared index: schema, multi-process writes, atomic rebuilds
    search.py     query parsing, ranking, snippets, retrieval
    service.py    `KnowledgeBase`: validation and the async use cases, off the loop
"""
from core.knowledge.analyzer import initialize
from core.knowledge.service import KnowledgeBase, ListRequest, SearchRequest, parse_documents

__all__ = ["KnowledgeBase", "ListRequest", "SearchRequest", "initialize", "parse_documents"]
