// One message of the thread: the question (with its attached image and an Edit control) or
// the answer — its thinking panel (streamed from `reasoning` events before the text), the text
// rendered as Markdown as it grows (code blocks with a language label and a copy button), the
// tool calls it made, the sources it cites, its status flag, stats and action buttons
// (copy, regenerate or retry). The App listens for clicks on [data-action] buttons.

import { t } from "./i18n.js";
import { renderBlocks } from "./markdown.js";

export function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (/^(data|aria)[A-Z]/.test(k)) {
      node.setAttribute(k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`), v);
    } else if (k === "role" || k === "title" || k === "type") node.setAttribute(k, v);
    else node[k] = v;
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

function formatMs(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

/** Copy `text` to the clipboard (the Clipboard API, else a hidden textarea); true if it did. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = el("textarea", { class: "visually-hidden" });
    area.value = text;
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch {
      ok = false;
    }
    area.remove();
    return ok;
  }
}

const SVG = "http://www.w3.org/2000/svg";

/** A small line icon (fonts lack a copy glyph): "copy" or "again". */
function icon(name) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 16 16");
  svg.setAttribute("width", "14");
  svg.setAttribute("height", "14");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(SVG, "path");
  path.setAttribute(
    "d",
    name === "copy" ? "M5 5h8v9H5zM3 11V2h8" : name === "edit" ? "M3 13l1-4 7-7 3 3-7 7z" : "M13 8a5 5 0 1 1-2-4M13 2v3h-3",
  );
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", "currentColor");
  path.setAttribute("stroke-width", "1.5");
  path.setAttribute("stroke-linejoin", "round");
  svg.append(path);
  return svg;
}

function actionButton(action, label, glyph) {
  const b = el("button", { type: "button", class: "btn btn-ghost msg-action", title: label,
    ariaLabel: label, dataAction: action, dataTestid: action }); // prettier-ignore
  b.append(icon(glyph), el("span", { class: "label" }, label));
  return b;
}

/** Wrap a rendered code block in a box with its language label and a copy button. */
function codeBlock(pre) {
  const box = el("div", { class: "code-block", dataTestid: "code-block" });
  const head = el("div", { class: "code-head" });
  head.append(el("span", { class: "code-lang", dataTestid: "code-lang" }, pre.dataset.lang || "text"));
  head.append(actionButton("copy-code", t("copy_code"), "copy"));
  box.append(head, pre);
  return box;
}

/** Patch `container` so that its children are the given block HTML strings, touching only
 * the blocks that changed (the growing answer usually changes only its last block). */
export function patchBlocks(container, blocks) {
  const kids = container.children;
  for (let i = 0; i < blocks.length; i += 1) {
    const html = blocks[i];
    const cur = kids[i];
    if (cur && cur.__md === html) continue;
    const tpl = document.createElement("template");
    tpl.innerHTML = html; // renderBlocks output: markdown-it with HTML off (see markdown.js)
    let node = tpl.content.firstElementChild || document.createElement("div");
    if (node.tagName === "PRE") node = codeBlock(node);
    node.__md = html;
    if (cur) container.replaceChild(node, cur);
    else container.appendChild(node);
  }
  while (kids.length > blocks.length) container.removeChild(container.lastElementChild);
}

export class MessageView {
  constructor(role, opts = {}) {
    const { content = "", status = "complete", endReason = "", id = "", images = [] } = opts;
    this.role = role;
    this.text = content;
    this.reasoning = "";
    this.sources = [];
    this.node = el("article", {
      class: `msg msg-${role}`,
      dataTestid: "message",
      dataRole: role,
      dataStatus: status,
      dataMessageId: id || null,
    });
    this.who = el("div", { class: "msg-who" }, role === "user" ? t("you") : t("ernie"));
    this.node.append(this.who);
    this.body = el("div", { class: role === "user" ? "msg-body msg-text" : "msg-body markdown" });
    this.node.append(this.body);
    this.meta = el("div", { class: "msg-meta" });
    this.actions = el("div", { class: "msg-actions" });
    this.node.append(this.meta, this.actions);
    this._pending = false;
    if (role === "user") {
      this.body.textContent = content;
      for (const src of images) this.addImage(src);
    }
    if (opts.reasoning) this.appendReasoning(opts.reasoning, { open: false });
    if (Array.isArray(opts.toolCalls)) for (const call of opts.toolCalls) this.addToolCall(call);
    if (Array.isArray(opts.sources)) this.setSources(opts.sources);
    if (role !== "user") this.renderNow();
    this.setStatus(status, endReason);
  }

  addImage(src) {
    if (typeof src !== "string" || !/^(data:image\/|https:\/\/)/.test(src)) return;
    const img = el("img", { class: "msg-image", alt: "", dataTestid: "message-image" });
    img.src = src;
    this.node.insertBefore(img, this.body);
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
      if (this.thinking) this._thinkingSummary();
    }
    this._renderFlag();
  }

  _renderFlag() {
    let flag = this.meta.querySelector(".msg-flag");
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
    const key = `end.${reason}`;
    const label = t(key);
    flag.textContent = label === key ? reason : label;
  }

  /** The action buttons: Edit on a question; Copy and Regenerate/Retry on an answer. */
  setActions({ edit = false, copy = false, again = "" } = {}) {
    this.actions.textContent = "";
    if (edit) this.actions.append(actionButton("edit", t("edit"), "edit"));
    if (copy) this.actions.append(actionButton("copy-answer", t("copy_answer"), "copy"));
    if (again === "regenerate") this.actions.append(actionButton("regenerate", t("regenerate"), "again"));
    if (again === "retry") this.actions.append(actionButton("retry", t("retry"), "again"));
  }

  /** Apply one answer event of the native stream (`delta`, `reasoning`, `search_results`,
   * `tool_call`; others are ignored) to this view. */
  applyEvent(type, data) {
    if (type === "delta" && typeof data.text === "string") this.append(data.text);
    else if (type === "reasoning" && typeof data.text === "string") this.appendReasoning(data.text);
    else if (type === "search_results") this.setSources(data.results);
    else if (type === "tool_call") this.addToolCall(data);
  }

  append(text) {
    if (!text) return;
    this.text += text;
    if (this.thinking && !this._thinkingTouched && this.thinking.open && this.reasoningDone !== true) {
      this.reasoningDone = true;
      this._thinkingOpen = false;
      this.thinking.open = false; // the answer began: fold the thinking away
      this._thinkingSummary();
    }
    this.scheduleRender();
  }

  appendReasoning(text, { open = true } = {}) {
    if (!text) return;
    if (!this.thinking) {
      this.thinking = el("details", { class: "thinking", dataTestid: "thinking" });
      // `toggle` events arrive later (queued), also for what the page itself opens or folds:
      // a toggle that leaves the panel other than the page last set it is the reader's.
      this._thinkingOpen = open;
      this.thinking.open = open;
      this.thinkingTitle = el("summary", { class: "thinking-title" });
      this.thinkingBody = el("div", { class: "thinking-body", dataTestid: "thinking-body" });
      this.thinking.append(this.thinkingTitle, this.thinkingBody);
      this.thinking.addEventListener("toggle", () => {
        if (this.thinking.open !== this._thinkingOpen) this._thinkingTouched = true;
      });
      this.node.insertBefore(this.thinking, this.body);
    }
    this.reasoning += text;
    this.thinkingBody.textContent = this.reasoning;
    this._thinkingSummary();
  }

  _thinkingSummary() {
    const live = this.status === "streaming" && !this.text;
    this.thinkingTitle.textContent = live
      ? t("thinking_live")
      : t("thinking_chars", { n: [...this.reasoning].length });
    this.thinking.classList.toggle("is-live", live);
  }

  addToolCall(call) {
    if (!call || typeof call.name !== "string") return;
    const box = el("div", { class: "tool-call", dataTestid: "tool-call" });
    box.append(el("div", { class: "tool-call-name" }, t("tool_call", { name: call.name })));
    let args = typeof call.arguments === "string" ? call.arguments : JSON.stringify(call.arguments);
    try {
      args = JSON.stringify(JSON.parse(args), null, 2);
    } catch {
      /* shown as sent */
    }
    box.append(el("pre", { class: "tool-call-args" }, args || ""));
    this.node.insertBefore(box, this.meta);
  }

  setSources(results) {
    const list = (Array.isArray(results) ? results : []).filter(
      (r) => r && Number.isInteger(Number(r.index)) && typeof r.url === "string",
    );
    this.sources = list;
    this.node.querySelector(".sources")?.remove();
    if (!list.length) return;
    const box = el("div", { class: "sources", dataTestid: "sources" });
    box.append(el("div", { class: "sources-title" }, t("sources")));
    const ol = el("ol");
    for (const r of list) {
      const li = el("li", { value: Number(r.index), dataSource: String(r.index) });
      const label = r.title || r.url;
      if (/^https?:\/\//i.test(r.url.trim())) {
        li.append(el("a", { href: r.url.trim(), rel: "noopener noreferrer", target: "_blank" }, label));
      } else {
        li.textContent = label;
      }
      ol.append(li);
    }
    box.append(ol);
    this.node.insertBefore(box, this.meta);
    if (this.role === "assistant") this.scheduleRender();
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
    patchBlocks(this.body, renderBlocks(this.text, this.sources));
  }

  setStats(data) {
    let stats = this.meta.querySelector('[data-testid="stats"]');
    if (!stats) {
      stats = el("span", { class: "msg-stats", dataTestid: "stats" });
      this.meta.append(stats);
    }
    const parts = [];
    if (typeof data.ttft_ms === "number") parts.push(t("stats.ttft", { v: formatMs(data.ttft_ms) }));
    const u = data.usage;
    if (u && typeof u.total_tokens === "number") {
      parts.push(t("stats.tokens", {
        total: u.total_tokens, prompt: u.prompt_tokens ?? "?", completion: u.completion_tokens ?? "?",
      })); // prettier-ignore
    }
    if (typeof data.total_ms === "number") parts.push(t("stats.total", { v: formatMs(data.total_ms) }));
    if (data.model) parts.push(data.model);
    stats.textContent = parts.join(" · ");
  }

  setNote(text) {
    let note = this.meta.querySelector(".msg-note");
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
    let box = this.node.querySelector(".msg-error");
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
