// 练习: pick a practice item or paste 资料 and 题目, stream an answer with a live count.
import {api, explain, modeNames, streamChat} from "./api.js";
import {el, field, fill, showText} from "./dom.js";
import {snippetNodes} from "./text.js";
import {charCount} from "./wordcount.js";
import * as grade from "./grade.js";

let ui = null;
let running = null;  // the AbortController of the answer being streamed

export function mount(root) {
  const modes = Object.entries(modeNames()).filter(([key]) => key !== "grade");
  ui = {
    item: el("select", {name: "item"}, el("option", {value: ""}, "（自己粘贴资料和题目）")),
    material: el("textarea", {name: "material", rows: 8, placeholder: "给定资料（可选）"}),
    question: el("textarea", {name: "question", rows: 3, required: true, placeholder: "题目，如：概括 Q 市垃圾分类存在的问题"}),
    mode: el("select", {name: "mode"}, modes.map(([key, name]) => el("option", {value: key}, name))),
    limit: el("input", {name: "word_limit", type: "number", min: 10, max: 10000, step: 1, inputmode: "numeric", placeholder: "不限"}),
    knowledge: el("input", {name: "use_knowledge", type: "checkbox", checked: true}),
    go: el("button", {type: "submit", class: "primary"}, "生成答案"),
    stop: el("button", {type: "button", disabled: true}, "停止"),
    toGrade: el("button", {type: "button", disabled: true}, "批改这份答案"),
    status: el("p", {class: "status", role: "status"}),
    answer: el("div", {class: "answer", id: "practice-answer", "aria-live": "off", tabindex: 0}),
    count: el("output", {id: "practice-count"}, "0"),
    limitText: el("span"),
    warning: el("p", {class: "warning", id: "practice-over", hidden: true}),
    served: el("small", {id: "practice-served"}),
    sources: el("ol", {class: "sources", id: "practice-sources"}),
  };
  ui.mode.value = "summarize";
  const form = el("form", {class: "panel", onsubmit: start},
    el("h2", {}, "练习"),
    field("练习题", ui.item, "选一道练习题，或在下面自己粘贴资料和题目"),
    field("给定资料", ui.material),
    field("题目", ui.question),
    el("div", {class: "row"}, field("作答模式", ui.mode), field("字数限制", ui.limit)),
    el("label", {class: "check"}, ui.knowledge, " 检索知识库作为参考资料"),
    el("div", {class: "row"}, ui.go, ui.stop));
  const output = el("div", {class: "panel"},
    el("h2", {}, "答案"),
    el("p", {class: "counter"}, "字数（按阅卷规则，标点计入、空白不计）：", ui.count, ui.limitText),
    ui.warning, ui.answer, ui.served, ui.status,
    el("div", {class: "row"}, ui.toGrade));
  const aside = el("aside", {class: "panel"}, el("h2", {}, "参考资料"), ui.sources);
  fill(root, el("div", {class: "grid3"}, form, output, aside));
  ui.item.addEventListener("change", pick);
  ui.limit.addEventListener("input", () => updateCount());
  ui.stop.addEventListener("click", () => running?.abort());
  ui.toGrade.addEventListener("click", () => {
    grade.prefill({practiceId: ui.item.value, question: ui.question.value, material: ui.material.value,
      answer: ui.answer.textContent, wordLimit: ui.limit.value});
    location.hash = "#grade";
  });
  document.addEventListener("keychange", loadItems);
  loadItems();
}

function loadItems() {
  return grade.loadPracticeChoices(ui.item, ui.status, "（自己粘贴资料和题目）", {keep: true});
}

async function pick() {
  if (!ui.item.value) return;
  try {
    const item = await api(`/api/practice/${encodeURIComponent(ui.item.value)}`);
    ui.material.value = item.material || "";
    ui.question.value = item.question || "";
    ui.limit.value = item.word_limit || "";
    if ([...ui.mode.options].some((o) => o.value === item.question_type)) ui.mode.value = item.question_type;
    updateCount();
  } catch (exc) {
    ui.status.textContent = "练习题读取失败：" + explain(exc);
  }
}

function limit() {
  const value = parseInt(ui.limit.value, 10);
  return Number.isFinite(value) && value > 0 ? value : null;
}

function updateCount() {
  const n = charCount(ui.answer.textContent);
  const max = limit();
  ui.count.textContent = String(n);
  ui.limitText.textContent = max ? ` / ${max}` : "";
  const over = max !== null && n > max;
  ui.warning.hidden = !over;
  ui.warning.textContent = over ? `已超出字数限制 ${n - max} 字：阅卷时超出部分不计分。` : "";
  ui.count.classList.toggle("over", over);
}

function showSources(sources) {
  fill(ui.sources, sources.length ? sources.map((source, n) => el("li", {},
    el("button", {type: "button", class: "link", onclick: () => openSource(source)}, `[${n + 1}] ${source.title}`),
    el("p", {class: "snippet"}, snippetNodes(source.snippet)))) : el("li", {class: "muted"}, "本次没有使用参考资料"));
}

async function openSource(source) {
  try {
    const doc = await api(`/api/knowledge/${encodeURIComponent(source.id)}`);
    showText(doc.title, el("p", {class: "muted"}, [doc.category, (doc.tags || []).join("、"), doc.source].filter(Boolean).join(" · ")),
      el("div", {class: "prose"}, doc.content));
  } catch (exc) {
    showText(source.title, el("p", {}, "无法打开该资料：" + explain(exc)));
  }
}

async function start(event) {
  event.preventDefault();
  const question = ui.question.value.trim();
  if (!question) {
    ui.status.textContent = "请填写题目。";
    ui.question.focus();
    return;
  }
  running?.abort();
  running = new AbortController();
  ui.answer.textContent = "";
  ui.served.textContent = "";
  ui.status.textContent = "正在生成…";
  fill(ui.sources);
  ui.go.disabled = true;
  ui.stop.disabled = false;
  ui.toGrade.disabled = true;
  updateCount();
  const body = {message: question, question, mode: ui.mode.value, use_knowledge: ui.knowledge.checked};
  if (ui.material.value.trim()) body.material = ui.material.value;
  if (limit()) body.word_limit = limit();
  let finished = false;
  try {
    await streamChat(body, {
      delta(text) {
        ui.answer.append(text);
        updateCount();
      },
      sources: showSources,
      done(meta) {
        finished = true;
        ui.answer.dataset.charCount = meta.char_count;
        ui.served.textContent = `服务端计数 ${meta.char_count} 字${meta.over_limit ? "（超出限制）" : ""} · ${meta.cached ? "来自缓存" : "新生成"} · ${meta.elapsed_ms} ms`;
        if (!meta.sources?.length && !ui.sources.children.length) showSources([]);
      },
      error(error) {
        ui.status.textContent = "生成中断：" + (error.message || "未知错误");
      },
    }, running.signal);
    if (finished) ui.status.textContent = "已完成。";
    else if (!ui.status.textContent.startsWith("生成中断")) ui.status.textContent = "连接提前结束，答案可能不完整。";
  } catch (exc) {
    ui.status.textContent = exc.name === "AbortError" ? "已停止。" : "生成失败：" + explain(exc);
  } finally {
    ui.go.disabled = false;
    ui.stop.disabled = true;
    ui.toGrade.disabled = !ui.answer.textContent;
    running = null;
  }
}
