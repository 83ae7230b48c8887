// The conversation list: search (by title, as you type), grouping by the day of the last
// activity (今天 / 昨天 / 过去 7 天 / 更早), and each entry's rename and delete controls. The
// rendering is a pure function of the conversations and the state passed in; the App owns the
// requests.

import { t } from "./i18n.js";

const DAY_MS = 86_400_000;

/** The group of a timestamp relative to `now`: "today", "yesterday", "week" or "earlier". */
export function dateGroup(iso, now = new Date()) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "earlier";
  const midnight = new Date(now.getFullYear(), now.getMonth(), now.getDate()).getTime();
  const at = d.getTime();
  if (at >= midnight) return "today";
  if (at >= midnight - DAY_MS) return "yesterday";
  if (at >= midnight - 6 * DAY_MS) return "week";
  return "earlier";
}

export const GROUPS = ["today", "yesterday", "week", "earlier"];

/** Conversations whose title contains `query` (case-insensitive, spaces collapsed). */
export function matching(conversations, query) {
  const q = query.trim().toLowerCase().split(/\s+/).join(" ");
  if (!q) return conversations;
  return conversations.filter((c) => (c.title || "").toLowerCase().includes(q));
}

function when(iso, group) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  if (group === "today" || group === "yesterday") {
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  return d.toLocaleDateString([], { month: "short", day: "numeric" });
}

function button(cls, label, testid, glyph) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = `btn btn-icon ${cls}`;
  b.dataset.testid = testid;
  b.title = label;
  b.setAttribute("aria-label", label);
  b.textContent = glyph;
  return b;
}

/**
 * Render `conversations` into the <ul> `list`.
 * state: {currentId, query, streaming: Set of ids, renaming: id or null, confirming: id or null}
 */
export function renderList(list, conversations, state, now = new Date()) {
  list.textContent = "";
  const shown = matching(conversations, state.query || "");
  if (!shown.length) {
    const li = document.createElement("li");
    li.className = "list-empty";
    li.textContent = conversations.length ? t("no_matches") : t("no_conversations");
    list.append(li);
    return;
  }
  const byGroup = new Map(GROUPS.map((g) => [g, []]));
  for (const c of shown) byGroup.get(dateGroup(c.updated_at || c.created_at, now)).push(c);
  for (const group of GROUPS) {
    const items = byGroup.get(group);
    if (!items.length) continue;
    const head = document.createElement("li");
    head.className = "conv-group";
    head.dataset.testid = "conversation-group";
    head.dataset.group = group;
    head.textContent = t(`group.${group}`);
    list.append(head);
    for (const c of items) list.append(entry(c, group, state));
  }
}

function entry(c, group, state) {
  const li = document.createElement("li");
  li.className = "conv-item";
  const title = c.title || t("new_chat");
  if (state.renaming === c.id) {
    const input = document.createElement("input");
    input.className = "conv-rename";
    input.dataset.testid = "rename-input";
    input.dataset.conversationId = c.id;
    input.value = c.title || "";
    input.maxLength = 200;
    input.setAttribute("aria-label", t("rename"));
    li.append(input);
    return li;
  }
  const a = document.createElement("a");
  a.href = `#c=${c.id}`;
  a.className = "conv";
  a.dataset.testid = "conversation";
  a.dataset.conversationId = c.id;
  if (c.id === state.currentId) a.setAttribute("aria-current", "page");
  const streaming = state.streaming?.has(c.id);
  if (streaming) a.classList.add("is-streaming");
  const span = document.createElement("span");
  span.className = "conv-title";
  span.textContent = title;
  span.title = title;
  const meta = document.createElement("span");
  meta.className = "conv-meta";
  const count = streaming
    ? t("answering")
    : typeof c.message_count === "number"
      ? t("count", { n: c.message_count })
      : "";
  meta.textContent = [when(c.updated_at || c.created_at, group), count].filter(Boolean).join(" · ");
  a.append(span, meta);
  const actions = document.createElement("span");
  actions.className = "conv-actions";
  const rename = button("conv-rename-btn", t("rename"), "rename", "✎");
  rename.dataset.conversationId = c.id;
  const del = button("conv-delete-btn", t("delete"), "delete", "×");
  del.dataset.conversationId = c.id;
  if (state.confirming === c.id) {
    del.classList.add("is-confirming");
    del.textContent = t("delete_confirm");
    del.title = t("delete_confirm");
    del.setAttribute("aria-label", t("delete_confirm"));
  }
  actions.append(rename, del);
  li.append(a, actions);
  return li;
}
