// Talking to the API: the key from sessionStorage as a header, errors as ApiError,
// and the chat's Server-Sent Events read from a fetch() body.

const KEY_NAME = "shenlun.apiKey";

export const keys = {
  get: () => sessionStorage.getItem(KEY_NAME) || "",
  set: (value) => (value ? sessionStorage.setItem(KEY_NAME, value) : sessionStorage.removeItem(KEY_NAME)),
};

/** An error answer of the API: {code, message, status}. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(extra = {}) {
  const key = keys.get();
  return {...(key ? {Authorization: `Bearer ${key}`} : {}), ...extra};
}

async function errorOf(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON: a proxy's page */ }
  const error = body && body.error;
  if (error) return new ApiError(response.status, error.code, error.message);
  return new ApiError(response.status, "http_" + response.status, `请求失败（HTTP ${response.status}）`);
}

/** A JSON request; resolves to the decoded body, rejects with ApiError. */
export async function api(path, {method = "GET", body, params, signal} = {}) {
  const query = params ? "?" + new URLSearchParams(
    Object.entries(params).flatMap(([k, v]) => (Array.isArray(v) ? v.map((x) => [k, x]) : [[k, v]]))
      .filter(([, v]) => v !== undefined && v !== null && v !== "")) : "";
  let response;
  try {
    response = await fetch(path + query, {
      method, signal,
      headers: headers(body === undefined ? {} : {"Content-Type": "application/json"}),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (exc) {
    if (exc.name === "AbortError") throw exc;
    throw new ApiError(0, "network", "无法连接服务器");
  }
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/** A readable sentence for an error (401/403 say what key is needed). */
export function explain(exc) {
  if (exc.code === "unauthorized") return "需要 API 密钥：请在右上角“密钥”中填写。";
  if (exc.code === "forbidden") return "该操作需要管理员密钥。";
  return exc.message || String(exc);
}

/**
 * POST /api/chat with stream: true. Calls on.delta(text), on.sources(list), on.done(meta),
 * on.error(error) as events arrive; resolves when the stream ends. A refusal before the
 * stream starts (400, 401, 429, 503…) rejects with ApiError.
 */
export async function streamChat(body, on, signal) {
  const response = await fetch("/api/chat", {
    method: "POST", signal,
    headers: headers({"Content-Type": "application/json", Accept: "text/event-stream"}),
    body: JSON.stringify({...body, stream: true}),
  });
  if (!response.ok) throw await errorOf(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), {stream: !done});
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      dispatch(buffer.slice(0, cut), on);
      buffer = buffer.slice(cut + 2);
    }
    if (done) break;
  }
  if (buffer.trim()) dispatch(buffer, on);
}

function dispatch(block, on) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (!data.length) return;
  const payload = JSON.parse(data.join("\n"));
  if (event === "message") on.delta?.(payload.delta ?? "");
  else if (event === "sources") on.sources?.(payload.sources || []);
  else if (event === "done") on.done?.(payload);
  else if (event === "error") on.error?.(payload.error || payload);
}

let practiceList = null;

/** The practice items (GET /api/practice), fetched once per page. */
export function practiceItems() {
  practiceList ||= api("/api/practice").then((body) => body.items).catch((exc) => {
    practiceList = null;  // try again next time (e.g. after a key is entered)
    throw exc;
  });
  return practiceList;
}

/** The mode names the server knows ({key: 中文名}), given to the page by its handler. */
export function modeNames() {
  return JSON.parse(document.body.dataset.modes || "{}");
}

/** False when the server wants keys and none is entered yet: calls would only be refused. */
export function canCall() {
  return document.body.dataset.keysRequired !== "yes" || Boolean(keys.get());
}

export const NEED_KEY = "这台服务配置了密钥：请先在右上角“密钥”中填写（管理操作需要管理员密钥）。";
