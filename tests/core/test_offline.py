"""The offline answerer on the bundled practice items and on method questions."""
from __future__ import annotations

import re

import pytest

from core.chat.offline import invert, offline_answer, retrieval_query, task_focus
from core.chat.prompts import Source, build_prompt
from core.chat.wordlimit import char_count, has_markdown, self_check
from core.grading import PracticeBank

# The items this answerer was tuned and measured on; bench/offline_answers.py measures
# every item of data/practice/, new ones included (and tells which miss the bar).
MEASURED = ("cm-home-elderly-care", "cm-rural-homestay", "doc-proposal-food-waste",
            "doc-speech-bamboo-heritage", "sum-old-community-renewal", "sum-waste-sorting")
ITEMS = [item for item in PracticeBank.load().list() if item.id in MEASURED]


def answer(item):
    prompt = build_prompt(mode=item.question_type, question=item.question, material=item.material,
                          task=item.question, word_limit=item.word_limit)
    return prompt, offline_answer(prompt)


@pytest.mark.parametrize("item", ITEMS, ids=lambda item: item.id)
def test_offline_answers_fit_the_sheet(item):
    assert len(ITEMS) == len(MEASURED)
    prompt, text = answer(item)
    assert 0.6 * item.word_limit <= char_count(text) <= item.word_limit
    assert not has_markdown(text) and not re.search(r"\[\d+\]", text)
    assert text == answer(item)[1]                       # deterministic
    check = self_check(text, prompt.spec)
    assert not check.missing_parts, check.missing_parts  # the 文种's parts are all there
    terms = {p for point in item.points for p in point.phrasings if p in item.material}
    assert sum(1 for t in terms if t in text) * 2 >= len(terms)


def test_offline_compound_question_answers_in_labelled_parts():
    material = ("资料1\n某县河道垃圾堆积，巡河流于形式。由于责任不明确，部门之间互相推诿。\n"
                "村民环保意识不强，认为治河是政府的事。")
    prompt = build_prompt(mode="summarize", question="作答", material=material,
                          task="概括某县河道治理中存在的问题及原因。（10分）要求：不超过150字。")
    text = offline_answer(prompt)
    assert text.splitlines()[0] == "问题：" and "原因：" in text
    assert char_count(text) <= 150


def test_a_problem_is_turned_round_into_a_measure():
    assert invert("宣传形式单一") == "丰富宣传形式"
    assert invert("参与的积极性不高") == "提高参与的积极性"
    assert invert("一些村庄污水处理设施跟不上") == "完善村庄污水处理设施"
    assert invert("我到现在也分不太清") is None          # a remark, not a problem statement


def test_retrieval_queries_a_long_task_on_its_focus():
    assert task_focus("请以街道办名义写一份垃圾分类倡议书") == "垃圾分类倡议书"
    query = retrieval_query("请按要求作答", "针对给定资料中的问题，提出解决对策。", "某县农村垃圾分类推进缓慢，村民参与度不高。")
    assert "农村垃圾分类" in query and "根据" not in query and "请按要求" not in query


def test_method_answers_are_plain_and_cut_at_sentence_ends():
    src = Source(id="m", title="四步法", score=3.0,
                 text="## 第一步\n**审题**：明确对象。" + "找点要全面，关键词前置。" * 40)
    prompt = build_prompt(mode="summarize", question="如何答好归纳概括题？", sources=[src])
    text = offline_answer(prompt)
    assert "#" not in text and "**" not in text and "《四步法》：审题：明确对象。" in text
    excerpt = text.splitlines()[1]
    assert excerpt.endswith("。") and char_count(excerpt) < 260
