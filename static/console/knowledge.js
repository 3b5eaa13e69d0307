// 知识库: search with highlighted snippets, filters and paging; the admin's document
// list, add/upsert and delete (with confirmation).
import {ApiError, NEED_KEY, api, canCall, explain} from "./api.js";
import {confirmDialog, el, field, fill, showText, toast} from "./dom.js";
import {snippetNodes} from "./text.js";

const PAGE_SIZE = 10;
let ui = null;
let offset = 0;

export function mount(root) {
  ui = {
    q: el("input", {name: "q", type: "search", required: true, maxlength: 200, placeholder: "如：乡村振兴 基层治理"}),
    category: el("input", {name: "category", maxlength: 50, placeholder: "全部"}),
    tag: el("input", {name: "tag", maxlength: 30, placeholder: "全部"}),
    mode: el("select", {name: "mode"}, el("option", {value: "or"}, "含任意一个词"), el("option", {value: "and"}, "必须含全部词")),
    summary: el("p", {class: "status", role: "status", id: "kb-summary"}),
    results: el("ol", {class: "results", id: "kb-results"}),
    prev: el("button", {type: "button", disabled: true}, "上一页"),
    next: el("button", {type: "button", disabled: true}, "下一页"),
    docs: el("div", {id: "kb-docs"}),
    form: null,
    formStatus: el("p", {class: "status", role: "status", id: "kb-form-status"}),
  };
  const edit = {
    id: el("input", {name: "id", maxlength: 128, pattern: "[A-Za-z0-9][A-Za-z0-9._:\\-]{0,127}", placeholder: "留空则由服务生成；同一 id 再次提交即替换"}),
    title: el("input", {name: "title", required: true, maxlength: 200}),
    category: el("input", {name: "category", maxlength: 50}),
    tags: el("input", {name: "tags", placeholder: "用逗号或顿号分隔"}),
    source: el("input", {name: "source", maxlength: 500}),
    content: el("textarea", {name: "content", rows: 8, required: true, maxlength: 50000}),
  };
  ui.edit = edit;
  ui.form = el("form", {class: "panel", id: "kb-form", onsubmit: save},
    el("h2", {}, "添加或修改文档（管理员）"),
    field("id", edit.id), field("标题", edit.title),
    el("div", {class: "row"}, field("分类", edit.category), field("标签", edit.tags)),
    field("来源", edit.source), field("正文", edit.content),
    el("div", {class: "row"}, el("button", {type: "submit", class: "primary"}, "保存"),
      el("button", {type: "reset"}, "清空")), ui.formStatus);
  const search = el("form", {class: "panel", role: "search", onsubmit: (e) => { e.preventDefault(); offset = 0; runSearch(); }},
    el("h2", {}, "搜索知识库"),
    el("div", {class: "row"}, field("关键词", ui.q), el("button", {type: "submit", class: "primary"}, "搜索")),
    el("div", {class: "row"}, field("分类", ui.category), field("标签", ui.tag), field("匹配", ui.mode)),
    ui.summary, ui.results,
    el("div", {class: "row pager"}, ui.prev, ui.next));
  ui.prev.addEventListener("click", () => { offset = Math.max(0, offset - PAGE_SIZE); runSearch(); });
  ui.next.addEventListener("click", () => { offset += PAGE_SIZE; runSearch(); });
  const admin = el("div", {class: "panel"}, el("h2", {}, "文档列表（管理员）"),
    el("div", {class: "row"}, el("button", {type: "button", onclick: loadDocs}, "刷新列表")), ui.docs);
  fill(root, el("div", {class: "grid2"}, search, el("div", {}, ui.form, admin)));
  document.addEventListener("keychange", loadDocs);
  loadDocs();
}

function tagsOf(text) {
  return text.split(/[,，、]/).map((t) => t.trim()).filter(Boolean);
}

async function runSearch() {
  const params = {q: ui.q.value.trim(), limit: PAGE_SIZE, offset, mode: ui.mode.value,
    category: ui.category.value.trim(), tag: tagsOf(ui.tag.value)};
  if (!params.q) return;
  ui.summary.textContent = "正在搜索…";
  try {
    const body = await api("/api/knowledge/search", {params});
    const shown = body.results.length;
    ui.summary.textContent = body.total
      ? `共 ${body.total} 篇，第 ${offset + 1}–${offset + shown} 篇（${body.took_ms} ms）`
      : "没有找到相关文档。";
    fill(ui.results, body.results.map(resultItem));
    ui.prev.disabled = offset === 0;
    ui.next.disabled = offset + shown >= body.total;
  } catch (exc) {
    ui.summary.textContent = "搜索失败：" + explain(exc);
  }
}

function resultItem(doc) {
  return el("li", {dataset: {id: doc.id}},
    el("h3", {class: "title"}, doc.title),
    el("p", {class: "meta"}, [doc.category, (doc.tags || []).join("、"), doc.score !== undefined ? `相关度 ${doc.score}` : ""].filter(Boolean).join(" · ")),
    el("p", {class: "snippet"}, snippetNodes(doc.snippet)),
    docActions(doc));
}

function docActions(doc) {
  return el("div", {class: "row actions"},
    el("button", {type: "button", onclick: () => openDoc(doc.id)}, "查看"),
    el("button", {type: "button", onclick: () => editDoc(doc.id)}, "编辑"),
    el("button", {type: "button", class: "danger", onclick: () => deleteDoc(doc)}, "删除"));
}

async function openDoc(id) {
  try {
    const doc = await api(`/api/knowledge/${encodeURIComponent(id)}`);
    showText(doc.title, el("p", {class: "muted"}, [doc.category, (doc.tags || []).join("、"), doc.source, doc.updated_at].filter(Boolean).join(" · ")),
      el("div", {class: "prose"}, doc.content));
  } catch (exc) {
    toast("读取失败：" + explain(exc));
  }
}

async function editDoc(id) {
  try {
    const doc = await api(`/api/knowledge/${encodeURIComponent(id)}`);
    const e = ui.edit;
    e.id.value = doc.id;
    e.title.value = doc.title;
    e.category.value = doc.category || "";
    e.tags.value = (doc.tags || []).join("，");
    e.source.value = doc.source || "";
    e.content.value = doc.content;
    e.title.focus();
    ui.formStatus.textContent = `正在编辑 ${doc.id}：保存即替换原文档。`;
  } catch (exc) {
    toast("读取失败：" + explain(exc));
  }
}

async function save(event) {
  event.preventDefault();
  const e = ui.edit;
  const doc = {title: e.title.value, content: e.content.value};
  if (e.id.value.trim()) doc.id = e.id.value.trim();
  if (e.category.value.trim()) doc.category = e.category.value.trim();
  if (e.tags.value.trim()) doc.tags = tagsOf(e.tags.value);
  if (e.source.value.trim()) doc.source = e.source.value.trim();
  ui.formStatus.textContent = "正在保存…";
  try {
    const body = await api("/api/knowledge/add", {method: "POST", body: doc});
    ui.formStatus.textContent = `已保存：${body.ids.join("、")}`;
    e.id.value = body.ids[0];
    loadDocs();
  } catch (exc) {
    ui.formStatus.textContent = "保存失败：" + explain(exc);
  }
}

async function deleteDoc(doc) {
  if (!(await confirmDialog(`确定删除文档“${doc.title}”（${doc.id}）吗？删除后无法恢复。`, "删除"))) return;
  try {
    await api(`/api/knowledge/${encodeURIComponent(doc.id)}`, {method: "DELETE"});
    toast(`已删除 ${doc.id}`);
    document.querySelectorAll(`[data-id]`).forEach((node) => { if (node.dataset.id === doc.id) node.remove(); });
  } catch (exc) {
    toast("删除失败：" + explain(exc));
  }
}

async function loadDocs() {
  if (!canCall()) {
    fill(ui.docs, el("p", {class: "muted"}, NEED_KEY));
    return;
  }
  fill(ui.docs, el("p", {class: "muted"}, "正在读取…"));
  try {
    const body = await api("/api/knowledge", {params: {limit: 50}});
    const docs = body.documents || body.items || body.results || [];
    fill(ui.docs,
      el("p", {class: "muted"}, `共 ${body.total ?? docs.length} 篇${docs.length < (body.total ?? 0) ? `，显示前 ${docs.length} 篇` : ""}`),
      el("ul", {class: "docs"}, docs.map((doc) => el("li", {dataset: {id: doc.id}},
        el("span", {class: "title"}, doc.title), el("small", {class: "muted"}, ` ${doc.id} ${doc.category || ""}`), docActions(doc)))));
  } catch (exc) {
    const text = exc instanceof ApiError && exc.status === 404
      ? "这台服务还没有文档列表接口（GET /api/knowledge 返回 404）：请用上面的搜索找到文档后编辑或删除。"
      : "文档列表读取失败：" + explain(exc);
    fill(ui.docs, el("p", {class: "muted", id: "kb-docs-message"}, text));
  }
}
