// Building the page without innerHTML: every string becomes a text node.

/** el("p", {class: "x", dataset: {a: "1"}, onclick: f}, "text", child, …) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = String(value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, ...children);
  return node;
}

/** Append strings (as text), nodes and arrays of them. */
export function append(node, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replace a node's children. */
export function fill(node, ...children) {
  node.replaceChildren();
  return append(node, ...children);
}

/** A short message in the page's live region (read out by screen readers). */
export function toast(message) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => box.classList.remove("show"), 4000);
}

/** Ask before a destructive action; resolves true when confirmed. */
export function confirmDialog(message, confirmLabel = "确定") {
  return new Promise((resolve) => {
    const dialog = el("dialog", {class: "confirm"},
      el("p", {}, message),
      el("form", {method: "dialog", class: "row"},
        el("button", {value: "cancel", autofocus: true}, "取消"),
        el("button", {value: "ok", class: "danger"}, confirmLabel)));
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** A modal showing text (a document, a source). */
export function showText(title, ...body) {
  const dialog = el("dialog", {class: "viewer"},
    el("h2", {}, title), el("div", {class: "viewer-body"}, ...body),
    el("form", {method: "dialog"}, el("button", {}, "关闭")));
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}

/** A labelled form control: [label, control]. */
export function field(label, control, hint) {
  control.id ||= "f-" + Math.random().toString(36).slice(2, 9);
  return el("div", {class: "field"},
    el("label", {for: control.id}, label), control, hint ? el("small", {}, hint) : null);
}
