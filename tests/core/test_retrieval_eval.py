"""The retrieval evaluation set (data/eval/retrieval.jsonl) against the bundled corpus:
the project's search, through a real index built from data/knowledge, must rank the
judged documents at least as well as jieba + SQLite FTS5 on the same documents."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.procs import ROOT

_spec = importlib.util.spec_from_file_location("retrieval_eval", ROOT / "bench" / "retrieval_eval.py")
retrieval_eval = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = retrieval_eval  # its dataclasses look their module up by name
_spec.loader.exec_module(retrieval_eval)

JUDGED = retrieval_eval.load_judgements()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    built = retrieval_eval.Corpus.build(tmp_path_factory.mktemp("retrieval-eval"))
    yield built
    built.close()


def test_the_set_has_100_queries_a_third_colloquial_each_naming_bundled_documents(corpus):
    assert len(JUDGED) >= 100
    assert len({j.query for j in JUDGED}) == len(JUDGED)
    assert sum(j.style == "colloquial" for j in JUDGED) * 3 >= len(JUDGED)
    ids = {doc.id for doc in corpus.documents}
    unknown = {i for j in JUDGED for i in j.relevant} - ids
    assert not unknown, f"judgements name documents the corpus lacks: {sorted(unknown)}"
    assert all(j.relevant for j in JUDGED)


def test_scores_of_one_ranking():
    assert retrieval_eval.score_one(["a", "b", "c"], ["b"]) == (0.5, 1.0, 0.0)
    assert retrieval_eval.score_one(["b", "x"], ["b", "y"]) == (1.0, 0.5, 1.0)
    assert retrieval_eval.score_one([f"d{n}" for n in range(12)] + ["b"], ["b"]) == (0.0, 0.0, 0.0)
    assert retrieval_eval.score_one([], ["b"]) == (0.0, 0.0, 0.0)


def test_project_search_ranks_the_judged_documents_at_least_as_well_as_fts5(corpus):
    project, _ = retrieval_eval.evaluate(corpus.project, JUDGED)
    fts5, _ = retrieval_eval.evaluate(corpus.fts5, JUDGED)
    assert project["all"].queries == len(JUDGED)
    assert project["all"].mrr >= fts5["all"].mrr, (project["all"], fts5["all"])
