// The curated model picker: the catalogue from GET /api/models (grouped, retired models left
// out, capabilities as badges), or — from a server without that route — the flat list of
// names in /api/info, with unknown capabilities.

import { t } from "./i18n.js";

export const CAPABILITIES = ["reasoning", "tools", "search", "vision"];

/** Catalogue entries (from /api/models) → picker entries, retired ones left out unless kept
 * (the default, or the saved choice). Each: {id, name, group, caps: Set, reasoning, default}. */
export function curate(models, keep = []) {
  const out = [];
  for (const m of Array.isArray(models) ? models : []) {
    if (!m || typeof m.id !== "string") continue;
    if (m.retired && !m.default && !keep.includes(m.id)) continue;
    const caps = new Set((Array.isArray(m.capabilities) ? m.capabilities : []).filter((c) =>
      CAPABILITIES.includes(c),
    ));
    out.push({
      id: m.id,
      name: typeof m.name === "string" && m.name ? m.name : m.id,
      group: typeof m.group === "string" && m.group ? m.group : m.family || "",
      caps,
      known: true,
      // "hybrid" (switchable) or "always", when the server says; else unknown.
      reasoning: typeof m.reasoning === "string" ? m.reasoning : "",
      isDefault: Boolean(m.default),
    });
  }
  return out;
}

/** Plain names (the /api/info fallback) → picker entries with unknown capabilities. */
export function fromNames(names, defaultName) {
  const list = names.filter((n) => typeof n === "string" && n);
  if (defaultName && !list.includes(defaultName)) list.unshift(defaultName);
  return list.map((id) => ({
    id, name: id, group: "", caps: new Set(), known: false, reasoning: "", isDefault: id === defaultName,
  }));
}

/** Entries grouped in first-seen order: [[group, [entries…]], …]. */
export function grouped(entries) {
  const groups = new Map();
  for (const e of entries) {
    const key = e.group || "";
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(e);
  }
  return [...groups.entries()];
}

/** The option text of an entry: its name and its capabilities, e.g. "ERNIE X1.1 · 思考 · 工具". */
export function optionLabel(entry) {
  const caps = CAPABILITIES.filter((c) => entry.caps.has(c)).map((c) => t(`cap.${c}`));
  return [entry.name, ...caps].join(" · ");
}

/** The label of a picker group: the server's coarse groups (`current`, `light`, `legacy`) in
 * the page's language, any other group name as it is. */
export function groupLabel(group) {
  const key = `models.group.${group}`;
  const label = t(key);
  return label === key ? group : label;
}

/** Fill the <select> with grouped options; returns the selected id. */
export function fillSelect(select, entries, wanted) {
  select.textContent = "";
  for (const [group, items] of grouped(entries)) {
    const parent = group ? document.createElement("optgroup") : select;
    if (group) {
      parent.label = groupLabel(group);
      select.append(parent);
    }
    for (const e of items) {
      const option = document.createElement("option");
      option.value = e.id;
      option.textContent = optionLabel(e);
      parent.append(option);
    }
  }
  const ids = entries.map((e) => e.id);
  const fallback = entries.find((e) => e.isDefault)?.id || ids[0] || "";
  select.value = ids.includes(wanted) ? wanted : fallback;
  return select.value;
}

/** Render the capability badges of `entry` into `box`. */
export function renderBadges(box, entry) {
  box.textContent = "";
  if (!entry) return;
  for (const c of CAPABILITIES) {
    if (!entry.caps.has(c)) continue;
    const badge = document.createElement("span");
    badge.className = `badge badge-${c}`;
    badge.dataset.cap = c;
    badge.textContent = t(`cap.${c}`);
    box.append(badge);
  }
}
