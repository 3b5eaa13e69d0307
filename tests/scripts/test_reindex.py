"""scripts/reindex.py: folder import (.md front matter, .txt, .jsonl), rebuild, summary."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from core.knowledge.store import DocumentStore
from tests.procs import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "knowledge"
_spec = importlib.util.spec_from_file_location("reindex_script", ROOT / "scripts" / "reindex.py")
reindex = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reindex)


def run(*args, data_dir):
    env = {**os.environ, "DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "scripts/reindex.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_folder_formats_become_documents():
    docs, problems = reindex.read_folder(FIXTURES)
    assert problems == []
    by_title = {d.title: d for d in docs}
    front = by_title["归纳概括题的四步法"]  # .md with front matter
    assert (front.id, front.category, front.tags, front.source) == (
        "fixture-summarize", "方法", ("归纳概括", "答题方法"), "测试夹具")
    assert front.content.startswith("归纳概括题要求") and "---" not in front.content
    heading = by_title["新时代枫桥经验与矛盾纠纷化解"]  # .md without: first heading is the title
    assert heading.category == "themes" and heading.id.startswith("f-")
    assert not heading.content.startswith("#")
    text = by_title["放管服改革"]  # .txt: file name and folder
    assert text.category == "政策" and "简政放权" in text.content
    lines = [by_title["接诉即办的基层实践"], by_title["乡村振兴的五个方面"]]  # .jsonl
    assert lines[0].id == "fixture-jiesu" and lines[0].tags == ("基层治理", "接诉即办")
    assert lines[1].tags == ("乡村振兴", "三农") and lines[1].id.startswith("f-")
    # Ids without front matter come from the path: importing again finds the same ones.
    assert sorted(d.id for d in reindex.read_folder(FIXTURES)[0]) == sorted(d.id for d in docs)


def test_bad_files_are_reported_and_skipped(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(FIXTURES, source)
    (source / "empty.md").write_text("---\ntitle: 空\n---\n", encoding="utf-8")
    (source / "bad.jsonl").write_text('{"title": "好", "content": "好的"}\nnot json\n', encoding="utf-8")
    (source / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    docs, problems = reindex.read_folder(source)
    assert len(docs) == 6
    assert any("empty.md" in p and "content" in p for p in problems)
    assert any("bad.jsonl:2" in p for p in problems)
    assert any("latin1.txt" in p for p in problems)


def test_reindex_imports_rebuilds_and_can_run_again(tmp_path):
    result = run("--source", str(FIXTURES), data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("documents 5, passages 5, ")
    store = DocumentStore(tmp_path / "knowledge" / "documents.sqlite3")
    assert store.count() == 5
    first = (tmp_path / "knowledge" / "CURRENT").read_text()
    again = run("--no-import", data_dir=tmp_path)
    assert again.returncode == 0 and "documents 5, passages 5" in again.stdout
    assert (tmp_path / "knowledge" / "CURRENT").read_text() != first
    assert store.count() == 5
    skipped = run("--if-empty", "--source", str(tmp_path / "nope"), data_dir=tmp_path)
    assert skipped.returncode == 0 and "nothing to do" in skipped.stderr
    store.close()


def test_missing_source_is_exit_2(tmp_path):
    result = run("--source", str(tmp_path / "nope"), data_dir=tmp_path)
    assert result.returncode == 2 and "not found" in result.stderr


@pytest.mark.skipif(not (ROOT / "data" / "knowledge").is_dir(), reason="no bundled corpus")
def test_bundled_corpus_imports_cleanly():
    docs, problems = reindex.read_folder(ROOT / "data" / "knowledge")
    assert problems == []
    assert len({d.id for d in docs}) == len(docs)
