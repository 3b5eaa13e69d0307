"""The calibration set (`data/grading/calibration/*.json`): graded answers with the
score band an examiner would give, written before the grader was tuned.

Each case names a bundled practice item and what of it is sent (`send`: the practice
id by default, or only its question and/or material, as a candidate without a rubric
would send them); a case may bring its own question. `answer_of` reuses another
case's answer, or the item's reference answer ("reference"). The bench
(`bench/grading_calibration.py`) and the tests read the set through `load_cases()`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import PROJECT_ROOT
from core.grading.practice import PracticeBank
from core.grading.request import GradeRequest

CALIBRATION_DIR = PROJECT_ROOT / "data" / "grading" / "calibration"


@dataclass(frozen=True)
class CalibrationCase:
    """One graded answer and the band (inclusive) its score should fall in."""

    id: str
    question_type: str
    kind: str
    band: tuple[float, float]
    request: dict[str, Any]
    why: str = ""

    @property
    def middle(self) -> float:
        return (self.band[0] + self.band[1]) / 2

    def grade_request(self) -> GradeRequest:
        return GradeRequest.from_payload(self.request)


def _payload(raw: dict[str, Any], answers: dict[str, str], bank: PracticeBank) -> dict[str, Any]:
    item = bank.get(raw["practice_id"])
    if item is None:
        raise ValueError(f"calibration case {raw['id']}: unknown practice item {raw['practice_id']}")
    answer_of = raw.get("answer_of")
    answer = item.reference_answer if answer_of == "reference" else answers[answer_of] if answer_of else raw["answer"]
    send = raw.get("send")
    if not send:
        return {"practice_id": item.id, "answer": answer}
    payload: dict[str, Any] = {"answer": answer, "question": raw.get("question") or item.question}
    if "material" in send:
        payload["material"] = item.material
    return payload


def load_cases(directory: Path = CALIBRATION_DIR, bank: PracticeBank | None = None) -> list[CalibrationCase]:
    """Every case of every file, in file and case order."""
    bank = bank or PracticeBank.load()
    cases: list[CalibrationCase] = []
    for path in sorted(Path(directory).glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        answers = {c["id"]: c["answer"] for c in doc["cases"] if "answer" in c}
        for raw in doc["cases"]:
            lo, hi = raw["band"]
            cases.append(CalibrationCase(id=raw["id"], question_type=doc["question_type"], kind=raw["kind"],
                                         band=(float(lo), float(hi)), request=_payload(raw, answers, bank),
                                         why=raw.get("why", "")))
    return cases
