"""Offline answers on the bundled practice items, graded by the project's own grader.

For every item of data/practice/ (whatever items exist), the chat service answers the
item's 题目 from its 给定资料 with the offline provider (no model, deterministic), and
the grader (`GradingService.grade`, offline: its rules layer) grades that answer
against the item's rubric. The table shows, per item: the answer's length against
the limit, Markdown / [n] left in it, the material's key terms it mentions (the
rubric phrasings that occur verbatim in the material), the grade, and whether the
item meets the bar of the 概括/对策/应用文 types: 60–100 % of the limit, no Markdown,
no [n], at least half of the key terms, and ≥ 50 % of the full score.

    python bench/offline_answers.py [--show ITEM_ID|all] [--practice DIR] [--about]

`--about` asks every 题目 as "N字左右" (its 不超过N字 rewritten) with no word_limit in
the request, and grades it against the item's points with that 题目: both sides then
read the limit from the 题目 alone (core/chat/terms.py), and the share is of the limit
the grader read. Prints the table and exits 1 when a 概括/对策/应用文 item misses the bar.
"""
from __future__ import annotations

import argparse
import asyncio
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.chat.service import ChatRequest, ChatService
from core.chat.wordlimit import char_count, has_markdown
from core.grading import GradeRequest, GradingService, PracticeBank
from core.llm import LLMGateway, LLMMeter, OfflineProvider
from core.traffic.concurrency import ConcurrencySlots

GATED = ("summarize", "countermeasure", "document")
_MARKER = re.compile(r"\[\d{1,3}\]")


def key_terms(item) -> list[str]:
    """The rubric phrasings the material itself uses: the words an examiner looks
    for that an extractive answer can (and should) carry over."""
    return sorted({p for point in item.points for p in point.phrasings if p in item.material})


def about(question: str) -> str:
    """The 题目 with its 不超过N字 asked as N字左右."""
    return re.sub(r"(?:不超过|不多于)(\d+)字", r"\1字左右", question)


async def run(show: str | None, practice: Path | None, ask_about: bool = False) -> int:
    executor = ThreadPoolExecutor(2)
    llm = OfflineProvider(executor)
    gateway = LLMGateway(llm, ConcurrencySlots(4), LLMMeter())
    chat = ChatService(gateway=gateway, server_id="bench")
    bank = PracticeBank.load(practice) if practice else PracticeBank.load()
    grader = GradingService(gateway=gateway, executor=executor,
                            practice=bank, server_id="bench")
    rows, failed = [], 0
    for item in bank.list():
        question = about(item.question) if ask_about else item.question
        req = ChatRequest.from_payload({"message": question, "mode": item.question_type,
                                        "material": item.material, "question": question,
                                        "word_limit": None if ask_about else item.word_limit,
                                        "use_knowledge": False, "cache": False})
        answer = (await chat.answer(req)).body["answer"]
        if ask_about:
            grade = await grader.grade(GradeRequest(
                answer=answer, question=question, material=item.material, question_type=item.question_type,
                full_score=item.full_score, genre=item.genre, scoring_points=item.points))
        else:
            grade = await grader.grade(GradeRequest(answer=answer, practice_id=item.id))
        limit = grade["word_limit"] or item.word_limit
        terms = key_terms(item)
        mentioned = [t for t in terms if t in answer]
        ratio = char_count(answer) / limit
        markdown, markers = has_markdown(answer), bool(_MARKER.search(answer))
        share = grade["score"] / grade["full_score"]
        ok = (0.6 <= ratio <= 1.0 and not markdown and not markers
              and len(mentioned) * 2 >= len(terms) and share >= 0.5)
        gated = item.question_type in GATED
        failed += gated and not ok
        rows.append((item.id, item.question_type, f"{char_count(answer)}/{limit}", f"{ratio:.0%}",
                     "有" if markdown else "无", "有" if markers else "无", f"{len(mentioned)}/{len(terms)}",
                     f"{grade['score']:g}/{grade['full_score']:g}", f"{share:.0%}",
                     ("通过" if ok else "未通过") if gated else "（提纲，不计）"))
        if show in (item.id, "all"):
            print(f"--- {item.id}\n{answer}\n")
    head = ("练习题", "题型", "字数/限", "占比", "Markdown", "[n]", "关键词", "得分", "得分率", "结论")
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    passed = sum(1 for r in rows if r[-1] == "通过")
    print(f"\n概括/对策/应用文：{passed}/{sum(1 for r in rows if r[1] in GATED)} 题达标"
          "（字数 60–100 %、无 Markdown、无 [n]、关键词过半、得分率 ≥ 50 %）")
    executor.shutdown()
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--show", help="print the answer of this item id (or 'all')")
    parser.add_argument("--practice", type=Path, help="another folder of practice items (default: data/practice)")
    parser.add_argument("--about", action="store_true",
                        help="ask every 题目 as N字左右, with no word_limit in the request")
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args.show, args.practice, args.about)))


if __name__ == "__main__":
    main()
