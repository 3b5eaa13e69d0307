// The console's shell: the key form, and one page shown at a time by the URL's hash.
import {keys} from "./api.js";
import {toast} from "./dom.js";
import * as practice from "./practice.js";
import * as grade from "./grade.js";
import * as knowledge from "./knowledge.js";
import * as ops from "./ops.js";

const PAGES = {practice, grade, knowledge, ops};
const mounted = new Set();
let current = null;

function showKeyState() {
  document.getElementById("key-state").textContent = keys.get() ? "已设置" : "未设置";
}

function setupKeys() {
  const form = document.getElementById("key-form");
  const input = document.getElementById("key-input");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    keys.set(input.value.trim());
    input.value = "";
    showKeyState();
    toast(keys.get() ? "密钥已保存在本标签页" : "已清除密钥");
    document.dispatchEvent(new CustomEvent("keychange"));
  });
  document.getElementById("key-clear").addEventListener("click", () => {
    keys.set("");
    showKeyState();
    toast("已清除密钥");
    document.dispatchEvent(new CustomEvent("keychange"));
  });
  showKeyState();
}

function route() {
  const name = PAGES[location.hash.slice(1)] ? location.hash.slice(1) : "practice";
  for (const section of document.querySelectorAll("main > section")) {
    section.hidden = section.dataset.page !== name;
  }
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (current && current !== name) PAGES[current].hide?.();
  const root = document.getElementById("page-" + name);
  if (!mounted.has(name)) {
    mounted.add(name);
    PAGES[name].mount(root);
  }
  PAGES[name].show?.();
  current = name;
  document.title = `申论助手 · ${document.querySelector(`nav a[data-page="${name}"]`).textContent}`;
}

setupKeys();
window.addEventListener("hashchange", () => {
  route();
  document.getElementById("main").focus({preventScroll: true});
});
route();
