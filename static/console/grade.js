// 批改: the answer with each hit/partial point's evidence highlighted in place,
// missed points with their material passage, scores, suggestions and a diff view.
import {NEED_KEY, api, canCall, explain, practiceItems} from "./api.js";
import {el, field, fill} from "./dom.js";
import {diffSentences, evidenceRanges, markedText} from "./text.js";

const STATUS = {hit: "命中", partial: "部分命中", missed: "遗漏"};
let ui = null;
let pending = null;  // a hand-off from the practice page, applied once mounted

export function mount(root) {
  ui = {
    item: el("select", {name: "practice_id"}, el("option", {value: ""}, "（不用练习题）")),
    question: el("textarea", {name: "question", rows: 3, placeholder: "题目（不用练习题时必填）"}),
    material: el("textarea", {name: "material", rows: 5, placeholder: "给定资料（与参考答案至少给一个）"}),
    reference: el("textarea", {name: "reference", rows: 4, placeholder: "参考答案（可选）"}),
    answer: el("textarea", {name: "answer", rows: 10, required: true, placeholder: "考生答案"}),
    limit: el("input", {name: "word_limit", type: "number", min: 10, max: 10000, inputmode: "numeric", placeholder: "默认取练习题或题目中的要求"}),
    go: el("button", {type: "submit", class: "primary"}, "批改"),
    status: el("p", {class: "status", role: "status"}),
    result: el("div", {id: "grade-result"}),
  };
  const own = el("div", {class: "own"}, field("题目", ui.question), field("给定资料", ui.material), field("参考答案", ui.reference));
  ui.item.addEventListener("change", () => { own.hidden = Boolean(ui.item.value); });
  const form = el("form", {class: "panel", onsubmit: submit},
    el("h2", {}, "批改"),
    field("练习题", ui.item, "选了练习题时，资料、题目和评分要点都取自练习题"),
    own, field("考生答案", ui.answer), field("字数限制", ui.limit),
    el("div", {class: "row"}, ui.go), ui.status);
  fill(root, el("div", {class: "grid2"}, form, el("div", {class: "panel"}, el("h2", {}, "结果"), ui.result)));
  document.addEventListener("keychange", loadItems);
  loadItems().then(() => applyPending());
}

/** Fill the form from the practice page (its answer, its item or question). */
export function prefill(values) {
  pending = values;
  if (ui) applyPending();
}

function applyPending() {
  if (!pending) return;
  const {practiceId, question, material, answer, wordLimit} = pending;
  pending = null;
  ui.item.value = practiceId || "";
  ui.item.dispatchEvent(new Event("change"));
  ui.question.value = question || "";
  ui.material.value = material || "";
  ui.answer.value = answer || "";
  ui.limit.value = wordLimit || "";
}

function loadItems() {
  return loadPracticeChoices(ui.item, ui.status, "（不用练习题）");
}

/** Fill a <select> with the practice items (after `placeholder`); `keep` keeps the
 * current choice across a refill. Problems are told in `status`. */
export async function loadPracticeChoices(select, status, placeholder, {keep = false} = {}) {
  if (!canCall()) {
    status.textContent = NEED_KEY;
    return;
  }
  try {
    const items = await practiceItems();
    const chosen = select.value;
    fill(select, el("option", {value: ""}, placeholder),
      items.map((item) => el("option", {value: item.id}, `【${item.question_type_label}】${item.title}`)));
    if (keep) select.value = chosen;
    status.textContent = "";
  } catch (exc) {
    status.textContent = "练习题列表读取失败：" + explain(exc);
  }
}

async function submit(event) {
  event.preventDefault();
  const body = {answer: ui.answer.value};
  if (ui.item.value) body.practice_id = ui.item.value;
  else {
    body.question = ui.question.value;
    if (ui.material.value.trim()) body.material = ui.material.value;
    if (ui.reference.value.trim()) body.reference = ui.reference.value;
  }
  const limit = parseInt(ui.limit.value, 10);
  if (Number.isFinite(limit)) body.word_limit = limit;
  ui.go.disabled = true;
  ui.status.textContent = "正在批改…";
  try {
    const result = await api("/api/grade", {method: "POST", body});
    ui.status.textContent = "";
    render(body.answer, result);
  } catch (exc) {
    ui.status.textContent = "批改失败：" + explain(exc);
  } finally {
    ui.go.disabled = false;
  }
}

function render(answer, g) {
  const points = [...(g.points_hit || []), ...(g.points_missed || [])];
  const {ranges, missing} = evidenceRanges(answer, points);
  const essayClass = g.essay_class ? el("span", {class: "badge", id: "grade-class"}, g.essay_class) : null;
  fill(ui.result,
    el("p", {class: "score"}, el("strong", {id: "grade-score"}, `${g.score}`), ` / ${g.full_score} 分`,
      el("span", {class: "muted"}, ` ${g.question_type_label || ""}`), essayClass),
    el("p", {class: "notice"}, g.notice || "模拟评分，仅供练习参考。"),
    g.overall_comment ? el("p", {}, g.overall_comment) : null,
    caps(g.caps),
    el("h3", {}, "各维度"),
    el("table", {class: "dims"},
      el("thead", {}, el("tr", {}, el("th", {scope: "col"}, "维度"), el("th", {scope: "col"}, "得分"), el("th", {scope: "col"}, "评语"))),
      el("tbody", {}, (g.dimensions || []).map((d) => el("tr", {},
        el("th", {scope: "row"}, d.name), el("td", {class: "num"}, `${d.score} / ${d.max}`), el("td", {}, d.comment || ""))))),
    el("h3", {}, "答案中的得分点"),
    el("p", {class: "legend"}, el("mark", {class: "hit"}, "命中"), " ", el("mark", {class: "partial"}, "部分命中"),
      `  共标出 ${ranges.length} 处；字数 ${g.char_count}${g.word_limit ? ` / ${g.word_limit}` : ""}${g.over_limit ? "（超出）" : ""}`),
    el("div", {class: "answer marked", id: "grade-answer"}, markedText(answer, ranges)),
    missing.length ? el("p", {class: "warning"}, `有 ${missing.length} 条证据未能在答案中定位。`) : null,
    pointList("命中与部分命中", g.points_hit || [], "grade-hits"),
    missedList(g.points_missed || []),
    checks(g.structure_checks || []),
    g.suggestions?.length ? [el("h3", {}, "修改建议"), el("ol", {id: "grade-suggestions"}, g.suggestions.map((s) => el("li", {}, s)))] : null,
    g.improved_answer ? diffView(answer, g) : null);
}

function caps(list) {
  if (!list?.length) return null;
  return el("ul", {class: "caps", id: "grade-caps"}, list.map((c) => el("li", {}, el("strong", {}, c.rule), "：", c.reason || "")));
}

function pointList(title, points, id) {
  if (!points.length) return null;
  return [el("h3", {}, title), el("ul", {class: "points", id}, points.map((p) => el("li", {class: p.status},
    el("button", {type: "button", class: "link", onclick: () => focusMark(p.id)}, p.label),
    el("span", {class: "badge " + p.status}, STATUS[p.status] || p.status),
    el("span", {class: "num"}, ` ${p.score} / ${p.max}`),
    p.note ? el("small", {}, p.note) : null)))];
}

function missedList(points) {
  if (!points.length) return null;
  return [el("h3", {}, "遗漏的得分点"), el("ul", {class: "points", id: "grade-missed"}, points.map((p) => el("li", {class: "missed"},
    el("strong", {}, p.label), el("span", {class: "num"}, ` 0 / ${p.max}`),
    p.material_quote ? el("blockquote", {}, p.material_quote) : null,
    p.note ? el("small", {}, p.note) : null)))];
}

function checks(list) {
  if (!list.length) return null;
  return [el("h3", {}, "结构与格式检查"), el("ul", {class: "checks"}, list.map((c) => el("li", {class: c.passed ? "pass" : "fail"},
    c.passed ? "✓ " : "✗ ", el("strong", {}, c.name), "：", c.detail || "")))];
}

function focusMark(pointId) {
  const mark = [...document.querySelectorAll("#grade-answer mark")].find((m) => m.dataset.points.split(" ").includes(pointId));
  if (mark) {
    mark.focus();
    mark.scrollIntoView({block: "center", behavior: "smooth"});
  }
}

function diffView(answer, g) {
  const parts = diffSentences(answer, g.improved_answer);
  const left = parts.filter((p) => p.kind !== "ins").map((p) => (p.kind === "del" ? el("del", {}, p.text) : p.text));
  const right = parts.filter((p) => p.kind !== "del").map((p) => (p.kind === "ins" ? el("ins", {}, p.text) : p.text));
  return [el("h3", {}, "示范答案对照"),
    el("p", {class: "muted"}, g.improved_answer_note || "按句比较：左侧删去的句子划线，右侧新增的句子加底色。"),
    el("div", {class: "diff grid2"},
      el("div", {}, el("h4", {}, "原答案"), el("div", {class: "answer"}, left)),
      el("div", {}, el("h4", {}, `示范答案（${g.improved_answer_char_count ?? ""} 字）`), el("div", {class: "answer", id: "grade-improved"}, right)))];
}
