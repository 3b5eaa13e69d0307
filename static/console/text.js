// Text that carries marks: grading evidence, search snippets, the answer diff.
// All of it ends up as text nodes inside <mark>/<em>/<ins>/<del>, never as HTML.
import {el} from "./dom.js";

/**
 * Where each hit/partial point's evidence sits in `answer`. Evidence strings are
 * verbatim slices of the answer; each is looked up from the start (the same sentence
 * may prove two points). Returns merged ranges [{start, end, points: [...]}] sorted by
 * start, overlapping ranges joined, and the evidence that could not be found.
 */
export function evidenceRanges(answer, points) {
  const found = [];
  const missing = [];
  for (const point of points) {
    if (point.status !== "hit" && point.status !== "partial") continue;
    for (const quote of point.evidence || []) {
      if (!quote) continue;
      const start = answer.indexOf(quote);
      if (start < 0) missing.push({point, quote});
      else found.push({start, end: start + quote.length, points: [point]});
    }
  }
  found.sort((a, b) => a.start - b.start || b.end - a.end);
  const merged = [];
  for (const range of found) {
    const last = merged[merged.length - 1];
    if (last && range.start < last.end) {
      last.end = Math.max(last.end, range.end);
      for (const p of range.points) if (!last.points.includes(p)) last.points.push(p);
    } else {
      merged.push({...range, points: [...range.points]});
    }
  }
  return {ranges: merged, missing};
}

/** The answer as text nodes with each range in a <mark> (hit, or partial when all are). */
export function markedText(text, ranges) {
  const nodes = [];
  let at = 0;
  for (const range of ranges) {
    if (range.start > at) nodes.push(text.slice(at, range.start));
    const status = range.points.some((p) => p.status === "hit") ? "hit" : "partial";
    const labels = range.points.map((p) => p.label).join("；");
    nodes.push(el("mark", {
      class: status, tabindex: 0, title: labels,
      dataset: {start: range.start, end: range.end, points: range.points.map((p) => p.id).join(" ")},
    }, text.slice(range.start, range.end)));
    at = range.end;
  }
  if (at < text.length) nodes.push(text.slice(at));
  return nodes;
}

const ENTITIES = {amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: "\u00a0"};

/** Undo HTML escaping (the snippet's text is escaped by the server) without a parser. */
export function unescapeHtml(text) {
  return text.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (whole, name) => {
    if (name[0] === "#") {
      const code = name[1] === "x" || name[1] === "X" ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
      return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
    }
    return ENTITIES[name.toLowerCase()] ?? whole;
  });
}

/** A search snippet ("…<em>乡村振兴</em>…", escaped HTML) as text nodes and <em>s. */
export function snippetNodes(snippet) {
  const nodes = [];
  const parts = (snippet || "").split(/(<em>|<\/em>)/);
  let inside = false;
  for (const part of parts) {
    if (part === "<em>") inside = true;
    else if (part === "</em>") inside = false;
    else if (part) nodes.push(inside ? el("em", {}, unescapeHtml(part)) : unescapeHtml(part));
  }
  return nodes;
}

/** Sentences with their ending punctuation (and line breaks) kept. */
export function sentences(text) {
  return text.match(/[^。！？!?；;\n]*(?:[。！？!?；;]+|\n+|$)/g).filter((s) => s !== "");
}

/**
 * A sentence-level diff of two texts (longest common subsequence of sentences,
 * whitespace ignored when comparing): [{kind: "same"|"del"|"ins", text}].
 */
export function diffSentences(before, after) {
  const a = sentences(before);
  const b = sentences(after);
  const key = (s) => s.replace(/\s+/g, "");
  const n = a.length;
  const m = b.length;
  const lcs = Array.from({length: n + 1}, () => new Uint16Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = key(a[i]) === key(b[j]) ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && key(a[i]) === key(b[j])) { out.push({kind: "same", text: b[j]}); i++; j++; }
    else if (j < m && (i === n || lcs[i][j + 1] >= lcs[i + 1][j])) out.push({kind: "ins", text: b[j++]});
    else out.push({kind: "del", text: a[i++]});
  }
  return out;
}
