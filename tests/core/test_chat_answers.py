"""The answer-sheet discipline in core: reading a 题目, the prompt files, plain text,
the self-check and the stream cleaner."""
from __future__ import annotations

import shutil

import pytest

from core.chat.prompts import MODE_ALIASES, PROMPTS_DIR, PromptBook, build_prompt, read_task, resolve_mode
from core.chat.service import StreamCleaner
from core.chat.wordlimit import char_count, plain_answer, revision_messages, self_check
from core.grading import TYPE_ALIASES

SPEECH_TASK = "假如你是H镇党委书记，将在全镇非遗传承工作座谈会上讲话。请写一篇讲话稿。（25分）要求：无需标题，不超过500字。"


def test_a_task_is_read_for_budget_score_role_genre_and_parts():
    spec = read_task("document", SPEECH_TASK)
    assert (spec.limit, spec.low, spec.score) == (500, 425, 25)
    assert spec.role == "H镇党委书记" and spec.genre.name == "讲话稿"
    assert spec.exempt == ("标题",) and spec.required_parts == ("称谓", "正文", "结束语")
    compound = read_task("summarize", "概括G市存在的问题及原因。（20分）要求：全面准确，不超过300字。")
    assert compound.labels == ("问题", "原因") and compound.points == (6, 8)
    essay = read_task("essay", "自拟题目，写一篇文章。要求：总字数1000～1200字。")
    assert (essay.low, essay.limit) == (1000, 1200)
    assert read_task("analyze", "谈谈你对这句话的理解。要求：观点明确。").subtype == "解释"
    assert read_task("summarize", "概括问题", word_limit=150).limit == 150  # the request's limit wins


def test_the_prompts_are_data_read_from_the_directory(tmp_path):
    for path in PROMPTS_DIR.glob("*.md"):
        shutil.copy(path, tmp_path / path.name)
    edited = tmp_path / "countermeasure.md"
    edited.write_text(edited.read_text(encoding="utf-8").replace("当前题型是提出对策题。", "当前题型是对策题（老师改过）。"),
                      encoding="utf-8")
    book = PromptBook.load(tmp_path)
    assert book.digest != PromptBook.load(PROMPTS_DIR).digest   # an edit changes the cache key
    prompt = build_prompt(mode="countermeasure", question="作答", material="资料", task="提出对策。", book=book)
    assert "对策题（老师改过）" in prompt.messages[0]["content"]
    (tmp_path / "essay.md").unlink()
    with pytest.raises(ValueError):
        PromptBook.load(tmp_path)


def test_one_alias_table_serves_chat_and_grading():
    for name in ("概括", "归纳概括", "分析", "综合分析", "对策", "提出对策", "应用文", "贯彻执行", "文章", "大作文"):
        assert resolve_mode(name) == TYPE_ALIASES[name] == MODE_ALIASES[name]
    assert resolve_mode("批改") == "grade" and "批改" not in TYPE_ALIASES
    assert resolve_mode("作文") is None and resolve_mode(3) is None


def test_plain_answer_drops_markdown_and_markers_and_keeps_grounds():
    text, citations = plain_answer('## 答案\n**1. 设施不足**[2]：桶少。\n- 2. 宣传单一[1][3]。\n'
                                   '依据：[{"sentence": 1, "sources": [4]}]')
    assert text == "答案\n1. 设施不足：桶少。\n2. 宣传单一。"
    assert citations == [{"sentence": 1, "sources": [4]}, {"sentence": 2, "sources": [2]},
                         {"sentence": 3, "sources": [1, 3]}]


def test_self_check_names_one_revision():
    spec = read_task("document", SPEECH_TASK)
    speech = "各位代表，同志们：\n" + "竹编传承要抓人才、抓创新、抓市场。" * 25 + "\n谢谢大家！"
    check = self_check(speech, spec)
    assert check.parts == {"称谓": True, "正文": True, "结束语": True} and check.revision is None
    assert check.passed and 425 <= char_count(speech) <= 500
    short = self_check("各位代表：\n竹编要传承。", spec)
    assert short.revision == "expand" and short.missing_parts == ["正文", "结束语"]
    over = self_check("字" * 501, spec)
    assert over.revision == "condense"
    missing = self_check("各位代表，同志们：\n" + "竹编传承要抓人才、抓创新、抓市场。" * 26, spec)
    assert missing.within_band and missing.revision == "revise"
    asked = revision_messages([{"role": "user", "content": "题"}], "答", missing)[-1]["content"]
    assert "缺少结束语" in asked and "500字" in asked


def test_stream_cleaner_holds_back_only_markers_and_the_grounds_line():
    cleaner = StreamCleaner()
    deltas = ["1. 设施", "不足[", "2]：桶少。\n依", "据：[{\"sentence\": 1, ", "\"sources\": [2]}]"]
    shown = "".join(cleaner.feed(d) for d in deltas) + cleaner.close()
    assert shown == "1. 设施不足：桶少。\n"
    again = StreamCleaner()
    assert "".join(again.feed(d) for d in ["依据资料，", "要点如下。"]) + again.close() == "依据资料，要点如下。"
