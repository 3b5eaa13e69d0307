"""The one reading of what a 题目 states about its answer (word limit, floor, full score),
for chat's `read_task` and the grader alike."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.chat.offline import offline_answer
from core.chat.prompts import build_prompt, read_task
from core.chat.terms import read_full_score, read_length
from core.chat.wordlimit import char_count
from core.grading import GradeRequest, GradingService, PracticeBank
from core.llm import LLMGateway, LLMMeter, OfflineProvider
from core.traffic.concurrency import ConcurrencySlots

# Each form a 题目 states its length and score in: the grader's bounds (upper, lower),
# the score, and the word budget chat answers to (limit, low: 85 % of a bare limit).
FORMS = [
    ("概括问题。（15分）要求：不超过200字。", (200, None), 15, (200, 170)),
    ("谈谈理解。(20 分)要求：300字左右。", (330, 270), 20, (330, 270)),
    ("写一篇文章。（40分）要求：总字数1000～1200字。", (1200, 1000), 40, (1200, 1000)),
    ("写一篇文章。要求：1000——1200字。", (1200, 1000), None, (1200, 1000)),
    ("拟写倡议书，400字以内。", (400, None), None, (400, 340)),
    ("写一篇文章，不少于800字。", (None, 800), None, (None, 800)),
    ("写一篇文章，不少于800字，不超过1000字。", (1000, 800), None, (1000, 800)),
    ("写一篇短评，500字左右，不超过520字。", (520, 450), None, (520, 450)),
    ("要求：字数1000字左右。", (1100, 900), None, (1100, 900)),
    ("要求：字数500字。（150分）", (500, None), None, (500, 425)),
    ("谈谈你的看法。", (None, None), None, (None, None)),
]


@pytest.mark.parametrize("question, bounds, score, budget", FORMS, ids=[f[0][-12:] for f in FORMS])
def test_chat_and_the_grader_read_each_form_alike(question, bounds, score, budget):
    length = read_length(question)
    assert (length.upper, length.lower) == bounds and read_full_score(question) == score
    spec = read_task("summarize", question)
    assert (spec.limit, spec.low, spec.score) == (*budget, score)


def test_a_limit_sent_with_the_request_wins_and_keeps_the_floor_under_it():
    assert (read_task("essay", "总字数1000～1200字。", word_limit=1100).low, 1100) == (1000, 1100)
    over = read_task("essay", "不少于800字。", word_limit=600)     # a floor above the limit is not kept
    assert (over.limit, over.low) == (600, 510)


def test_the_prompt_states_an_about_band_and_a_bare_floor():
    about = build_prompt(mode="analyze", question="作答", material="资料", task="谈谈理解。要求：300字左右。")
    assert "270～330字" in about.messages[0]["content"] and about.word_limit == 330
    floor = build_prompt(mode="essay", question="作答", material="资料", task="写一篇文章，不少于800字。")
    assert "不少于800字" in floor.messages[0]["content"] and floor.word_limit is None


def test_an_offline_answer_to_about_n_characters_is_within_the_limit_the_grader_reads():
    item = PracticeBank.load().get("sum-waste-sorting")
    question = item.question.replace("不超过200字", "200字左右")
    prompt = build_prompt(mode="summarize", question="作答", material=item.material, task=question)
    answer = offline_answer(prompt)
    assert 180 <= char_count(answer) <= 220
    executor = ThreadPoolExecutor(1)
    grader = GradingService(gateway=LLMGateway(OfflineProvider(), ConcurrencySlots(1), LLMMeter()),
                            executor=executor, practice=PracticeBank.load(), server_id="test")
    try:
        graded = asyncio.run(grader.grade(GradeRequest.from_payload(
            {"question": question, "material": item.material, "answer": answer})))
    finally:
        executor.shutdown()
    assert (graded["word_limit"], graded["word_limit_source"], graded["over_limit"]) == (220, "question", False)
    assert not any(c["rule"] == "字数" for c in graded["caps"])
