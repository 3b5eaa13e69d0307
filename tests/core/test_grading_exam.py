"""Grading by the exam's own rules and by meaning: the cases of the issue, one by one,
graded offline through the real service (rules only, jieba, the bundled items)."""
from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.chat.wordlimit import char_count
from core.errors import InvalidRequest
from core.grading import GradeRequest, GradingService, PracticeBank
from core.grading.calibration import load_cases
from core.grading.exam import check_task, item_kind
from core.grading.lexicon import head_words
from core.grading.points import ScoringPoint, is_heading, judge, points_from_material
from core.grading.rules import needs_how_for
from core.grading.structure import structure_checks
from core.llm import LLMGateway, LLMMeter, OfflineProvider
from core.traffic.concurrency import ConcurrencySlots

BANK = PracticeBank.load(strict=True)
SIX_HEADINGS = "1.挖掘特色。2.规范服务管理。3.加强人才培训。4.完善基础设施。5.拓宽营销渠道。6.优化审批服务。"
ESSAY_36 = "办好民生小事\n民生小事很重要。\n要倾听民意。\n要健全机制。\n干部要有为民情怀。"
PROBLEMS_FOR_PRACTICES = ("M区老旧小区存在以下问题：\n1.管网老化，没有电梯，停车困难，居民意见大。\n"
                          "2.过去改造政府端菜，居民没有发言权。\n3.路面刚铺好又因换水管被挖开，反复开挖。\n"
                          "4.加装电梯难以协调低层住户。\n5.改造资金来源单一。\n6.改造后无人管理，居民担心。")
OPEN_LETTER_Q = ("假如你是Q市城管局的工作人员，请根据给定资料，以Q市城管局的名义给全市居民写一封公开信，"
                 "说明垃圾分类工作存在的问题和下一步打算。（25分）要求：内容具体，格式规范，不超过400字。")
PROPOSAL = ("垃圾分类倡议书\n全市广大居民朋友们：\n目前，我市部分小区分类设施不足，宣传形式单一，混投现象时有发生。"
            "为此，我们发出如下倡议：\n一、学习分类知识，分清厨余垃圾和其他垃圾。\n二、按时按点投放，不混投、不乱扔。\n"
            "三、积极参加志愿服务，在投放点值守引导。\n让我们从我做起，共建美丽家园！\nQ市城管局\n2025年6月1日")


@pytest.fixture(scope="module")
def grade():
    executor = ThreadPoolExecutor(1)
    service = GradingService(gateway=LLMGateway(OfflineProvider(), ConcurrencySlots(1), LLMMeter()),
                             executor=executor, practice=BANK, server_id="test")

    def run(payload):
        return asyncio.run(service.grade(GradeRequest.from_payload(payload)))
    yield run
    executor.shutdown()


def test_six_bare_headings_score_at_most_half_and_say_why(grade):
    g = grade({"practice_id": "cm-rural-homestay", "answer": SIX_HEADINGS})
    assert g["score"] <= g["full_score"] / 2
    assert all(p["status"] != "hit" for p in g["points_hit"])
    assert any("只是标题" in p["note"] for p in g["points_hit"])
    assert not any(e for p in g["points_hit"] for e in p["evidence"])  # a heading is never evidence
    assert g["caps"][0]["rule"] == "字数" and "不到字数要求" in g["overall_comment"]


def test_a_thirty_six_character_essay_is_fourth_class(grade):
    assert char_count(ESSAY_36) < 40
    g = grade({"practice_id": "essay-small-livelihood-matters", "answer": ESSAY_36})
    assert g["essay_class"] == "四类卷" and g["score"] <= 10
    assert "不足 400 字" in g["overall_comment"]
    assert g["score"] == sum(d["score"] for d in g["dimensions"])


def test_the_reference_essay_is_first_class_and_an_off_topic_one_fourth(grade):
    item = BANK.get("essay-small-livelihood-matters")
    assert grade({"practice_id": item.id, "answer": item.reference_answer})["essay_class"] == "一类卷"
    off = "以科技创新赋能高质量发展\n" + "科技是第一生产力，创新是引领发展的第一动力，要加大研发投入、培养创新人才。\n" * 8
    assert grade({"practice_id": item.id, "answer": off})["essay_class"] == "四类卷"


def test_wrong_task_is_capped_and_named_first(grade):
    g = grade({"practice_id": "sum-old-community-renewal", "answer": PROBLEMS_FOR_PRACTICES})
    assert g["task"] == {"asked": "measure", "given": "problem", "mismatch": True}
    assert g["caps"][0]["rule"] == "审题" and g["score"] <= 0.3 * g["full_score"]
    assert g["overall_comment"].startswith("审题错误") and g["suggestions"][0].startswith("审题错误")


def test_answers_that_give_what_is_asked_are_not_task_errors(grade):
    for item in BANK.list():
        g = grade({"practice_id": item.id, "answer": item.reference_answer})
        assert not any(c["rule"] == "审题" for c in g["caps"]), item.id


def test_an_evaluation_that_argues_with_measures_is_not_a_task_error():
    question = "有人认为，征求群众意见“走走形式就行”。请对这一观点进行评析。（20分）要求：不超过300字。"
    answer = ("首先，群众最了解身边的急难愁盼，增加托育服务、完善乡村公交等建议被吸纳，规划更接地气。\n"
              "其次，开门问策能凝聚共识，让群众从旁观者变成参与者，规划实施时更有群众基础。\n"
              "再次，征求意见要拓宽线上线下渠道，分类梳理、及时反馈采纳情况，避免问了不用。")
    assert not check_task(question, "analyze", answer).mismatch
    listed = "1.加强热线宣传。\n2.增加话务员数量。\n3.加强话务员培训。\n4.完善热线设施。"
    assert check_task(question, "analyze", listed).mismatch


def test_wrong_genre_loses_the_format_marks_is_capped_and_named_first(grade):
    material = BANK.get("sum-waste-sorting").material
    g = grade({"question": OPEN_LETTER_Q, "material": material, "answer": PROPOSAL})
    assert g["genre"] == "公开信" and g["answer_genre"] == "倡议书"
    assert next(d for d in g["dimensions"] if d["key"] == "format")["score"] == 0
    assert g["caps"][0]["rule"] == "文种" and g["score"] <= 0.6 * g["full_score"]
    assert g["overall_comment"].startswith("文种错误")
    right = PROPOSAL.replace("垃圾分类倡议书", "致全市居民的一封公开信").replace("我们发出如下倡议", "我局将做好以下工作")
    assert not any(c["rule"] == "文种" for c in grade({"question": OPEN_LETTER_Q, "material": material,
                                                        "answer": right})["caps"])


def test_the_question_states_its_own_limit_and_full_score(grade):
    item = BANK.get("sum-waste-sorting")
    long_answer = item.reference_answer + "\n" + "7.此外，部分居民对垃圾分类的意义认识不足，社区缺乏常态化的督导机制。" * 2
    assert char_count(long_answer) > 200
    g = grade({"question": item.question, "material": item.material, "answer": long_answer})
    assert "不超过200字" in item.question and "（15分）" in item.question
    assert (g["word_limit"], g["word_limit_source"], g["full_score"], g["full_score_source"]) == \
        (200, "question", 15, "question")
    assert g["over_limit"] is True and g["score"] < 15
    assert any(c["rule"] == "字数" and c["deduct"] > 0 for c in g["caps"])
    asked = grade({"question": item.question, "material": item.material, "answer": long_answer,
                   "word_limit": 400, "full_score": 20})
    assert (asked["word_limit_source"], asked["full_score_source"], asked["over_limit"]) == ("request", "request", False)


@pytest.mark.parametrize("answer", [
    "1.设施不足，桶少点远。2.宣传单一，居民不会分。3.混装混运，分了白分。",
    "问题有三：一是设施不足；二是宣传单一；三是混装混运。",
    "首先，设施不足。其次，宣传单一。最后，混装混运。",
])
def test_numbering_on_one_line_counts_as_itemised(answer):
    numbered = next(c for c in structure_checks(answer, "summarize") if c.key == "numbered")
    assert numbered.passed, numbered.detail


def test_prose_with_a_final_word_is_not_itemised():
    numbered = next(c for c in structure_checks("居民多次反映，最后自己凑钱疏通。", "summarize") if c.key == "numbered")
    assert not numbered.passed


# --- meaning over keywords ---

def status(phrasing: str, answer: str) -> str:
    return judge(ScoringPoint(id="p", label=phrasing, phrasings=(phrasing,)), answer).status


def test_a_peripheral_word_is_no_hit_and_no_partial():
    assert status("加强消防安全宣传", "骑电动车要佩戴安全头盔，加强管理。") == "missed"
    assert status("加强消防安全宣传", "社区开展消防安全宣传进楼道活动。") == "hit"
    assert status("规范服务", "提升服务意识。") == "missed"  # one of two head words is not a partial


def test_single_characters_never_count():
    assert status("派医生到乡镇", "把消息传到乡镇，再派人了解。") == "missed"
    assert status("派医生到乡镇", "选派骨干医生下沉到乡镇卫生院。") == "hit"
    for phrase in ("派医生到乡镇", "桶少", "补齐充电设施", "加强宣传", "群众满不满意"):
        assert all(len(w) >= 2 for w in head_words(phrase)), phrase


def test_near_synonyms_from_the_lexicon_state_the_concept():
    assert status("补齐充电设施", "在小区增建充电设施。") == "hit"
    assert status("下沉医生", "向村卫生室派驻医生。") == "hit"
    assert status("加强宣传", "通过入户宣讲普及分类知识。") == "hit"


def test_a_phrase_whose_words_leave_it_unsaid_counts_only_verbatim():
    assert head_words("从根上解决") == ()
    assert status("从根上解决", "最后居民只好自己凑钱解决。") == "missed"
    assert status("从根上解决", "统一规划，从根上解决充电难。") == "hit"


def test_the_evidence_is_the_sentence_that_states_the_point_with_its_how():
    answer = "1.挖掘特色，错位发展。引导民宿主融入茶文化，打造主题民宿。\n2.规范服务。"
    j = judge(ScoringPoint(id="p", label="挖掘特色", phrasings=("挖掘特色",)), answer, needs_how=True)
    assert j.status == "hit" and j.evidence == ["1.挖掘特色，错位发展。引导民宿主融入茶文化，打造主题民宿。"]
    bare = judge(ScoringPoint(id="p", label="规范服务", phrasings=("规范服务",)), answer, needs_how=True)
    assert bare.status == "partial" and bare.evidence == [] and "只是标题" in bare.note


def test_material_points_are_examiner_labels_with_their_source_sentence():
    item = BANK.get("sum-old-community-renewal")
    points = points_from_material(item.material, item.question, item.question_type)
    assert len(points) >= 4
    for p in points:
        assert 2 <= len(p.label) <= 12 and p.material_quote in item.material, p
        assert not re.search(r"补充要点|坦言|介绍|表示", p.label), p
        assert item_kind(p.label) != "problem", p  # a 做法 question gets no problems as points


# --- the calibration set ---

def test_every_calibration_evidence_is_verbatim_and_never_a_bare_heading(grade):
    cases = load_cases(bank=BANK)
    assert len(cases) >= 40 and {c.question_type for c in cases} == \
        {"summarize", "analyze", "countermeasure", "document", "essay"}
    for case in cases:
        g = grade(case.request)
        answer = case.request["answer"]
        question = case.request.get("question") or BANK.get(case.request["practice_id"]).question
        # Where the question asks what to do, a heading is bare: it may never be the evidence.
        asks_how = needs_how_for(question, g["question_type"])
        for p in g["points_hit"] + g["points_missed"]:
            for e in p["evidence"]:
                assert e in answer and not (asks_how and is_heading(e)), (case.id, p["id"], e)
            assert p["status"] != "missed" or not p["evidence"], (case.id, p["id"])


# --- scoring points from the request ---

@pytest.mark.parametrize("points, field", [
    ([], "scoring_points"),
    ("投放设施不足", "scoring_points"),
    ([{"score": 2}], "scoring_points[0].label"),
    ([{"label": "设施不足", "score": 0}], "scoring_points[0].score"),
    ([{"label": "设施不足", "score": True}], "scoring_points[0].score"),
    ([{"label": "设施不足", "score": 2, "phrasings": "设施不足"}], "scoring_points[0].phrasings"),
    ([{"label": "设施不足", "score": 2, "phrasings": ["足"]}], "scoring_points[0].phrasings"),
    ([{"label": "设施不足", "score": 2, "dimension": "format"}], "scoring_points[0].dimension"),
    ([{"label": f"点{n}", "score": 1} for n in range(31)], "scoring_points"),
    ([{"label": "立意", "score": 2, "dimension": "theme"}], "scoring_points"),
])
def test_bad_scoring_points_are_refused_naming_the_field(points, field):
    with pytest.raises(InvalidRequest) as err:
        GradeRequest.from_payload({"question": "概括问题。", "answer": "答案", "scoring_points": points})
    assert f"字段 {field}" in err.value.message
