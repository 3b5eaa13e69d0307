"""The web console in a real browser: Debian's chromium driven by Playwright (tests/browser.py).

Real server processes on loopback ports: one without keys (practice, grading) talking
to the fake LLM, and two with keys sharing one DATA_DIR (knowledge, the dashboard's
keys and cache button). The dashboard on a real supervisord fleet behind Nginx is in
tests/test_fleet.py. Every page is checked for console errors, and photographed: into a
temporary folder, or into docs/screenshots/ with SHENLUN_SCREENSHOTS=1 (the README's
pictures).
"""
from __future__ import annotations

import http.client
import json
import re
import time
from pathlib import Path

import pytest

from core.chat.wordlimit import char_count
from tests.browser import missing_browser
from tests.handlers.test_grade import WRONG_TASK
from tests.procs import ServerProcess, free_port
from tests.procs import http as request

if missing_browser():
    pytest.skip(missing_browser(), allow_module_level=True)

pytestmark = pytest.mark.slow

CLIENT_KEY = "console-client-key-0001"
ADMIN_KEY = "console-admin-key-0001"
ITEM = "sum-waste-sorting"
# Hits p1 (设施), p2 (宣传) and p4 (混装混运) by the rules: three distinct sentences.
ANSWER = ("Q市垃圾分类存在以下问题：\n1.垃圾桶不够，离楼栋远，清运不及时。\n"
          "2.宣传方式单一，居民分不清类别。\n3.分好的垃圾被混装混运。")
IMPROVED = "1.投放设施不足。\n2.宣传效果不佳。\n3.居民参与度低。\n4.收运环节脱节。\n5.监管执法不力。\n6.末端处理能力不足。"
# Spaces, line breaks, full-width space and punctuation: counted by the examiners' rule.
STREAMED = ("Q市垃圾分类存在以下问题：\n1. 投放设施不足，分类桶少、离楼栋远；\n"
            "2.\u3000宣传方式单一，居民分不清类别。\n3. 收运环节“混装混运”，挫伤积极性！")
HOSTILE_TITLE = "<img src=x onerror=alert(1)>"
RENEWAL_IMPROVED = ("1.问需于民：投票确定改造内容和顺序。\n2.统筹设计：管网、电梯一次施工，避免反复开挖。\n"
                    "3.多元筹资：政府补助、居民出资、引入社会资本。\n4.全程监督：公示工程，选聘居民监督员。\n"
                    "5.长效管理：引入物业，成立业主委员会。")
ESSAY_ITEM = "essay-small-livelihood-matters"
SHORT_ESSAY = "办好民生小事\n民生小事很重要。\n要倾听民意。\n要健全机制。\n干部要有为民情怀。"


def fake_reply(body: dict) -> str:
    """The grader asks for JSON (response_format); everything else gets the answer."""
    if body.get("response_format"):
        return json.dumps({"dimensions": {}, "improved_answer": IMPROVED}, ensure_ascii=False)
    return STREAMED


# --- servers and browser ---

def start(tmp: Path, name: str, data_dir: Path, **env: str) -> ServerProcess:
    env = {"PORT": str(free_port()), "SERVER_ID": name, "DATA_DIR": str(data_dir),
           "RATE_LIMIT_PER_MINUTE": "0", **env}
    return ServerProcess(env, tmp / f"{name}.log")


@pytest.fixture(scope="module")
def servers(tmp_path_factory, fake_llm_server):
    """{"open": no keys, fake LLM; "fleet": [two instances with keys, one DATA_DIR]}."""
    tmp = tmp_path_factory.mktemp("console")
    llm = {"OPENAI_BASE_URL": fake_llm_server.base_url, "OPENAI_API_KEY": "sk-test-upstream-key-0001",
           "LLM_MODEL": "fake-model"}
    keyed = {"API_KEYS": CLIENT_KEY, "ADMIN_API_KEYS": ADMIN_KEY, "METRICS_COLLECTION_INTERVAL": "1",
             "ENABLE_RESPONSE_CACHE": "false"}
    procs = {"open": start(tmp, "console-open", tmp / "open", **llm),
             "fleet": [start(tmp, f"console-{n}", tmp / "fleet", **keyed) for n in (1, 2)]}
    try:
        for proc in (procs["open"], *procs["fleet"]):
            proc.wait_ready(timeout=120)  # three start at once on a busy CI machine
        yield procs
    finally:
        for proc in (procs["open"], *procs["fleet"]):
            proc.stop()


# --- the page itself ---

def test_root_redirects_to_the_console_whose_page_has_a_strict_csp_and_hashed_long_cached_files(servers):
    base = servers["open"].url
    for method in ("GET", "HEAD"):
        for path in ("/", "/console"):
            connection = http.client.HTTPConnection("127.0.0.1", servers["open"].port, timeout=30)
            connection.request(method, path)
            answer = connection.getresponse()
            assert (answer.status, answer.getheader("Location")) == (302, "/console/"), (method, path)
            connection.close()
    status, headers, body = request("HEAD", base + "/console/")
    assert status == 200 and body == b"" and "script-src 'self' 'sha256-" in headers["Content-Security-Policy"]
    status, headers, page = request("GET", base + "/console/")
    csp = headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "default-src 'none'" in csp and "script-src 'self' 'sha256-" in csp
    assert headers["X-Frame-Options"] == "DENY"
    urls = set(re.findall(r'"(/static/console/[^"?]+\?v=[0-9a-f]+)"', page.decode()))
    assert {u.split("?")[0].rsplit("/", 1)[1] for u in urls} >= {"main.js", "api.js", "console.css"}
    for url in urls:
        status, headers, _ = request("GET", base + url)
        assert status == 200
        assert int(headers["Cache-Control"].split("max-age=")[1]) >= 365 * 86400
    # Any other path, a missing static file included, is still a JSON 404.
    for path in ("/console/nothing-here", "/static/console/nothing.js", "/favicon.ico"):
        status, headers, body = request("GET", base + path)
        assert status == 404 and json.loads(body)["error"]["code"] == "not_found", path


def test_the_pages_character_count_agrees_with_the_servers_rule(servers, console):
    tab = console(servers["open"].url)
    tab.open("practice")
    # Every code point of the first planes but surrogates, one by one, plus astral ones.
    samples = [chr(c) for c in range(0x3100) if not 0xD800 <= c <= 0xDFFF]
    samples += ["\ufeff", "😀", "e\u0301", "\U00020000", "\u3000\u3000一、加强宣传。", "1. 设施 不足；", STREAMED]
    counted = tab.page.evaluate(
        "async (texts) => { const m = await import('/static/console/wordcount.js');"
        " return texts.map((t) => m.charCount(t)); }", samples)
    assert counted == [char_count(s) for s in samples]
    assert char_count(STREAMED) < len(STREAMED)  # the sample has whitespace to skip
    tab.close()


def test_practice_streams_the_answer_with_a_live_count_equal_to_char_count_and_an_over_limit_warning(
        servers, console, fake_llm_server):
    fake_llm_server.reset()
    fake_llm_server.reply = fake_reply
    fake_llm_server.chunk_delay = 0.05
    status, _, _ = request("POST", servers["open"].url + "/api/knowledge/add", body={
        "id": "console-method", "title": "归纳概括题：垃圾分类问题怎么概括", "category": "答题方法",
        "content": "根据给定资料概括Q市推进生活垃圾分类过程中存在的问题，要求全面、准确、有条理："
                   "先找投放设施、宣传、收运、监管、末端处理各环节的问题，再分条作答。"})
    assert status == 201
    tab = console(servers["open"].url)
    tab.open("practice")
    page = tab.page
    page.wait_for_selector(f"#page-practice select[name=item] option[value='{ITEM}']", state="attached")
    page.select_option("#page-practice select[name=item]", ITEM)
    page.wait_for_function("() => document.querySelector('#page-practice textarea[name=material]').value.length > 100")
    assert page.input_value("#page-practice select[name=mode]") == "summarize"
    page.fill("#page-practice input[name=word_limit]", "40")
    page.click("#page-practice button[type=submit]")
    # Live: the counter moves while the stream is still open.
    page.wait_for_function("() => +document.getElementById('practice-count').textContent > 0"
                           " && !document.getElementById('practice-served').textContent")
    page.wait_for_selector("#practice-answer[data-char-count]")
    assert page.text_content("#practice-answer") == STREAMED
    served = int(page.get_attribute("#practice-answer", "data-char-count"))
    assert served == char_count(STREAMED)
    assert int(page.text_content("#practice-count")) == served
    assert page.is_visible("#practice-over")
    assert f"{served - 40} 字" in page.text_content("#practice-over")
    # The retrieved passage is listed beside the answer and opens in full.
    page.click("#practice-sources button:has-text('垃圾分类问题怎么概括')")
    assert "末端处理各环节" in page.text_content("dialog.viewer")
    page.keyboard.press("Escape")
    page.wait_for_selector("dialog.viewer", state="detached")
    sent = fake_llm_server.requests[-1]
    assert sent["stream"] is True and "楼栋" in json.dumps(sent["messages"], ensure_ascii=False)
    tab.screenshot("practice")
    tab.close()


def test_grading_highlights_every_evidence_span_at_its_offset_in_the_answer(servers, console, fake_llm_server):
    fake_llm_server.reset()
    fake_llm_server.reply = fake_reply
    tab = console(servers["open"].url)
    tab.open("grade")
    page = tab.page
    page.wait_for_selector(f"#page-grade select[name=practice_id] option[value='{ITEM}']", state="attached")
    page.select_option("#page-grade select[name=practice_id]", ITEM)
    page.fill("#page-grade textarea[name=answer]", ANSWER)
    with page.expect_response("**/api/grade") as answered:
        page.click("#page-grade button[type=submit]")
    grade = answered.value.json()
    page.wait_for_selector("#grade-answer")
    # Where the evidence is, found here independently: overlapping spans are one mark.
    spans = sorted((ANSWER.index(e), ANSWER.index(e) + len(e)) for p in grade["points_hit"]
                   if p["status"] in ("hit", "partial") for e in p["evidence"])
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    marks = page.eval_on_selector_all("#grade-answer mark", "ms => ms.map(m => [+m.dataset.start, +m.dataset.end, m.textContent])")
    assert [[s, e] for s, e, _ in marks] == merged
    assert [text for _, _, text in marks] == [ANSWER[s:e] for s, e in merged]
    assert len(marks) >= 3  # p1, p2 and p4 sit in three sentences
    assert page.text_content("#grade-answer") == ANSWER  # highlighting adds or loses nothing
    missed = page.locator("#grade-missed li")
    assert missed.count() == len(grade["points_missed"]) > 0
    assert page.text_content("#grade-score") == str(grade["score"])
    assert page.locator(".dims tbody tr").count() == len(grade["dimensions"])
    assert page.text_content("#grade-improved") == IMPROVED
    tab.close()


def grade_in_page(page) -> dict:
    """Submit the grading form; the grade the page received, once it is shown."""
    with page.expect_response("**/api/grade") as answered:
        page.click("#page-grade button[type=submit]")
    page.wait_for_selector("#grade-answer")
    return answered.value.json()


def test_grading_shows_the_caps_the_essay_class_and_the_material_passage_of_each_missed_point(
        servers, console, fake_llm_server):
    fake_llm_server.reset()
    fake_llm_server.reply = lambda body: json.dumps({"dimensions": {}, "improved_answer": RENEWAL_IMPROVED},
                                                    ensure_ascii=False)
    base = servers["open"].url
    item = json.loads(request("GET", base + "/api/practice/sum-old-community-renewal")[2])
    tab = console(base)
    tab.open("grade")
    page = tab.page
    page.wait_for_selector(f"#page-grade select[name=practice_id] option[value='{ESSAY_ITEM}']", state="attached")
    # Pasted 题目 and 资料, no practice item: the points come from the material. The
    # answer lists problems where the question asks for practices (审题), in 109 of 250 字.
    page.fill("#page-grade textarea[name=question]", item["question"])
    page.fill("#page-grade textarea[name=material]", item["material"])
    page.fill("#page-grade textarea[name=answer]", WRONG_TASK)
    grade = grade_in_page(page)
    assert grade["points_source"] == "material" and grade["essay_class"] is None
    assert [c["rule"] for c in grade["caps"]] == ["审题", "字数"]
    shown = page.eval_on_selector_all("#grade-caps li", "ls => ls.map(l => l.textContent)")
    assert shown == [f"{c['rule']}：{c['reason']}" for c in grade["caps"]]
    assert page.locator("#grade-class").count() == 0
    quotes = page.eval_on_selector_all("#grade-missed li", "ls => ls.map(l => l.querySelector('blockquote').textContent)")
    assert quotes == [p["material_quote"] for p in grade["points_missed"]]
    assert len(quotes) >= 3 and all(q in item["material"] for q in quotes)
    marked = page.eval_on_selector_all("#grade-answer mark", "ms => ms.map(m => m.textContent)")
    evidence = [e for p in grade["points_hit"] for e in p["evidence"]]
    assert marked and all(any(m in e for e in evidence) for m in marked)
    assert page.text_content("#grade-improved") == RENEWAL_IMPROVED
    tab.screenshot("grade")
    # An essay of a few dozen characters: 四类卷 whatever it says, and the cap says why.
    page.select_option("#page-grade select[name=practice_id]", ESSAY_ITEM)
    page.fill("#page-grade textarea[name=answer]", SHORT_ESSAY)
    grade = grade_in_page(page)
    assert grade["essay_class"] == "四类卷" and grade["score"] <= 10
    assert page.text_content("#grade-class") == "四类卷"
    shown = page.eval_on_selector_all("#grade-caps li", "ls => ls.map(l => l.textContent)")
    assert shown == [f"{c['rule']}：{c['reason']}" for c in grade["caps"]] and shown[-1].startswith("类卷：四类卷")
    assert page.text_content("#grade-score") == str(grade["score"])
    tab.close()


def test_knowledge_titles_and_snippets_render_as_text_and_an_admin_adds_and_deletes(servers, console):
    tab = console(servers["fleet"][0].url)
    tab.open("knowledge")
    page = tab.page
    tab.enter_key(ADMIN_KEY)
    form = "#kb-form"
    page.fill(f"{form} input[name=id]", "console-hostile")
    page.fill(f"{form} input[name=title]", HOSTILE_TITLE)
    page.fill(f"{form} input[name=category]", "政策主题")
    page.fill(f"{form} input[name=tags]", "乡村振兴，<b>标签</b>")
    page.fill(f"{form} textarea[name=content]",
              "乡村振兴要坚持农业农村优先发展。<script>window.pwned = 1</script>产业振兴是乡村振兴的重中之重。")
    page.click(f"{form} button[type=submit]")
    page.wait_for_function("() => document.getElementById('kb-form-status').textContent.startsWith('已保存')")
    page.fill("#page-knowledge input[name=q]", "乡村振兴")
    page.press("#page-knowledge input[name=q]", "Enter")
    page.wait_for_selector("#kb-results li[data-id='console-hostile']")
    result = page.locator("#kb-results li[data-id='console-hostile']")
    assert result.locator(".title").text_content() == HOSTILE_TITLE
    assert "<b>标签</b>" in result.locator(".meta").text_content()
    assert "<script>" in result.locator(".snippet").text_content()
    assert result.locator(".snippet em").count() >= 1  # the hit words are highlighted
    assert page.locator("#page-knowledge img, #page-knowledge script, #page-knowledge b").count() == 0
    assert page.evaluate("window.pwned") is None
    # The admin's document list (GET /api/knowledge) shows it too, as text.
    page.wait_for_selector("#kb-docs li[data-id='console-hostile']")
    assert page.text_content("#kb-docs li[data-id='console-hostile'] .title") == HOSTILE_TITLE
    tab.screenshot("knowledge")
    result.locator("button.danger").click()
    page.click("dialog.confirm button[value=ok]")
    page.wait_for_selector("#kb-results li[data-id='console-hostile']", state="detached")
    status, _, _ = request("GET", servers["fleet"][0].url + "/api/knowledge/console-hostile",
                        headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert status == 404
    tab.close()


def fleet_view(server: ServerProcess, headers: dict[str, str]) -> dict:
    status, _, body = request("GET", server.url + "/api/metrics?scope=fleet", headers=headers)
    assert status == 200
    return json.loads(body)


def test_the_dashboard_asks_for_the_admin_key_clears_the_cache_and_draws_the_past_each_instance_kept(
        servers, console):
    fleet = servers["fleet"]
    tab = console(fleet[0].url)
    tab.open("ops")
    page = tab.page
    assert "密钥" in page.text_content("#ops-status")  # no call is made without a key
    assert page.locator("#ops-instances tr").count() == 0
    tab.enter_key(ADMIN_KEY)
    page.wait_for_function("() => document.querySelectorAll('#ops-instances tr[data-state=ok]').length === 2",
                           timeout=15_000)
    rows = page.eval_on_selector_all("#ops-instances tr", "rs => rs.map(r => r.dataset.server)")
    assert rows == ["console-1", "console-2"]
    pids = page.eval_on_selector_all("#ops-instances tr td:nth-child(3)", "ts => ts.map(t => +t.textContent)")
    assert pids == [fleet[0].proc.pid, fleet[1].proc.pid]
    page.click("#ops-clear")
    page.click("dialog.confirm button[value=ok]")
    page.wait_for_function("() => document.getElementById('ops-cache-status').textContent.startsWith('已清空')")
    tab.close()
    # A freshly opened page draws the past each instance kept (two steps of it at least).
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    deadline = time.monotonic() + 30
    while min(len(r["history"]) for r in fleet_view(fleet[0], admin)["servers"]) < 3:
        assert time.monotonic() < deadline, "the instances kept no history"
        time.sleep(0.5)
    fresh = console(fleet[0].url)
    fresh.open("ops")
    fresh.enter_key(ADMIN_KEY)
    fresh.page.wait_for_selector("#ops-instances tr")
    lengths = fresh.page.eval_on_selector_all(
        "#page-ops polyline", "ls => ls.map(l => l.getAttribute('points').split(' ').length)")
    assert len(lengths) == 6 and min(lengths) >= 2  # 3 charts × 2 instances, on the first refresh
    fresh.close()


def test_the_console_is_readable_on_a_phone(servers, console):
    tab = console(servers["open"].url, viewport={"width": 390, "height": 844}, is_mobile=True,
                  has_touch=True, device_scale_factor=2)
    tab.open("practice")
    page = tab.page
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # no sideways scrolling: the columns stack
    # Keyboard: Tab from the top reaches the navigation and Enter opens a page.
    page.focus("nav a[data-page=grade]")
    page.keyboard.press("Enter")
    page.wait_for_selector("#page-grade .panel")
    assert page.get_attribute("nav a[data-page=grade]", "aria-current") == "page"
    tab.screenshot("phone-grade")
    tab.close()
