"""How close the offline grader comes to an examiner: the calibration set graded.

    python bench/grading_calibration.py            # the table and the misses
    python bench/grading_calibration.py --verbose  # every case with its score

Every answer of `data/grading/calibration/` is graded through `GradingService.grade()`
with the offline provider (rules only, as without a model). Printed per question type
and overall: the share of answers whose score falls inside their band, the mean
absolute error to the band's middle (in points and in % of the full score), and the
Spearman rank correlation between scores and band middles; then the list of misses.
A figure, not a test: nothing is asserted.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ensure_venv

ensure_venv()

from core.grading import GradingService, PracticeBank  # noqa: E402
from core.grading.calibration import CalibrationCase, load_cases  # noqa: E402
from core.llm import LLMGateway, LLMMeter, OfflineProvider  # noqa: E402
from core.traffic.concurrency import ConcurrencySlots  # noqa: E402


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rho with average ranks for ties (Pearson on the ranks)."""
    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=lambda i: values[i])
        result = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                result[order[k]] = (i + j) / 2 + 1
            i = j + 1
        return result
    if len(xs) < 2:
        return float("nan")
    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx) ** 0.5
    vy = sum((b - my) ** 2 for b in ry) ** 0.5
    return cov / (vx * vy) if vx and vy else float("nan")


async def grade_all(cases: list[CalibrationCase]) -> list[dict]:
    bank = PracticeBank.load()
    with ThreadPoolExecutor(1) as executor:
        service = GradingService(gateway=LLMGateway(OfflineProvider(), ConcurrencySlots(1), LLMMeter()),
                                 executor=executor, practice=bank, server_id="bench")
        return [await service.grade(case.grade_request()) for case in cases]


def row(name: str, pairs: list[tuple[CalibrationCase, dict]]) -> str:
    inside = sum(1 for c, g in pairs if c.band[0] <= g["score"] <= c.band[1])
    mae = sum(abs(g["score"] - c.middle) for c, g in pairs) / len(pairs)
    mae_pct = sum(abs(g["score"] - c.middle) / g["full_score"] for c, g in pairs) / len(pairs)
    # Ranks are compared on the share of the full score, so that types mix fairly.
    rho = spearman([g["score"] / g["full_score"] for _, g in pairs],
                   [c.middle / g["full_score"] for c, g in pairs])
    return (f"| {name:<15} | {len(pairs):>3} | {inside / len(pairs):>6.0%} | {mae:>5.2f} | {mae_pct:>6.1%} "
            f"| {rho:>8.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbose", action="store_true", help="print every case")
    args = parser.parse_args()
    cases = load_cases()
    grades = asyncio.run(grade_all(cases))
    pairs = list(zip(cases, grades, strict=True))
    print("| type            |   n | inside |   MAE |  MAE % | Spearman |")
    print("| --------------- | --- | ------ | ----- | ------ | -------- |")
    for qtype in dict.fromkeys(c.question_type for c in cases):
        print(row(qtype, [(c, g) for c, g in pairs if c.question_type == qtype]))
    print(row("overall", pairs))
    misses = [(c, g) for c, g in pairs if not c.band[0] <= g["score"] <= c.band[1]]
    print(f"\nmisses ({len(misses)}):" if misses else "\nmisses: none")
    for c, g in misses if not args.verbose else pairs:
        mark = "  " if c.band[0] <= g["score"] <= c.band[1] else "✗ "
        caps = "；".join(cap["rule"] for cap in g.get("caps", []))
        print(f"{mark}{c.id:<32} {g['score']:>5g}/{g['full_score']:<3g} band {c.band[0]:g}–{c.band[1]:g}"
              + (f"  caps: {caps}" if caps else ""))


if __name__ == "__main__":
    main()
