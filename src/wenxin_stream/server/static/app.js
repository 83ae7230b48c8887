// wenxin-stream chat page: streams ERNIE answers over SSE (fetch + ReadableStream), renders
// Markdown as it grows, resumes a dropped stream, manages conversations. No build step; the
// vendored libraries are in vendor/ (scripts/vendor-static).
//
// The module re-exports its SSE parser (for the browser unit tests) and boots the page only
// when the document is the chat page (<body data-app="wenxin">), so importing it elsewhere has
// no side effects.

import { Composer } from "./composer.js";
import { initLanguage, language, setLanguage, t, translate } from "./i18n.js";
import { MessageView, copyText, el } from "./message.js";
import { curate, fillSelect, fromNames, renderBadges } from "./models.js";
import { renderList } from "./sidebar.js";
import { readEventStream } from "./sse.js";
import { renderUsage, usageLines } from "./usage.js";

export { SSEDecoder, SSEParser, readEventStream } from "./sse.js";

// ---- API ------------------------------------------------------------------------------------

const KEY_STORAGE = "wenxin.apiKey";
const MODEL_STORAGE = "wenxin.model";
const THEME_STORAGE = "wenxin.theme";
const SYSTEM_STORAGE = "wenxin.system.";

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
  let message = t("err.http", { status: resp.status });
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
    if (after) message += t("err.retry_after", { s: after });
  }
  return new ApiError(resp.status, message, code);
}

// ---- page -----------------------------------------------------------------------------------

const RESUME_DELAYS_MS = [200, 500, 1000, 2000];
const STOP_GRACE_MS = 2500;
const DELETE_CONFIRM_MS = 4000;
const THEMES = ["system", "light", "dark"];

function $(sel, root = document) {
  return root.querySelector(sel);
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

/** The title a new conversation shows until the server's comes back: the question, cut with
 * an ellipsis. */
export function provisionalTitle(question, max = 30) {
  const text = question.split(/\s+/).join(" ").trim();
  const chars = [...text];
  return chars.length <= max ? text : `${chars.slice(0, max - 1).join("")}…`;
}

/** Apply a theme choice ("system", "light" or "dark") to the document. */
export function applyTheme(choice) {
  const root = document.documentElement;
  if (choice === "light" || choice === "dark") root.dataset.theme = choice;
  else delete root.dataset.theme;
}

class App {
  constructor() {
    this.apiKey = storageGet(KEY_STORAGE);
    this.info = null;
    this.models = [];
    this.conversations = [];
    this.currentId = null;
    this.query = "";
    this.renaming = null;
    this.confirming = null;
    this.streams = new Map(); // conversation id (or "new") → stream controller
    this.views = new Map(); // conversation id → messages container kept while it streams
    this._keyPrompt = null;

    this.ui = {
      sidebar: $("#sidebar"),
      toggle: $('[data-testid="sidebar-toggle"]'),
      backdrop: $("#backdrop"),
      list: $("#conversation-list"),
      search: $('[data-testid="conversation-search"]'),
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
      caps: $("#model-caps"),
      title: $("#conversation-title"),
      footer: $("#server-info"),
      usage: $("#usage"),
      language: $('[data-testid="language"]'),
      theme: $('[data-testid="theme"]'),
      settingsToggle: $('[data-testid="settings-toggle"]'),
      settings: $("#settings"),
      system: $('[data-testid="system-prompt"]'),
      keyDialog: $("#key-dialog"),
      keyForm: $("#key-form"),
      keyInput: $("#api-key"),
      keyError: $("#key-error"),
    };
    this.composer = new Composer(
      {
        tools: $("#composer-tools"),
        attach: $('[data-testid="attach"]'),
        file: $("#image-input"),
        preview: $('[data-testid="attachment"]'),
        previewImage: $("#attachment-image"),
        removeImage: $('[data-testid="remove-image"]'),
        thinking: $('[data-testid="toggle-thinking"]'),
        search: $('[data-testid="toggle-search"]'),
      },
      (message) => this.showNotice(message),
    );
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
        const key = await this.askForKey(this.apiKey ? t("err.key_rejected") : err.message);
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
    initLanguage();
    this.ui.language.value = language();
    const theme = storageGet(THEME_STORAGE);
    this.ui.theme.value = THEMES.includes(theme) ? theme : "system";
    applyTheme(this.ui.theme.value);
    translate();
    this.bindUi();
    try {
      this.info = await this.json("/api/info");
    } catch (err) {
      this.showNotice(t("err.server", { message: err.message }));
    }
    if (this.info?.auth_required && !this.apiKey) await this.askForKey();
    if (this.info) await this.loadModels();
    await this.refreshList();
    this.refreshUsage();
    const fromHash = this.hashId();
    if (fromHash) await this.open(fromHash, { quiet: true });
    else this.showEmpty();
    this.updateComposer();
    document.body.dataset.ready = "true";
  }

  /** The key's own usage line (GET /api/usage); nothing shown when it cannot be had. */
  async refreshUsage() {
    try {
      this.usage = await this.json("/api/usage");
    } catch {
      this.usage = null;
    }
    renderUsage(this.ui.usage, usageLines(this.usage));
  }

  /** The picker: /api/models (the curated catalogue), else /api/info's names. */
  async loadModels() {
    const info = this.info;
    const saved = storageGet(MODEL_STORAGE);
    let entries = null;
    try {
      const data = await this.json("/api/models");
      entries = curate(data?.models, [saved]);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      entries = null; // a server without the catalogue route: fall back to the names
    }
    if (!entries || !entries.length) {
      const names = (Array.isArray(info.models) ? info.models : [])
        .map((m) => (typeof m === "string" ? m : m?.id || m?.name))
        .filter(Boolean);
      entries = fromNames(names, info.default_model);
    }
    this.models = entries;
    this.renderModels(saved || info.default_model);
    this.ui.banner.hidden = info.upstream !== "emulator";
    const upstream = info.upstream === "emulator" ? t("footer.emulator") : `ERNIE ${info.api || ""}`.trim();
    this.ui.footer.textContent = `wenxin-stream ${info.version || ""} · ${upstream}`;
  }

  renderModels(wanted) {
    const sel = this.ui.model;
    const chosen = fillSelect(sel, this.models, wanted ?? sel.value);
    sel.closest(".model-picker").hidden = this.models.length === 0;
    this.onModel(chosen);
  }

  onModel(id) {
    const entry = this.models.find((m) => m.id === id) || null;
    renderBadges(this.ui.caps, entry);
    this.composer.setModel(entry);
  }

  switchLanguage(lang) {
    setLanguage(lang);
    translate();
    if (this.models.length) this.renderModels(this.ui.model.value);
    this.composer.render();
    if (this.info) this.loadFooter();
    renderUsage(this.ui.usage, usageLines(this.usage));
    this.renderList();
    const known = this.conversations.find((c) => c.id === this.currentId);
    this.ui.title.textContent = known?.title || t("new_chat");
    // Rebuild the open thread's labels from the stored conversation (not while it streams).
    if (this.currentId && !this.streams.has(this.currentId)) this.open(this.currentId, { quiet: true });
    else this.refreshActions();
  }

  loadFooter() {
    const info = this.info;
    const upstream = info.upstream === "emulator" ? t("footer.emulator") : `ERNIE ${info.api || ""}`.trim();
    this.ui.footer.textContent = `wenxin-stream ${info.version || ""} · ${upstream}`;
  }

  bindUi() {
    const { form, input, stop, newChat, toggle, backdrop, model, list, search } = this.ui;
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
      if (ev.key !== "Escape" || ev.isComposing) return;
      if (this.ui.keyDialog.open) return;
      if (document.body.classList.contains("sidebar-open")) {
        this.closeSidebar();
        return;
      }
      if (this.streams.has(this.currentId || "new")) {
        ev.preventDefault();
        this.stopCurrent();
      }
    });
    model.addEventListener("change", () => {
      storageSet(MODEL_STORAGE, model.value);
      this.onModel(model.value);
    });
    search.addEventListener("input", () => {
      this.query = search.value;
      this.renderList();
    });
    list.addEventListener("click", (ev) => this.onListClick(ev));
    list.addEventListener("keydown", (ev) => this.onRenameKey(ev));
    list.addEventListener("focusout", (ev) => {
      if (ev.target.matches?.('[data-testid="rename-input"]')) this.commitRename(ev.target);
    });
    this.ui.scroller.addEventListener("click", (ev) => this.onThreadClick(ev));
    this.ui.language.addEventListener("change", () => this.switchLanguage(this.ui.language.value));
    this.ui.theme.addEventListener("change", () => {
      storageSet(THEME_STORAGE, this.ui.theme.value === "system" ? "" : this.ui.theme.value);
      applyTheme(this.ui.theme.value);
    });
    this.ui.settingsToggle.addEventListener("click", () => {
      const open = this.ui.settings.hidden;
      this.ui.settings.hidden = !open;
      this.ui.settingsToggle.setAttribute("aria-expanded", String(open));
      if (open) this.ui.system.focus();
    });
    this.ui.system.addEventListener("change", () => {
      if (this.currentId) storageSet(SYSTEM_STORAGE + this.currentId, this.ui.system.value.trim());
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
    this.refreshActions();
  }

  /** Edit on the last question, Copy on answers, Regenerate (finished) or Retry (error,
   * stopped) on the last answer — none while this conversation streams. Each of the three
   * replaces the last exchange (here and on the server), never appends one. */
  refreshActions() {
    const busy = this.streams.has(this.currentId || "new");
    const nodes = [...this.thread.querySelectorAll('[data-testid="message"]')];
    const lastAnswer = nodes.filter((n) => n.dataset.role === "assistant").pop();
    const lastQuestion = nodes.filter((n) => n.dataset.role === "user").pop();
    for (const node of nodes) {
      const view = node.__view;
      if (!view) continue;
      if (busy || view.status === "streaming" || view.status === "pending") {
        view.setActions({});
      } else if (view.role === "user") {
        view.setActions({ edit: node === lastQuestion });
      } else {
        const again = node !== lastAnswer ? "" : view.status === "complete" ? "regenerate" : "retry";
        view.setActions({ copy: Boolean(view.text), again });
      }
    }
  }

  // -- conversations --

  async refreshList() {
    try {
      const data = await this.json("/api/conversations");
      this.conversations = Array.isArray(data?.conversations) ? data.conversations : [];
      this.renderList();
    } catch (err) {
      this.showNotice(t("err.list", { message: err.message }));
    }
  }

  upsertConversation(conv) {
    const i = this.conversations.findIndex((c) => c.id === conv.id);
    const old = i >= 0 ? this.conversations.splice(i, 1)[0] : {};
    this.conversations.unshift({ ...old, ...conv });
    this.renderList();
  }

  renderList() {
    renderList(this.ui.list, this.conversations, {
      currentId: this.currentId,
      query: this.query,
      streaming: new Set(this.streams.keys()),
      renaming: this.renaming,
      confirming: this.confirming,
    });
    const input = this.ui.list.querySelector('[data-testid="rename-input"]');
    if (input && document.activeElement !== input) {
      input.focus();
      input.select();
    }
  }

  onListClick(ev) {
    const button = ev.target.closest("button[data-conversation-id]");
    if (button) {
      ev.preventDefault();
      const id = button.dataset.conversationId;
      if (button.dataset.testid === "rename") {
        this.renaming = id;
        this.confirming = null;
        this.renderList();
      } else if (button.dataset.testid === "delete") {
        if (this.confirming === id) this.deleteConversation(id);
        else {
          this.confirming = id;
          clearTimeout(this._confirmTimer);
          this._confirmTimer = setTimeout(() => {
            this.confirming = null;
            this.renderList();
          }, DELETE_CONFIRM_MS);
          this.renderList();
        }
      }
      return;
    }
    const item = ev.target.closest("a[data-conversation-id]");
    if (!item) return;
    ev.preventDefault();
    this.open(item.dataset.conversationId);
    this.closeSidebar();
  }

  onRenameKey(ev) {
    const input = ev.target;
    if (!input.matches?.('[data-testid="rename-input"]')) return;
    if (ev.key === "Enter" && !ev.isComposing) {
      ev.preventDefault();
      this.commitRename(input);
    } else if (ev.key === "Escape") {
      ev.preventDefault();
      ev.stopPropagation();
      this.renaming = null;
      this.renderList();
    }
  }

  async commitRename(input) {
    const id = input.dataset.conversationId;
    if (this.renaming !== id) return;
    this.renaming = null;
    const title = input.value.split(/\s+/).join(" ").trim();
    const conv = this.conversations.find((c) => c.id === id);
    if (!title || !conv || title === conv.title) {
      this.renderList();
      return;
    }
    conv.title = title;
    this.renderList();
    if (id === this.currentId) this.ui.title.textContent = title;
    try {
      const updated = await this.json(`/api/conversations/${encodeURIComponent(id)}`, {
        method: "PATCH",
        body: { title },
      });
      Object.assign(conv, updated || {});
    } catch (err) {
      this.showNotice(t("rename_failed", { message: err.message }));
      await this.refreshList();
    }
  }

  async deleteConversation(id) {
    this.confirming = null;
    clearTimeout(this._confirmTimer);
    const ctl = this.streams.get(id);
    if (ctl) this.abortStream(ctl);
    try {
      await this.request(`/api/conversations/${encodeURIComponent(id)}`, { method: "DELETE" });
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) {
        this.showNotice(t("delete_failed", { message: err.message }));
        this.renderList();
        return;
      }
    }
    this.conversations = this.conversations.filter((c) => c.id !== id);
    storageSet(SYSTEM_STORAGE + id, "");
    this.views.delete(id);
    if (this.currentId === id) this.newChat();
    else this.renderList();
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

  systemFor(id, stored) {
    return id ? storageGet(SYSTEM_STORAGE + id) || stored || "" : "";
  }

  newChat() {
    this.swapThread(null);
    this.currentId = null;
    this.ui.title.textContent = t("new_chat");
    this.ui.system.value = "";
    this.setHash(null);
    this.renderList();
    this.showEmpty();
    this.updateComposer();
    this.ui.input.focus();
  }

  addView(thread, view) {
    view.node.__view = view;
    thread.append(view.node);
    return view;
  }

  async open(id, { quiet = false } = {}) {
    const kept = this.swapThread(id);
    this.currentId = id;
    this.setHash(id);
    this.renderList();
    this.updateComposer();
    const known = this.conversations.find((c) => c.id === id);
    this.ui.title.textContent = known?.title || "…";
    this.ui.system.value = this.systemFor(id, known?.system);
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
      this.ui.title.textContent = conv.title || t("new_chat");
      this.ui.system.value = this.systemFor(id, conv.system);
      thread.textContent = "";
      for (const m of conv.messages || []) {
        const hasEnd = m.role === "assistant";
        const view = this.addView(thread, new MessageView(hasEnd ? "assistant" : "user", {
          content: m.content || "",
          status: hasEnd ? statusOf(m.status, m.end_reason, false) : "complete",
          endReason: hasEnd && m.end_reason !== "completed" ? m.end_reason : "",
          id: m.id,
          reasoning: m.reasoning || "",
          sources: m.search_results,
          toolCalls: m.tool_calls,
        })); // prettier-ignore
        if (hasEnd && m.status === "streaming") {
          // Still being generated (asked from another tab, or just before a reload).
          view.setStatus("pending");
          view.setNote(t("still_generating"));
        }
        if (hasEnd && (m.usage || typeof m.ttft_ms === "number")) view.setStats(m);
      }
      this.showEmpty();
      this.refreshActions();
      this.scrollToEnd(true);
    } catch (err) {
      if (this.thread !== thread) return;
      if (err.status === 404) {
        this.setHash(null);
        this.currentId = null;
        this.renderList();
        if (!quiet) this.showNotice(t("err.gone"));
        this.showEmpty();
      } else {
        this.showNotice(t("err.load", { message: err.message }));
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

  // -- message actions --

  async onThreadClick(ev) {
    const button = ev.target.closest("button[data-action]");
    if (!button) return;
    const node = button.closest('[data-testid="message"]');
    const view = node?.__view;
    const action = button.dataset.action;
    if (action === "copy-code" || action === "copy-answer") {
      const text = action === "copy-code"
        ? button.closest(".code-block")?.querySelector("pre code")?.textContent || ""
        : view?.text || "";
      if (await copyText(text)) this.flash(button);
      return;
    }
    if (!view || this.streams.has(this.currentId || "new")) return;
    if (action === "regenerate" || action === "retry") {
      const question = this.questionBefore(node);
      if (question) this.send({ content: question.text, images: question.images, replaces: question.node });
    } else if (action === "edit") {
      this.editQuestion(view);
    } else if (action === "edit-send") {
      const text = node.querySelector("textarea")?.value.trim();
      if (text) this.send({ content: text, images: view.images || [], replaces: node });
    } else if (action === "edit-cancel") {
      view.editor?.remove();
      view.editor = null;
      view.body.hidden = false;
    }
  }

  flash(button) {
    button.classList.add("is-done");
    const label = button.querySelector(".label");
    const old = label?.textContent;
    if (label) label.textContent = t("copied");
    setTimeout(() => {
      button.classList.remove("is-done");
      if (label) label.textContent = old;
    }, 1200);
  }

  /** The question a reply answered: the user message before it. */
  questionBefore(node) {
    let prev = node.previousElementSibling;
    while (prev && prev.dataset.role !== "user") prev = prev.previousElementSibling;
    const view = prev?.__view;
    return view ? { text: view.text, images: view.images || [], node: prev } : null;
  }

  editQuestion(view) {
    if (view.editor) return;
    const editor = el("div", { class: "msg-editor", dataTestid: "editor" });
    const area = el("textarea", { class: "msg-editor-text", rows: 3 });
    area.value = view.text;
    const row = el("div", { class: "msg-editor-actions" });
    const cancel = el("button", { type: "button", class: "btn", dataAction: "edit-cancel" }, t("cancel"));
    const send = el("button", { type: "button", class: "btn btn-primary", dataAction: "edit-send",
      dataTestid: "edit-send" }, t("edit_send")); // prettier-ignore
    row.append(cancel, send);
    editor.append(area, row);
    area.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        send.click();
      } else if (ev.key === "Escape") {
        ev.stopPropagation();
        cancel.click();
      }
    });
    view.body.hidden = true;
    view.node.insertBefore(editor, view.body);
    view.editor = editor;
    area.focus();
  }

  // -- asking --

  /** Take the exchange that starts with the question `node` out of the thread (regenerate,
   * retry, edit); the id of the stored question it was ("" when it never was stored). */
  dropExchange(node) {
    const replace = node.dataset.messageId || "";
    while (node.nextElementSibling) node.nextElementSibling.remove();
    node.remove();
    return replace;
  }

  /** Ask a question: the composer's (no argument), or one given (regenerate, retry, edit:
   * `replaces` is the last question's node, whose exchange the new one replaces). */
  async send(given = null) {
    const input = this.ui.input;
    const content = given ? given.content : input.value.trim();
    if (!content || this.streams.has(this.currentId || "new")) return;
    const extra = this.composer.fields();
    let replace = "";
    if (given) {
      delete extra.images;
      if (given.images?.length && this.composer.vision()) extra.images = given.images;
      if (given.replaces?.parentNode === this.thread) replace = this.dropExchange(given.replaces);
      if (replace) extra.replace = replace;
    } else {
      input.value = "";
      this.autosize();
    }
    this.showNotice("");
    for (const editor of this.thread.querySelectorAll('[data-testid="editor"]')) {
      const owner = editor.closest('[data-testid="message"]')?.__view;
      editor.remove();
      if (owner) {
        owner.editor = null;
        owner.body.hidden = false;
      }
    }

    const thread = this.thread;
    const userView = new MessageView("user", { content, status: "complete", images: extra.images || [] });
    userView.images = extra.images || [];
    // Until the server names the new question, this one still stands for the stored exchange
    // it replaces: a retry after a refusal replaces that one again.
    if (replace) userView.node.dataset.messageId = replace;
    this.addView(thread, userView);
    const answer = this.addView(thread, new MessageView("assistant", { status: "streaming" }));
    this.showEmpty();
    this.scrollToEnd(true);
    answer.onRendered = () => {
      if (this.thread === thread) this.scrollToEnd();
    };
    if (!given) this.composer.sent();

    const ctl = {
      key: this.currentId || "new",
      conversationId: this.currentId,
      question: userView,
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
    const system = this.ui.system.value.trim();

    try {
      if (!ctl.conversationId) {
        const body = {};
        if (system) body.system = system;
        if (this.ui.model.value) body.model = this.ui.model.value;
        const conv = await this.json("/api/conversations", { method: "POST", body });
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
        this.upsertConversation({ ...conv, title: conv.title || provisionalTitle(content) });
        if (this.thread === thread) this.ui.title.textContent = conv.title || provisionalTitle(content);
      } else {
        const conv = this.conversations.find((c) => c.id === ctl.conversationId);
        if (conv) this.upsertConversation({ ...conv, updated_at: new Date().toISOString() });
        if (system && system !== (conv?.system || "")) extra.system = system;
      }
      await this.stream(ctl, content, extra);
    } catch (err) {
      if (!ctl.ended) {
        answer.setStatus("error");
        answer.setError(err.message || String(err));
      }
      // Refused before anything streamed (limits, auth…): give the question back for a retry.
      if (!given && err instanceof ApiError && !answer.text && !input.value) {
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
      return true; // a malformed event is skipped, not fatal
    }
    if (data === null || typeof data !== "object") return true;
    if (ev.type === "start") {
      ctl.streamId = data.stream_id || ctl.streamId;
      if (data.message_id) answer.node.dataset.messageId = data.message_id;
      if (data.question_id) ctl.question.node.dataset.messageId = data.question_id;
      if (data.model) ctl.model = data.model;
      if (ctl.stopping) this.sendCancel(ctl);
      if (ctl.conversationId && !this.conversations.some((c) => c.id === ctl.conversationId)) {
        this.refreshList();
      }
    } else if (ev.type === "end") {
      ctl.ended = true;
      const error = data.error ? data.error.message || data.error.code || "error" : "";
      const status = statusOf(null, data.end_reason, Boolean(error));
      answer.renderNow();
      answer.setStatus(status, data.end_reason && data.end_reason !== "completed" ? data.end_reason : "");
      answer.setStats({ ...data, model: data.model || ctl.model });
      answer.setNote("");
      if (error) answer.setError(error);
      this.refreshUsage();
      return false;
    } else {
      answer.applyEvent(ev.type, data); // delta, reasoning, search_results, tool_call
    }
    return true;
  }

  /** POST the question and read the answer; resume after a dropped connection. */
  async stream(ctl, content, extra = {}) {
    const { answer } = ctl;
    const body = { content, ...extra };
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
      answer.setNote(t("reconnecting"));
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
    answer.setError(`${t("err.connection_lost")}${why}`);
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
    ctl.answer.setNote(t("stopping"));
    this.updateComposer();
    // Without a stream id yet, the start event sends the cancel.
    if (ctl.streamId) this.sendCancel(ctl);
    // The server answers a cancel with the stream's `end` event; if that does not come soon,
    // drop the connection (the server then stores the answer as partial).
    ctl.stopTimer = setTimeout(() => this.abortStream(ctl), STOP_GRACE_MS);
  }
}

export function boot() {
  const app = new App();
  window.wenxinApp = app;
  app.start().catch((err) => app.showNotice(t("err.page", { message: err.message })));
  return app;
}

if (typeof document !== "undefined" && document.body?.dataset.app === "wenxin") boot();
