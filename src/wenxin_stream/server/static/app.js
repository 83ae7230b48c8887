// wenxin-stream chat page: streams ERNIE answers over SSE (fetch + ReadableStream), renders
// Markdown as it grows, resumes a dropped stream, lists conversations. No dependencies.
//
// The module exports its SSE parser (for the browser unit tests) and boots the page only when
// the document is the chat page (<body data-app="wenxin">), so importing it elsewhere has no
// side effects.

import { renderBlocks } from "./markdown.js";

// ---- SSE ------------------------------------------------------------------------------------

/**
 * Incremental parser of the text/event-stream format (WHATWG HTML, "server-sent events").
 * Feed it decoded text in pieces of any size; it returns the events completed by each piece.
 * Lines end in CR, LF or CRLF — also when a CRLF is split between two pieces. Lines starting
 * with ":" are comments (pings) and are counted, not returned. `lastEventId` persists across
 * events, as in EventSource.
 */
export class SSEParser {
  constructor() {
    this.lastEventId = "";
    this.retry = null;
    this.comments = 0;
    this._line = "";
    this._skipLF = false;
    this._started = false;
    this._data = [];
    this._type = "";
  }

  /** Feed decoded text; returns an array of {type, data, id}. */
  feed(text) {
    const events = [];
    if (!text) return events;
    let s = text;
    if (!this._started) {
      this._started = true;
      if (s.charCodeAt(0) === 0xfeff) s = s.slice(1);
    }
    if (this._skipLF) {
      this._skipLF = false;
      if (s[0] === "\n") s = s.slice(1);
    }
    let pos = 0;
    const n = s.length;
    while (pos < n) {
      let end = pos;
      while (end < n) {
        const c = s.charCodeAt(end);
        if (c === 10 || c === 13) break;
        end += 1;
      }
      if (end === n) break; // no line terminator yet: keep the rest for the next piece
      const line = this._line + s.slice(pos, end);
      this._line = "";
      if (s.charCodeAt(end) === 13) {
        if (end + 1 === n) {
          this._skipLF = true; // the LF of a CRLF may start the next piece
          pos = end + 1;
        } else {
          pos = s.charCodeAt(end + 1) === 10 ? end + 2 : end + 1;
        }
      } else {
        pos = end + 1;
      }
      this._processLine(line, events);
    }
    if (pos < n) this._line += s.slice(pos);
    return events;
  }

  /** The stream ended: an unfinished event is dropped (as the standard says). */
  end() {
    this._line = "";
    this._data = [];
    this._type = "";
    this._skipLF = false;
  }

  _processLine(line, events) {
    if (line === "") {
      if (this._data.length) {
        events.push({ type: this._type || "message", data: this._data.join("\n"), id: this.lastEventId });
      }
      this._data = [];
      this._type = "";
      return;
    }
    if (line[0] === ":") {
      this.comments += 1;
      return;
    }
    const colon = line.indexOf(":");
    let field = line;
    let value = "";
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
    }
    switch (field) {
      case "event":
        this._type = value;
        break;
      case "data":
        this._data.push(value);
        break;
      case "id":
        if (!value.includes("\u0000")) this.lastEventId = value;
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break; // unknown fields are ignored
    }
  }
}

/** Bytes in, events out: a streaming UTF-8 decoder in front of an SSEParser. */
export class SSEDecoder {
  constructor(parser = new SSEParser()) {
    this.parser = parser;
    this._decoder = new TextDecoder("utf-8");
  }

  push(bytes) {
    return this.parser.feed(this._decoder.decode(bytes, { stream: true }));
  }

  end() {
    const events = this.parser.feed(this._decoder.decode());
    this.parser.end();
    return events;
  }
}

/** Read an SSE response body, calling onEvent(event) for each event, until the body ends. */
export async function readEventStream(body, onEvent, parser = new SSEParser()) {
  const decoder = new SSEDecoder(parser);
  const reader = body.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      for (const ev of decoder.push(value)) {
        if (onEvent(ev) === false) {
          reader.cancel().catch(() => {});
          return;
        }
      }
    }
    for (const ev of decoder.end()) onEvent(ev);
  } finally {
    reader.releaseLock?.();
  }
}

// ---- API ------------------------------------------------------------------------------------

const KEY_STORAGE = "wenxin.apiKey";
const MODEL_STORAGE = "wenxin.model";

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code || "";
  }
}

function storageGet(name) {
  try {
    return localStorage.getItem(name) || "";
  } catch {
    return "";
  }
}

function storageSet(name, value) {
  try {
    if (value) localStorage.setItem(name, value);
    else localStorage.removeItem(name);
  } catch {
    /* private mode: keep it in memory only */
  }
}

async function errorFrom(resp) {
  let message = `HTTP ${resp.status}`;
  let code = "";
  try {
    const body = await resp.json();
    if (body && body.error) {
      message = body.error.message || message;
      code = body.error.code || "";
    }
  } catch {
    /* not JSON */
  }
  if (resp.status === 429) {
    const after = resp.headers.get("Retry-After");
    if (after) message += ` (retry after ${after} s)`;
  }
  return new ApiError(resp.status, message, code);
}

// ---- page -----------------------------------------------------------------------------------

const END_LABELS = {
  cancelled: "已停止 · Stopped",
  length: "长度截断 · Cut at max length",
  content_filtered: "内容已过滤 · Content filtered",
  timed_out: "超时 · Timed out",
  upstream_error: "上游错误 · Upstream error",
  incomplete: "不完整 · Incomplete",
  client_disconnected: "连接中断 · Client disconnected",
  server_shutdown: "服务器关闭 · Server shut down",
  server_crashed: "服务器崩溃 · Server crashed",
  interrupted: "连接中断 · Connection lost",
};

const RESUME_DELAYS_MS = [200, 500, 1000, 2000];
const STOP_GRACE_MS = 2500;

function $(sel, root = document) {
  return root.querySelector(sel);
}

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (/^(data|aria)[A-Z]/.test(k)) {
      node.setAttribute(k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`), v);
    } else if (k === "role" || k === "title") node.setAttribute(k, v);
    else node[k] = v;
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function statusOf(status, endReason, hasError) {
  if (hasError) return "error";
  if (endReason === "cancelled") return "stopped";
  if (status === "complete" || endReason === "completed") return "complete";
  return "partial";
}

function formatMs(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function formatWhen(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const now = new Date();
  if (d.toDateString() === now.toDateString()) {
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  return d.toLocaleDateString([], { month: "short", day: "numeric" });
}

/** Patch `container` so that its children are the given block HTML strings, touching only
 * the blocks that changed (the growing answer usually changes only its last block). */
function patchBlocks(container, blocks) {
  const kids = container.children;
  for (let i = 0; i < blocks.length; i += 1) {
    const html = blocks[i];
    const cur = kids[i];
    if (cur && cur.__md === html) continue;
    const tpl = document.createElement("template");
    tpl.innerHTML = html; // renderBlocks output: escaped text inside tags it made itself
    const node = tpl.content.firstElementChild || document.createElement("div");
    node.__md = html;
    if (cur) container.replaceChild(node, cur);
    else container.appendChild(node);
  }
  while (kids.length > blocks.length) container.removeChild(container.lastElementChild);
}

class MessageView {
  constructor(role, { content = "", status = "complete", endReason = "", id = "" } = {}) {
    this.role = role;
    this.text = content;
    this.node = el("article", {
      class: `msg msg-${role}`,
      dataTestid: "message",
      dataRole: role,
      dataStatus: status,
      dataMessageId: id || null,
    });
    const label = role === "user" ? "你 · You" : "文心 · ERNIE";
    this.node.append(el("div", { class: "msg-who" }, label));
    this.body = el("div", { class: role === "user" ? "msg-body msg-text" : "msg-body markdown" });
    this.node.append(this.body);
    this.meta = el("div", { class: "msg-meta" });
    this.node.append(this.meta);
    this._pending = false;
    if (role === "user") this.body.textContent = content;
    else this.renderNow();
    this.setStatus(status, endReason);
  }

  setStatus(status, endReason = "") {
    this.status = status;
    this.node.dataset.status = status;
    if (endReason) this.node.dataset.endReason = endReason;
    else delete this.node.dataset.endReason;
    const streaming = status === "streaming";
    this.node.classList.toggle("is-streaming", streaming);
    if (this.role === "assistant") {
      if (streaming) {
        this.body.setAttribute("aria-live", "polite");
        this.body.setAttribute("aria-busy", "true");
      } else {
        this.body.setAttribute("aria-busy", "false");
      }
    }
    this._renderFlag();
  }

  _renderFlag() {
    let flag = $(".msg-flag", this.meta);
    const reason = this.node.dataset.endReason;
    const show = this.role === "assistant" && reason && reason !== "completed";
    if (!show) {
      flag?.remove();
      return;
    }
    if (!flag) {
      flag = el("span", { class: "msg-flag" });
      this.meta.prepend(flag);
    }
    flag.textContent = END_LABELS[reason] || reason;
  }

  append(text) {
    if (!text) return;
    this.text += text;
    this.scheduleRender();
  }

  scheduleRender() {
    if (this._pending) return;
    this._pending = true;
    const run = () => {
      this._pending = false;
      const t0 = performance.now();
      this.renderNow();
      this._cost = performance.now() - t0;
      this.onRendered?.();
    };
    // At most one render per animation frame; rAF does not fire in hidden tabs, so fall back.
    // A very long answer whose rendering costs more than a few ms is re-rendered less often,
    // so the page stays responsive (the final render happens at the end event regardless).
    const cost = this._cost || 0;
    if (document.hidden) setTimeout(run, 50);
    else if (cost > 12) setTimeout(() => requestAnimationFrame(run), Math.min(400, cost * 4));
    else requestAnimationFrame(run);
  }

  renderNow() {
    if (this.role === "user") {
      this.body.textContent = this.text;
      return;
    }
    patchBlocks(this.body, renderBlocks(this.text));
  }

  setStats(data) {
    let stats = $('[data-testid="stats"]', this.meta);
    if (!stats) {
      stats = el("span", { class: "msg-stats", dataTestid: "stats" });
      this.meta.append(stats);
    }
    const parts = [];
    if (typeof data.ttft_ms === "number") parts.push(`首字 TTFT ${formatMs(data.ttft_ms)}`);
    const u = data.usage;
    if (u && typeof u.total_tokens === "number") {
      parts.push(`${u.total_tokens} tokens (${u.prompt_tokens ?? "?"} + ${u.completion_tokens ?? "?"})`);
    }
    if (typeof data.total_ms === "number") parts.push(`共 ${formatMs(data.total_ms)}`);
    if (data.model) parts.push(data.model);
    stats.textContent = parts.join(" · ");
    if (u) {
      stats.title = `prompt ${u.prompt_tokens ?? "?"} · completion ${u.completion_tokens ?? "?"} · total ${u.total_tokens ?? "?"}`;
    }
  }

  setNote(text) {
    let note = $(".msg-note", this.meta);
    if (!text) {
      note?.remove();
      return;
    }
    if (!note) {
      note = el("span", { class: "msg-note" });
      this.meta.append(note);
    }
    note.textContent = text;
  }

  setError(message) {
    let box = $(".msg-error", this.node);
    if (!message) {
      box?.remove();
      return;
    }
    if (!box) {
      box = el("div", { class: "msg-error", role: "alert", dataTestid: "error" });
      this.node.insertBefore(box, this.meta);
    }
    box.textContent = message;
  }
}

class App {
  constructor() {
    this.apiKey = storageGet(KEY_STORAGE);
    this.info = null;
    this.conversations = [];
    this.currentId = null;
    this.streams = new Map(); // conversation id (or "new") → stream controller
    this.views = new Map(); // conversation id → messages container kept while it streams
    this._keyPrompt = null;

    this.ui = {
      sidebar: $("#sidebar"),
      toggle: $('[data-testid="sidebar-toggle"]'),
      backdrop: $("#backdrop"),
      list: $("#conversation-list"),
      newChat: $('[data-testid="new-chat"]'),
      banner: $('[data-testid="emulator-banner"]'),
      notice: $("#notice"),
      scroller: $("#messages"),
      empty: $("#empty"),
      form: $("#composer"),
      input: $('[data-testid="question"]'),
      send: $('[data-testid="send"]'),
      stop: $('[data-testid="stop"]'),
      model: $("#model"),
      title: $("#conversation-title"),
      footer: $("#server-info"),
      keyDialog: $("#key-dialog"),
      keyForm: $("#key-form"),
      keyInput: $("#api-key"),
      keyError: $("#key-error"),
    };
    this.thread = el("div", { class: "thread" });
    this.ui.scroller.append(this.thread);
  }

  // -- HTTP --

  headers(extra = {}) {
    const h = { ...extra };
    if (this.apiKey) h.Authorization = `Bearer ${this.apiKey}`;
    return h;
  }

  /** fetch() with the API key; a 401 asks for a key (once per 401) and retries. */
  async request(path, { method = "GET", body, headers = {}, signal } = {}) {
    for (let attempt = 0; ; attempt += 1) {
      const init = { method, headers: this.headers(headers), signal, cache: "no-store" };
      if (body !== undefined) {
        init.body = JSON.stringify(body);
        init.headers["Content-Type"] = "application/json";
      }
      const resp = await fetch(path, init);
      if (resp.status === 401 && attempt < 3) {
        const err = await errorFrom(resp);
        const key = await this.askForKey(this.apiKey ? "这个 API key 无效 · This API key was rejected." : err.message);
        if (key) continue;
        throw err;
      }
      if (!resp.ok) throw await errorFrom(resp);
      return resp;
    }
  }

  async json(path, opts) {
    const resp = await this.request(path, opts);
    if (resp.status === 204) return null;
    return resp.json();
  }

  /** Show the API-key dialog; resolves to the key, or "" when the user cancels. */
  askForKey(reason = "") {
    if (this._keyPrompt) return this._keyPrompt;
    const { keyDialog, keyForm, keyInput, keyError } = this.ui;
    this._keyPrompt = new Promise((resolve) => {
      keyError.textContent = reason;
      keyError.hidden = !reason;
      keyInput.value = "";
      const done = (key) => {
        keyForm.removeEventListener("submit", onSubmit);
        keyDialog.removeEventListener("close", onClose);
        if (keyDialog.open) keyDialog.close();
        this._keyPrompt = null;
        resolve(key);
      };
      const onSubmit = (ev) => {
        ev.preventDefault();
        const key = keyInput.value.trim();
        if (!key) return;
        this.apiKey = key;
        storageSet(KEY_STORAGE, key);
        done(key);
      };
      const onClose = () => done("");
      const onCancel = () => keyDialog.close();
      $("#key-cancel").addEventListener("click", onCancel, { once: true });
      keyForm.addEventListener("submit", onSubmit);
      keyDialog.addEventListener("close", onClose);
      keyDialog.showModal();
      keyInput.focus();
    });
    return this._keyPrompt;
  }

  // -- boot --

  async start() {
    this.bindUi();
    try {
      this.info = await this.json("/api/info");
    } catch (err) {
      this.showNotice(`无法连接服务器 · Cannot reach the server: ${err.message}`);
    }
    if (this.info) this.applyInfo();
    if (this.info?.auth_required && !this.apiKey) await this.askForKey();
    await this.refreshList();
    const fromHash = this.hashId();
    if (fromHash) await this.open(fromHash, { quiet: true });
    else this.showEmpty();
    this.updateComposer();
    document.body.dataset.ready = "true";
  }

  applyInfo() {
    const info = this.info;
    this.ui.banner.hidden = info.upstream !== "emulator";
    const models = Array.isArray(info.models) ? info.models : [];
    const sel = this.ui.model;
    sel.textContent = "";
    const names = models.map((m) => (typeof m === "string" ? m : m?.id || m?.name)).filter(Boolean);
    if (info.default_model && !names.includes(info.default_model)) names.unshift(info.default_model);
    for (const name of names) sel.append(el("option", { value: name }, name));
    const saved = storageGet(MODEL_STORAGE);
    sel.value = names.includes(saved) ? saved : info.default_model || names[0] || "";
    sel.closest(".model-picker").hidden = names.length === 0;
    const upstream = info.upstream === "emulator" ? "离线模拟器 emulator" : `ERNIE ${info.api || ""}`.trim();
    this.ui.footer.textContent = `wenxin-stream ${info.version || ""} · ${upstream}`;
  }

  bindUi() {
    const { form, input, stop, newChat, toggle, backdrop, model, list } = this.ui;
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.send();
    });
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) {
        ev.preventDefault();
        this.send();
      }
    });
    input.addEventListener("input", () => {
      this.autosize();
      this.updateComposer();
    });
    stop.addEventListener("click", () => this.stopCurrent());
    newChat.addEventListener("click", () => {
      this.newChat();
      this.closeSidebar();
    });
    toggle.addEventListener("click", () => this.toggleSidebar());
    backdrop.addEventListener("click", () => this.closeSidebar());
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape" && document.body.classList.contains("sidebar-open")) this.closeSidebar();
    });
    model.addEventListener("change", () => storageSet(MODEL_STORAGE, model.value));
    list.addEventListener("click", (ev) => {
      const item = ev.target.closest("[data-conversation-id]");
      if (!item) return;
      ev.preventDefault();
      this.open(item.dataset.conversationId);
      this.closeSidebar();
    });
    window.addEventListener("hashchange", () => {
      const id = this.hashId();
      if (id && id !== this.currentId) this.open(id, { quiet: true });
      if (!id && this.currentId) this.newChat();
    });
  }

  hashId() {
    const m = /^#c=([\w.-]+)$/.exec(location.hash);
    return m ? m[1] : null;
  }

  setHash(id) {
    const want = id ? `#c=${id}` : "";
    if (location.hash === want || (!id && !location.hash)) return;
    history.replaceState(null, "", want || location.pathname + location.search);
  }

  toggleSidebar() {
    const open = !document.body.classList.contains("sidebar-open");
    document.body.classList.toggle("sidebar-open", open);
    this.ui.toggle.setAttribute("aria-expanded", String(open));
    this.ui.backdrop.hidden = !open;
    if (open) (this.ui.list.querySelector("a") || this.ui.newChat).focus();
  }

  closeSidebar() {
    if (!document.body.classList.contains("sidebar-open")) return;
    document.body.classList.remove("sidebar-open");
    this.ui.toggle.setAttribute("aria-expanded", "false");
    this.ui.backdrop.hidden = true;
  }

  showNotice(message) {
    const n = this.ui.notice;
    n.textContent = message;
    n.hidden = !message;
  }

  autosize() {
    const input = this.ui.input;
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
  }

  updateComposer() {
    const active = this.streams.get(this.currentId || "new");
    const streaming = Boolean(active);
    this.ui.stop.hidden = !streaming;
    this.ui.send.hidden = streaming;
    this.ui.stop.disabled = Boolean(active?.stopping);
    this.ui.send.disabled = !this.ui.input.value.trim();
  }

  // -- conversations --

  async refreshList() {
    try {
      const data = await this.json("/api/conversations");
      this.conversations = Array.isArray(data?.conversations) ? data.conversations : [];
      this.renderList();
    } catch (err) {
      this.showNotice(`会话列表加载失败 · Could not load conversations: ${err.message}`);
    }
  }

  upsertConversation(conv) {
    const i = this.conversations.findIndex((c) => c.id === conv.id);
    const old = i >= 0 ? this.conversations.splice(i, 1)[0] : {};
    this.conversations.unshift({ ...old, ...conv });
    this.renderList();
  }

  renderList() {
    const list = this.ui.list;
    list.textContent = "";
    if (!this.conversations.length) {
      list.append(el("li", { class: "list-empty" }, "还没有会话 · No conversations yet"));
      return;
    }
    for (const c of this.conversations) {
      const li = el("li");
      const a = el("a", {
        href: `#c=${c.id}`,
        class: "conv",
        dataTestid: "conversation",
        dataConversationId: c.id,
        ariaCurrent: c.id === this.currentId ? "page" : null,
      });
      a.append(el("span", { class: "conv-title" }, c.title || "新对话 · New chat"));
      const when = formatWhen(c.updated_at || c.created_at);
      const count = typeof c.message_count === "number" ? `${c.message_count} 条` : "";
      a.append(el("span", { class: "conv-meta" }, [when, count].filter(Boolean).join(" · ")));
      if (this.streams.has(c.id)) a.classList.add("is-streaming");
      li.append(a);
      list.append(li);
    }
  }

  swapThread(id) {
    // Keep the live view of a conversation whose answer is still streaming.
    const old = this.thread;
    if (this.currentId && this.streams.has(this.currentId)) this.views.set(this.currentId, old);
    const kept = id ? this.views.get(id) : null;
    this.thread = kept || el("div", { class: "thread" });
    if (kept) this.views.delete(id);
    if (this.thread !== old) old.replaceWith(this.thread);
    return Boolean(kept);
  }

  showEmpty() {
    this.ui.empty.hidden = this.thread.children.length > 0;
  }

  newChat() {
    this.swapThread(null);
    this.currentId = null;
    this.ui.title.textContent = "新对话 · New chat";
    this.setHash(null);
    this.renderList();
    this.showEmpty();
    this.updateComposer();
    this.ui.input.focus();
  }

  async open(id, { quiet = false } = {}) {
    const kept = this.swapThread(id);
    this.currentId = id;
    this.setHash(id);
    this.renderList();
    this.updateComposer();
    const known = this.conversations.find((c) => c.id === id);
    this.ui.title.textContent = known?.title || "…";
    if (kept) {
      this.showEmpty();
      this.scrollToEnd(true);
      return;
    }
    const thread = this.thread;
    thread.setAttribute("aria-busy", "true");
    try {
      const conv = await this.json(`/api/conversations/${encodeURIComponent(id)}`);
      if (this.thread !== thread) return; // the user moved on meanwhile
      this.ui.title.textContent = conv.title || "新对话 · New chat";
      for (const m of conv.messages || []) {
        const hasEnd = m.role === "assistant";
        const status = hasEnd ? statusOf(m.status, m.end_reason, false) : "complete";
        const view = new MessageView(m.role === "user" ? "user" : "assistant", {
          content: m.content || "",
          status,
          endReason: hasEnd && m.end_reason !== "completed" ? m.end_reason : "",
          id: m.id,
        });
        if (hasEnd && m.status === "streaming") {
          // Still being generated (asked from another tab, or just before a reload).
          view.setStatus("pending");
          view.setNote("仍在生成中，稍后刷新查看 · Still being generated — reload to see the rest");
        }
        if (hasEnd && (m.usage || typeof m.ttft_ms === "number")) view.setStats(m);
        thread.append(view.node);
      }
      this.showEmpty();
      this.scrollToEnd(true);
    } catch (err) {
      if (this.thread !== thread) return;
      if (err.status === 404) {
        this.setHash(null);
        this.currentId = null;
        this.renderList();
        if (!quiet) this.showNotice("这个会话不存在了 · That conversation no longer exists.");
        this.showEmpty();
      } else {
        this.showNotice(`会话加载失败 · Could not load the conversation: ${err.message}`);
      }
    } finally {
      thread.removeAttribute("aria-busy");
    }
  }

  scrollToEnd(force = false) {
    const s = this.ui.scroller;
    const nearBottom = s.scrollHeight - s.scrollTop - s.clientHeight < 120;
    if (force || nearBottom) s.scrollTop = s.scrollHeight;
  }

  // -- asking --

  async send() {
    const input = this.ui.input;
    const content = input.value.trim();
    if (!content || this.streams.has(this.currentId || "new")) return;
    input.value = "";
    this.autosize();
    this.showNotice("");

    const thread = this.thread;
    const userView = new MessageView("user", { content, status: "complete" });
    const answer = new MessageView("assistant", { status: "streaming" });
    thread.append(userView.node, answer.node);
    this.showEmpty();
    this.scrollToEnd(true);
    answer.onRendered = () => {
      if (this.thread === thread) this.scrollToEnd();
    };

    const ctl = {
      key: this.currentId || "new",
      conversationId: this.currentId,
      answer,
      abort: new AbortController(),
      streamId: null,
      lastEventId: "",
      ended: false,
      stopping: false,
      aborted: false,
    };
    this.streams.set(ctl.key, ctl);
    this.updateComposer();

    try {
      if (!ctl.conversationId) {
        const conv = await this.json("/api/conversations", { method: "POST", body: {} });
        ctl.conversationId = conv.id;
        this.streams.delete(ctl.key);
        ctl.key = conv.id;
        this.streams.set(conv.id, ctl);
        if (this.thread === thread) {
          this.currentId = conv.id;
          this.setHash(conv.id);
        } else {
          this.views.set(conv.id, thread);
        }
        this.upsertConversation({
          ...conv,
          title: conv.title || content.slice(0, 30),
          message_count: 0,
        });
        this.ui.title.textContent = conv.title || content.slice(0, 30);
      }
      await this.stream(ctl, content);
    } catch (err) {
      if (!ctl.ended) {
        answer.setStatus("error");
        answer.setError(err.message || String(err));
      }
      // Refused before anything streamed (limits, auth…): give the question back for a retry.
      if (err instanceof ApiError && !answer.text && !input.value) {
        input.value = content;
        this.autosize();
      }
    } finally {
      answer.scheduleRender();
      clearTimeout(ctl.stopTimer);
      this.streams.delete(ctl.key);
      if (this.currentId !== ctl.conversationId && ctl.conversationId) this.views.delete(ctl.conversationId);
      this.updateComposer();
      await this.refreshList();
    }
  }

  handleEvent(ctl, ev) {
    const { answer } = ctl;
    if (ev.id) ctl.lastEventId = ev.id;
    let data = {};
    try {
      data = ev.data ? JSON.parse(ev.data) : {};
    } catch {
      return; // a malformed event is skipped, not fatal
    }
    if (ev.type === "start") {
      ctl.streamId = data.stream_id || ctl.streamId;
      if (data.message_id) answer.node.dataset.messageId = data.message_id;
      if (data.model) ctl.model = data.model;
      if (ctl.stopping) this.sendCancel(ctl);
      if (ctl.conversationId && !this.conversations.some((c) => c.id === ctl.conversationId)) {
        this.refreshList();
      }
    } else if (ev.type === "delta") {
      if (typeof data.text === "string") answer.append(data.text);
    } else if (ev.type === "end") {
      ctl.ended = true;
      const error = data.error ? data.error.message || data.error.code || "error" : "";
      const status = statusOf(null, data.end_reason, Boolean(error));
      answer.renderNow();
      answer.setStatus(status, data.end_reason && data.end_reason !== "completed" ? data.end_reason : "");
      answer.setStats({ ...data, model: data.model || ctl.model });
      answer.setNote("");
      if (error) answer.setError(error);
      return false;
    }
    return true;
  }

  /** POST the question and read the answer; resume after a dropped connection. */
  async stream(ctl, content) {
    const { answer } = ctl;
    const body = { content };
    const model = this.ui.model.value;
    if (model) body.model = model;
    const path = `/api/conversations/${encodeURIComponent(ctl.conversationId)}/messages`;
    const onEvent = (ev) => this.handleEvent(ctl, ev);

    let failure = null;
    try {
      const resp = await this.request(path, {
        method: "POST",
        body,
        headers: { Accept: "text/event-stream" },
        signal: ctl.abort.signal,
      });
      await readEventStream(resp.body, onEvent);
    } catch (err) {
      if (err instanceof ApiError) throw err; // an HTTP error before the stream: nothing to resume
      failure = err;
    }

    let attempt = 0;
    while (!ctl.ended && !ctl.aborted && ctl.streamId && attempt < RESUME_DELAYS_MS.length) {
      answer.setNote("重新连接中… · Reconnecting…");
      await sleep(RESUME_DELAYS_MS[attempt]);
      attempt += 1;
      if (ctl.aborted) break;
      try {
        const headers = { Accept: "text/event-stream" };
        if (ctl.lastEventId) headers["Last-Event-ID"] = ctl.lastEventId;
        const resp = await this.request(`/api/streams/${encodeURIComponent(ctl.streamId)}`, {
          headers,
          signal: ctl.abort.signal,
        });
        answer.setNote("");
        await readEventStream(resp.body, onEvent);
        if (!ctl.ended) failure = new Error("stream closed before its end event");
      } catch (err) {
        failure = err;
        if (err instanceof ApiError && err.status === 404) break; // expired or unknown: give up
      }
    }

    if (ctl.ended) return;
    answer.setNote("");
    answer.renderNow();
    if (ctl.aborted) {
      answer.setStatus("stopped", "cancelled");
      return;
    }
    answer.setStatus("error", "interrupted");
    const why = failure?.message ? ` (${failure.message})` : "";
    answer.setError(`连接中断，回答不完整 · The connection was lost; the answer is incomplete${why}`);
  }

  sendCancel(ctl) {
    if (!ctl.streamId || ctl.cancelSent) return;
    ctl.cancelSent = true;
    this.request(`/api/streams/${encodeURIComponent(ctl.streamId)}/cancel`, { method: "POST" }).catch(() => {
      this.abortStream(ctl); // could not cancel politely: drop the connection instead
    });
  }

  abortStream(ctl) {
    if (ctl.ended || ctl.aborted) return;
    ctl.aborted = true;
    ctl.abort.abort();
  }

  stopCurrent() {
    const ctl = this.streams.get(this.currentId || "new");
    if (!ctl || ctl.stopping) return;
    ctl.stopping = true;
    ctl.answer.setNote("正在停止… · Stopping…");
    this.updateComposer();
    if (ctl.streamId) this.sendCancel(ctl);
    else if (ctl.conversationId) {
      // No stream id yet: the start event will trigger the cancel; give up after the grace.
    }
    // The server answers a cancel with the stream's `end` event; if that does not come soon,
    // drop the connection (the server then stores the answer as partial).
    ctl.stopTimer = setTimeout(() => this.abortStream(ctl), STOP_GRACE_MS);
  }
}

export function boot() {
  const app = new App();
  window.wenxinApp = app;
  app.start().catch((err) => app.showNotice(`页面出错 · Page error: ${err.message}`));
  return app;
}

if (typeof document !== "undefined" && document.body?.dataset.app === "wenxin") boot();
