"""The deterministic grading layer, the JSON reader and the validator, on fixed inputs."""
from __future__ import annotations

import pytest

from core.chat.wordlimit import char_count, counted_prefix, trim_to_limit
from core.grading.llm_grader import first_json_object, validate
from core.grading.practice import PracticeBank, PracticeError, parse_item
from core.grading.rubric import DEFAULT_FULL_SCORES, dimension_maxima
from core.grading.rules import GradeInput, grade_by_rules
from core.grading.structure import detect_genre, detect_question_type, structure_checks
from core.grading.text import locate_quote

BANK = PracticeBank.load(strict=True)
WASTE = BANK.get("sum-waste-sorting")
OFF_TOPIC = ("今天天气很好，我和朋友去公园散步，看到了很多花。\n"
             "晚上我们一起吃了火锅，聊了很多关于电影和音乐的话题。")
# A candidate's own wording of all six points of WASTE (not the reference's sentences).
RESTATED = """Q市推进垃圾分类主要有以下问题：
1.垃圾桶不够，投放点远，居民投放不方便。
2.宣传方式单一，很多居民分不清类别。
3.居民觉得多此一举，积极性不高，混投现象普遍。
4.收运车辆不足，混装混运，分了也白分。
5.执法检查少，处罚标准不明确，责任主体不清。
6.厨余垃圾处理厂未建成，末端处理能力不足。"""


def rules_for(item, answer: str, **changes):
    values = dict(answer=answer, question=item.question, question_type=item.question_type,
                  full_score=item.full_score, material=item.material, reference=item.reference_answer,
                  word_limit=item.word_limit, genre=item.genre, points=item.points,
                  rubric_id=item.rubric_id, practice_id=item.id)
    values.update(changes)
    return grade_by_rules(GradeInput(**values))


# --- counting by the examiners' rule ---

@pytest.mark.parametrize("text, expected", [
    ("一、加强宣传。", 7),                      # 一 、 加 强 宣 传 。
    ("1. 设施 不足；\n2. 宣传单一。", 14),       # 1 . 设 施 不 足 ； 2 . 宣 传 单 一 。
    ("“多此一举”，混投多！", 11),              # “ 多 此 一 举 ” ， 混 投 多 ！
    ("\t  \n", 0),
    ("Q市 2025年", 7),                          # Q 市 2 0 2 5 年
])
def test_char_count_matches_hand_counts(text, expected):
    assert char_count(text) == expected


def test_counted_prefix_is_what_fits_on_the_grid():
    text = "一二三 四五。\n六七八"
    assert counted_prefix(text, 5) == "一二三 四五"
    assert counted_prefix(text, 6) == "一二三 四五。\n"
    assert counted_prefix(text, 100) == text
    assert char_count(counted_prefix(text, 4)) == 4


def test_trim_to_limit_cuts_at_a_sentence_end_within_the_limit():
    text = "第一句话写完了。第二句话也写完了。第三句话很长很长很长很长。"
    trimmed = trim_to_limit(text, 20)
    assert trimmed == "第一句话写完了。第二句话也写完了。"
    assert char_count(trimmed) <= 20
    assert trim_to_limit("短。", 20) == "短。"


# --- scoring points ---

def test_the_reference_answer_covers_its_own_rubric_for_every_item():
    assert len(BANK) >= 8
    for item in BANK.list():
        grade = rules_for(item, item.reference_answer)
        assert [j.status for j in grade.judgements] == ["hit"] * len(item.points), item.id
        if item.question_type == "essay":  # marked by class: a full-coverage essay is 一类卷
            assert grade.essay.name == "一类卷", item.id
        else:
            assert grade.dimensions["points"].score == grade.dimensions["points"].max, item.id
        assert char_count(item.reference_answer) <= item.word_limit, item.id


def test_an_answer_restating_the_points_in_its_own_words_scores_full_coverage():
    grade = rules_for(WASTE, RESTATED)
    assert {j.point.id: j.status for j in grade.judgements} == {f"p{n}": "hit" for n in range(1, 7)}
    assert grade.dimensions["points"].score == 12
    assert grade.score == 15
    assert not grade.over_limit


def test_points_extracted_from_a_reference_are_covered_by_that_reference():
    for item in BANK.list():
        grade = rules_for(item, item.reference_answer, points=(), rubric_id="")
        assert grade.rubric_source == "reference"
        assert len(grade.points) >= 3, item.id
        assert all(j.status == "hit" for j in grade.judgements), item.id


def test_points_extracted_from_material_name_words_of_the_material():
    grade = rules_for(WASTE, RESTATED, points=(), reference="")
    assert grade.rubric_source == "material"
    assert 3 <= len(grade.points) <= 6
    for point in grade.points:
        assert point.keywords and all(w in WASTE.material for w in point.keywords)
    assert "自动提取" not in grade.points[0].label  # labels are clauses of the material


@pytest.mark.parametrize("answer", ["", "   \n  "])
def test_an_empty_answer_scores_zero(answer):
    grade = rules_for(WASTE, answer)
    assert grade.score == 0
    assert all(j.status == "missed" for j in grade.judgements)


def test_an_off_topic_answer_scores_near_zero_for_every_type():
    for item in BANK.list():
        grade = rules_for(item, OFF_TOPIC)
        assert grade.score <= 0.05 * item.full_score, (item.id, grade.score)
        assert grade.relevance == 0


def test_evidence_is_always_a_verbatim_slice_of_the_answer():
    answer = "  1.垃圾桶不够，  投放点远。\n\n2.宣传方式单一 ，居民分不清类别。\n3.执法检查少。"
    grade = rules_for(WASTE, answer)
    quoted = [e for j in grade.judgements for e in j.evidence]
    assert quoted, "some points are hit"
    for evidence in quoted:
        assert evidence in answer
    for j in grade.judgements:
        assert (j.status == "missed") == (not j.evidence)


def test_a_point_written_beyond_the_word_limit_earns_nothing():
    filler = "Q市垃圾分类的问题很多，需要认真梳理。" * 11   # 209 characters, no point in it
    answer = filler + "\n执法检查少，处罚标准不明确。"
    grade = rules_for(WASTE, answer)
    assert grade.over_limit and grade.char_count == char_count(answer)
    p5 = next(j for j in grade.judgements if j.point.id == "p5")
    assert p5.status == "missed"
    assert "超出字数限制" in p5.note
    unlimited = rules_for(WASTE, answer, word_limit=None)
    assert next(j for j in unlimited.judgements if j.point.id == "p5").status == "hit"


def test_copying_long_material_sentences_costs_language_marks():
    copied = "\n".join(f"{n}.{s}" for n, s in enumerate(WASTE.material.split("。")[1:5], 1))
    grade = rules_for(WASTE, copied, word_limit=None)
    assert grade.copy_ratio > 0.5
    assert grade.dimensions["language"].score < grade.dimensions["language"].max
    assert "照抄" in grade.dimensions["language"].comment


# --- structure ---

PROPOSAL = BANK.get("doc-proposal-food-waste")
SPEECH = BANK.get("doc-speech-bamboo-heritage")
ESSAY = BANK.get("essay-small-livelihood-matters")


def test_a_proposal_without_its_signature_loses_format_marks():
    full = rules_for(PROPOSAL, PROPOSAL.reference_answer)
    assert all(c.passed for c in full.checks)
    unsigned = PROPOSAL.reference_answer.rsplit("\nY市文明办", 1)[0]
    grade = rules_for(PROPOSAL, unsigned)
    failed = {c.key for c in grade.checks if not c.passed}
    assert failed == {"signature"}
    assert grade.dimensions["format"].score < full.dimensions["format"].score
    assert "落款" in grade.dimensions["format"].comment


@pytest.mark.parametrize("ending, signed", [
    ("让我们一起行动起来", False),            # a slogan, not an issuer
    ("节约光荣", False),
    ("××市文明办", True),
    ("2025年5月20日", True),
    ("×年×月×日", True),
    ("某某社区居委会 2025年6月1日", True),
])
def test_a_signature_names_an_issuer_or_a_date(ending, signed):
    text = f"节约倡议书\n各位市民：\n请大家节约粮食，从我做起。\n{ending}"
    checks = {c.key: c.passed for c in structure_checks(text, "document", "倡议书")}
    assert checks["signature"] is signed


def test_a_document_without_title_or_salutation_is_caught():
    body = PROPOSAL.reference_answer.split("\n", 2)[2]  # drop the title and the 称谓
    failed = {c.key for c in structure_checks(body, "document", "倡议书") if not c.passed}
    assert failed == {"title", "salutation"}


def test_a_speech_needs_its_closing_not_a_signature():
    assert all(c.passed for c in structure_checks(SPEECH.reference_answer, "document", "讲话稿"))
    no_thanks = SPEECH.reference_answer.replace("谢谢大家！", "")
    failed = {c.key for c in structure_checks(no_thanks, "document", "讲话稿") if not c.passed}
    assert failed == {"closing"}


def test_an_essay_without_a_title_is_caught():
    untitled = ESSAY.reference_answer.split("\n", 1)[1]
    checks = {c.key: c.passed for c in structure_checks(untitled, "essay")}
    assert checks["title"] is False
    assert {c.key: c.passed for c in structure_checks(ESSAY.reference_answer, "essay")} == \
        {"title": True, "paragraphs": True}


def test_unnumbered_summaries_fail_the_numbering_check():
    flat = "垃圾桶不够，宣传方式单一，居民积极性不高，混装混运，执法检查少，处理厂未建成。"
    checks = {c.key: c.passed for c in structure_checks(flat, "summarize")}
    assert checks["numbered"] is False
    inline = "一是垃圾桶不够；二是宣传方式单一；三是执法检查少。"
    assert {c.key: c.passed for c in structure_checks(inline, "summarize")}["numbered"] is True


def test_duplicate_items_are_caught():
    answer = "1.宣传方式单一，居民分不清类别。\n2.居民分不清类别，宣传方式单一。\n3.执法检查少。"
    checks = {c.key: c for c in structure_checks(answer, "summarize")}
    assert checks["no_duplicates"].passed is False
    assert "第 1 条与第 2 条" in checks["no_duplicates"].detail


@pytest.mark.parametrize("question, expected", [
    ("根据给定资料，概括Q市在推进垃圾分类过程中存在的问题。", "summarize"),
    ("请归纳资料中M区的经验做法。", "summarize"),
    ("针对S县民宿发展中存在的问题，提出解决对策。", "countermeasure"),
    ("概括存在的问题并提出建议。", "countermeasure"),
    ("谈谈你对“热线要当解题人”这句话的理解。", "analyze"),
    ("以Y市文明办的名义拟写一份倡议书。", "document"),
    ("假如你是镇党委书记，请写一篇讲话稿。", "document"),
    ("围绕“办好民生小事”，自选角度，自拟题目，写一篇文章。", "essay"),
    ("请写一篇议论文。", "essay"),
    ("阅读资料。", None),
])
def test_question_type_is_detected_from_the_wording(question, expected):
    assert detect_question_type(question) == expected


def test_genre_detection_prefers_the_longest_name():
    assert detect_genre("请写一份调研报告") == "调研报告"
    assert detect_genre("请写一篇发言稿") == "发言稿"
    assert detect_genre("请概括问题") is None


def test_default_full_scores_and_dimension_maxima_add_up():
    assert DEFAULT_FULL_SCORES == {"summarize": 15, "analyze": 20, "countermeasure": 20,
                                   "document": 25, "essay": 40}
    for qtype, full in DEFAULT_FULL_SCORES.items():
        maxima = dimension_maxima(qtype, full)
        assert sum(maxima.values()) == full
        assert all(v * 2 == int(v * 2) for v in maxima.values())  # half points
    assert set(dimension_maxima("document", 25)) == {"points", "format", "structure", "language"}
    assert set(dimension_maxima("essay", 40)) == {"theme", "points", "structure", "language"}


# --- quotes, JSON and validation ---

def test_locate_quote_accepts_only_what_the_answer_says():
    answer = "1.垃圾桶不够，\n投放点远。\n2.宣传方式单一。"
    assert locate_quote(answer, "宣传方式单一") == "宣传方式单一"
    # A re-wrapped quote is found, and returned as the answer has it.
    assert locate_quote(answer, "垃圾桶不够，投放点远") == "垃圾桶不够，\n投放点远"
    assert locate_quote(answer, "垃圾桶数量不够") is None       # paraphrase: not a quote
    assert locate_quote(answer, "不") is None                     # too short to prove anything
    assert locate_quote(answer, "宣传" * 100) is None             # too long
    assert locate_quote(answer, None) is None                     # type: ignore[arg-type]


@pytest.mark.parametrize("text, expected", [
    ('{"a": 1}', {"a": 1}),
    ('好的，以下是评分：\n```json\n{"a": {"b": [1, 2]}}\n```\n希望有帮助', {"a": {"b": [1, 2]}}),
    ('评分如下 {"a": "含有}括号{的字符串"} 以上', {"a": "含有}括号{的字符串"}),
    ('[1, 2] 然后 {"x": true}', {"x": True}),
    ("我无法给出评分。", None),
    ('{"a": 1', None),
    ("", None),
])
def test_first_json_object_is_tolerant_of_fences_and_prose(text, expected):
    assert first_json_object(text) == expected


def _verdict_input():
    return rules_for(WASTE, RESTATED)


def test_validate_clamps_out_of_range_scores_and_names_the_repair():
    grade = _verdict_input()
    verdict, problems = validate({"dimensions": {"structure": {"score": 9, "comment": "好"},
                                                 "language": {"score": -2, "comment": "差"},
                                                 "points": {"comment": "全"}},
                                  "points": [], "suggestions": ["x"], "improved_answer": "示范"}, grade)
    assert problems == []
    assert verdict.scores == {"structure": 1.5, "language": 0.0}
    assert any("超出" in r for r in verdict.repairs)


def test_validate_repairs_missing_scores_comments_points_and_suggestions():
    grade = _verdict_input()
    verdict, problems = validate({"dimensions": {"结构": {}, "语言表达": {"score": "1分"}},
                                  "improved_answer": "示范答案"}, grade)
    assert problems == []
    assert verdict.scores["structure"] == grade.dimensions["structure"].score   # from the rules
    assert verdict.scores["language"] == 1.0                                     # "1分" parsed
    assert verdict.suggestions == grade.suggestions
    assert verdict.points == {}
    assert len(verdict.repairs) >= 3


@pytest.mark.parametrize("obj, problem", [
    (None, "JSON 对象"),
    ([1], "JSON 对象"),
    ({"improved_answer": "x"}, "dimensions"),
    ({"dimensions": {}, "improved_answer": "  "}, "improved_answer"),
    ({"dimensions": {}}, "improved_answer"),
])
def test_validate_reports_defects_that_need_a_retry(obj, problem):
    verdict, problems = validate(obj, _verdict_input())
    assert verdict is None
    assert any(problem in p for p in problems)


# --- practice items ---

def test_every_bundled_item_is_complete_and_original():
    counts: dict[str, int] = {}
    for item in BANK.list():
        counts[item.question_type] = counts.get(item.question_type, 0) + 1
        assert 600 <= len(item.material) <= 1500, item.id
        assert item.points and all(p.phrasings for p in item.points)
        assert "原创" in item.note
    assert counts["summarize"] >= 2 and counts["countermeasure"] >= 2
    assert counts["analyze"] >= 1 and counts["essay"] >= 1 and counts["document"] >= 2
    assert len({i.genre for i in BANK.list("document")}) >= 2


def test_a_malformed_practice_item_is_refused():
    good = BANK.get("sum-waste-sorting").detail()
    with pytest.raises(PracticeError, match="question_type"):
        parse_item({**good, "question_type": "poem", "scoring_points": []})
    with pytest.raises(PracticeError, match="scoring_points"):
        parse_item({**good, "question_type": "summarize", "reference_answer": "x",
                    "scoring_points": [{"id": "p1", "label": "x", "score": 1, "phrasings": []}]})
