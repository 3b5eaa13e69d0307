"""The web console in a real browser: Debian's chromium driven by Playwright.

Real server processes on loopback ports: one without keys (practice, grading) talking
to the fake LLM, and a fleet of two with keys sharing one DATA_DIR (knowledge, the
dashboard). Every page is checked for console errors, and photographed: into a
temporary folder, or into docs/screenshots/ with SHENLUN_SCREENSHOTS=1 (the README's
pictures).
"""
from __future__ import annotations

import http.client
import json
import os
import re
import threading
import time
from pathlib import Path

import pytest

from core.chat.wordlimit import char_count
from tests.procs import ROOT, ServerProcess, free_port
from tests.procs import http as request

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# CI installs chromium (scripts/test.sh): there a missing browser fails instead of skipping.
if not (CHROMIUM.exists() or os.environ.get("CI")):
    pytest.skip("chromium is not installed (scripts/test.sh installs it)", allow_module_level=True)
if os.environ.get("CI"):
    from playwright import sync_api
else:
    sync_api = pytest.importorskip("playwright.sync_api")

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


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Console:
    """One browser tab on the console, recording every console error and dialog."""

    def __init__(self, browser, base_url: str, **context_options) -> None:
        self.context = browser.new_context(locale="zh-CN", **context_options)
        self.page = self.context.new_page()
        self.base_url = base_url
        self.closed = False
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda msg: msg.type == "error" and self.errors.append(
            f"{msg.text} @ {msg.location.get('url')}"))
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))

    def open(self, page: str) -> None:
        self.page.goto(f"{self.base_url}/console/#{page}")
        self.page.wait_for_selector(f"#page-{page} .panel")

    def enter_key(self, key: str) -> None:
        self.page.click("#keys summary")
        self.page.fill("#key-input", key)
        self.page.press("#key-input", "Enter")
        self.page.wait_for_function("() => document.getElementById('key-state').textContent === '已设置'")
        self.page.click("#keys summary")

    def screenshot(self, name: str) -> None:
        self.page.evaluate("() => document.getElementById('toast').classList.remove('show')")
        self.page.wait_for_timeout(300)  # the toast's fade
        folder = ROOT / "docs" / "screenshots" if os.environ.get("SHENLUN_SCREENSHOTS") else self.shots
        folder.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(folder / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()
        self.closed = True
        assert self.errors == [], self.errors
        assert self.dialogs == []  # no alert() ever ran


@pytest.fixture
def console(browser, tmp_path):
    tabs: list[Console] = []

    def open_console(base_url: str, **options) -> Console:
        tab = Console(browser, base_url, **options)
        tab.shots = tmp_path
        tabs.append(tab)
        return tab
    yield open_console
    for tab in tabs:
        if not tab.closed:
            tab.context.close()


# --- the page itself ---

def test_root_redirects_to_the_console_whose_page_has_a_strict_csp_and_hashed_long_cached_files(servers):
    base = servers["open"].url
    for path in ("/", "/console"):
        connection = http.client.HTTPConnection("127.0.0.1", servers["open"].port, timeout=30)
        connection.request("GET", path)
        answer = connection.getresponse()
        assert (answer.status, answer.getheader("Location")) == (302, "/console/")
        connection.close()
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
    tab.screenshot("grade")
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


def send_traffic(urls: list[str], stop: threading.Event) -> None:
    """About ten requests a second, round robin, until `stop` (200 at most)."""
    for n in range(200):
        if stop.is_set():
            return
        request("GET", urls[n % len(urls)] + "/api/practice", headers={"Authorization": f"Bearer {CLIENT_KEY}"})
        stop.wait(0.1)


def test_the_dashboard_shows_each_instance_and_marks_a_stopped_one_as_down(servers, console):
    fleet = servers["fleet"]
    tab = console(fleet[0].url, viewport={"width": 1280, "height": 900})
    tab.open("ops")
    page = tab.page
    assert "密钥" in page.text_content("#ops-status")  # no call is made without a key
    tab.enter_key(ADMIN_KEY)
    page.wait_for_function("() => document.querySelectorAll('#ops-instances tr[data-state=ok]').length === 2",
                           timeout=15_000)
    # Some traffic to chart: a few requests a second to each instance while the page watches.
    stop = threading.Event()
    traffic = threading.Thread(target=send_traffic, args=([p.url for p in fleet], stop))
    traffic.start()
    rows = page.eval_on_selector_all("#ops-instances tr", "rs => rs.map(r => r.dataset.server)")
    assert rows == ["console-1", "console-2"]
    pids = page.eval_on_selector_all("#ops-instances tr td:nth-child(3)", "ts => ts.map(t => +t.textContent)")
    assert pids == [fleet[0].proc.pid, fleet[1].proc.pid]
    # Each instance's line on the charts, once two of its snapshots have been seen.
    page.wait_for_function("() => document.querySelectorAll('#page-ops polyline[points*=\" \"]').length >= 6",
                           timeout=15_000)
    page.click("#ops-clear")
    page.click("dialog.confirm button[value=ok]")
    page.wait_for_function("() => document.getElementById('ops-cache-status').textContent.startsWith('已清空')")
    page.wait_for_function("() => [...document.querySelectorAll('#ops-instances td:nth-child(6)')]"
                           ".some(td => +td.textContent > 0)", timeout=15_000)  # requests/s seen
    stop.set()
    traffic.join()
    tab.screenshot("ops")
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
    assert fleet[1].stop() == 0  # a clean stop withdraws its snapshot from the board
    page.wait_for_selector("#ops-instances tr[data-server='console-2'][data-state=down]", timeout=15_000)
    assert page.get_attribute("#ops-instances tr[data-server='console-1']", "data-state") == "ok"
    tab.close()


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
