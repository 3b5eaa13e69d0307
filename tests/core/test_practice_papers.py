"""Loading whole papers (套卷): a paper lends its material to its questions, and a
paper whose questions do not make a paper is refused (strict) or skipped with them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.grading.practice import PracticeBank, PracticeError

BUNDLED = PracticeBank.load(strict=True)
MATERIAL = "资料1\n" + "某县推进县域经济发展的情况。" * 50


def write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def make_paper(tmp_path: Path, minutes: list[int], total: int = 180, reading: int = 40,
               **item_changes: Any) -> None:
    """A paper of len(minutes) questions, each a copy of a bundled summarize item."""
    write(tmp_path / "papers" / "paper-x.json", {
        "id": "paper-x", "title": "测试套卷", "exam": "模拟卷", "total_minutes": total,
        "reading_minutes": reading, "material": MATERIAL})
    base = BUNDLED.get("sum-waste-sorting").detail()
    for n, m in enumerate(minutes, 1):
        item = {"id": f"paper-x-q{n}", "question_type": "summarize", "title": base["title"],
                "question": base["question"], "word_limit": base["word_limit"],
                "full_score": base["full_score"], "reference_answer": base["reference_answer"],
                "scoring_points": base["scoring_points"],
                "paper": {"id": "paper-x", "order": n, "suggested_minutes": m}, **item_changes}
        write(tmp_path / f"paper-x-q{n}.json", item)


def test_a_paper_lends_its_one_material_to_its_questions_in_order(tmp_path):
    make_paper(tmp_path, [10, 15, 20, 70])
    bank = PracticeBank.load(tmp_path, strict=True)
    items = bank.list(paper="paper-x")
    assert [i.id for i in items] == [f"paper-x-q{n}" for n in range(1, 5)]
    assert {i.material for i in items} == {MATERIAL}
    summary = bank.paper_summary(bank.paper("paper-x"))
    assert [q["suggested_minutes"] for q in summary["questions"]] == [10, 15, 20, 70]
    assert summary["full_score"] == 4 * items[0].full_score


@pytest.mark.parametrize("minutes, changes, reason", [
    ([10, 15, 20, 100], {}, "minutes"),                 # 40 + 145 > 180
    ([10, 15, 20], {}, "numbered"),                     # three questions are not a paper
    ([10, 15, 20, 70], {"material": MATERIAL}, "material"),
])
def test_a_paper_that_is_not_a_paper_is_refused_or_skipped_with_its_items(tmp_path, minutes, changes, reason):
    make_paper(tmp_path, minutes, **changes)
    with pytest.raises(PracticeError, match=reason):
        PracticeBank.load(tmp_path, strict=True)
    lenient = PracticeBank.load(tmp_path)
    assert lenient.papers() == [] and lenient.list(paper="paper-x") == []
    assert len(lenient) == 0


def test_an_item_of_an_unknown_paper_is_refused(tmp_path):
    make_paper(tmp_path, [10, 15, 20, 70])
    (tmp_path / "papers" / "paper-x.json").unlink()
    with pytest.raises(PracticeError, match="not found"):
        PracticeBank.load(tmp_path, strict=True)
