// The caller's own usage under the conversation list: GET /api/usage (only this key's),
// shown as one short line per figure — this month's tokens and spend, and each budget of the
// key with what is used of it. Refreshed at boot and after each answer ends; a server
// without the route (or a failed request) simply shows nothing.

import { t } from "./i18n.js";

const NUMBER = new Intl.NumberFormat("en-US");

/** The lines describing a /api/usage body (plain strings, no markup). */
export function usageLines(body) {
  if (!body || typeof body !== "object" || !body.totals) return [];
  const totals = body.totals;
  const lines = [
    t("usage.month", { tokens: NUMBER.format(totals.total_tokens || 0), cny: totals.cost_cny || "0.00" }),
  ];
  for (const budget of body.budgets || []) {
    const period = budget.period === "day" ? t("usage.day") : t("usage.monthly");
    if (budget.tokens_limit) {
      lines.push(t("usage.budget", {
        period,
        used: NUMBER.format(budget.tokens_spent || 0),
        limit: `${NUMBER.format(budget.tokens_limit)} tokens`,
      }));
    }
    if (budget.cny_limit) {
      lines.push(t("usage.budget", { period, used: `¥${budget.cny_spent}`, limit: `¥${budget.cny_limit}` }));
    }
  }
  return lines;
}

/** Show `lines` in `node` (hidden when there are none). */
export function renderUsage(node, lines) {
  node.replaceChildren(...lines.map((line) => {
    const span = document.createElement("span");
    span.textContent = line;
    return span;
  }));
  node.hidden = lines.length === 0;
}
