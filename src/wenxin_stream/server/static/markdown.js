// A small, safe Markdown renderer for streamed chat answers.
//
// Safety model: the WHOLE source is HTML-escaped first (& < > " '), and only then are the
// Markdown constructs turned into tags. Every tag this module emits is one it wrote itself;
// no text from the source can open a tag or an attribute. Links are emitted only for http(s)
// URLs, with rel="noopener noreferrer" and target="_blank".
//
// Streaming: the renderer is a pure function of the text so far. An unterminated code fence
// renders as a code block holding everything after the fence (marked `data-open`), so a
// growing answer never flashes raw backticks. `renderBlocks` returns one HTML string per
// top-level block, which lets the caller patch only the blocks that changed.

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** Escape text for use in HTML content and in double-quoted attribute values. */
export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

// Private-use sentinels around placeholder numbers. They are removed from the source before
// anything else, so no input can forge a placeholder.
const PH_OPEN = "\uE000";
const PH_CLOSE = "\uE001";
const PH_RE = /\uE000(\d+)\uE001/g;

const FENCE_OPEN = /^ {0,3}(`{3,}|~{3,})[ \t]*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$/;
const HR = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}&gt; ?(.*)$/;
const LIST_ITEM = /^([ \t]*)([-*+]|\d{1,9}[.)])([ \t]+(.*))$/;
const TABLE_SEP = /^[ \t]*\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;
const BLANK = /^[ \t]*$/;

/** Render Markdown to an HTML string (safe: see the module comment). */
export function renderMarkdown(source) {
  return renderBlocks(source).join("");
}

/** Render Markdown to an array of HTML strings, one per top-level block. */
export function renderBlocks(source) {
  const text = String(source ?? "")
    .replace(/[\u0000\uE000\uE001]/g, "")
    .replace(/\r\n?/g, "\n");
  const lines = escapeHtml(text).split("\n");
  return parseBlocks(lines, 0);
}

function indentWidth(ws) {
  let n = 0;
  for (const c of ws) n += c === "\t" ? 4 - (n % 4) : 1;
  return n;
}

function stripIndent(line, width) {
  let i = 0;
  let n = 0;
  while (i < line.length && n < width && (line[i] === " " || line[i] === "\t")) {
    n += line[i] === "\t" ? 4 - (n % 4) : 1;
    i += 1;
  }
  return line.slice(i);
}

function startsBlock(line) {
  return (
    FENCE_OPEN.test(line) ||
    HEADING.test(line) ||
    HR.test(line) ||
    QUOTE.test(line) ||
    LIST_ITEM.test(line)
  );
}

function parseBlocks(lines, depth) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (BLANK.test(line)) {
      i += 1;
      continue;
    }

    let m = FENCE_OPEN.exec(line);
    if (m) {
      const fence = m[1];
      const lang = (m[2] || "").replace(/[^\w+#.-]/g, "").slice(0, 32);
      const body = [];
      let closed = false;
      i += 1;
      while (i < lines.length) {
        const close = /^ {0,3}(`{3,}|~{3,})[ \t]*$/.exec(lines[i]);
        if (close && close[1][0] === fence[0] && close[1].length >= fence.length) {
          closed = true;
          i += 1;
          break;
        }
        body.push(lines[i]);
        i += 1;
      }
      const langAttr = lang ? ` class="language-${lang}" data-lang="${lang}"` : "";
      const openAttr = closed ? "" : " data-open";
      out.push(`<pre${openAttr}><code${langAttr}>${body.join("\n")}</code></pre>`);
      continue;
    }

    m = HEADING.exec(line);
    if (m) {
      const level = m[1].length;
      const content = (m[2] || "").replace(/[ \t]+#+$/, "").replace(/^#+$/, "");
      out.push(`<h${level}>${renderInline(content)}</h${level}>`);
      i += 1;
      continue;
    }

    if (HR.test(line)) {
      out.push("<hr>");
      i += 1;
      continue;
    }

    if (QUOTE.test(line) && depth < 8) {
      const inner = [];
      while (i < lines.length && !BLANK.test(lines[i])) {
        const q = QUOTE.exec(lines[i]);
        inner.push(q ? q[1] : lines[i]);
        i += 1;
      }
      out.push(`<blockquote>${parseBlocks(inner, depth + 1).join("")}</blockquote>`);
      continue;
    }

    if (LIST_ITEM.test(line) && depth < 8) {
      const [html, next] = parseList(lines, i, depth);
      out.push(html);
      i = next;
      continue;
    }

    if (line.includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1])) {
      const [html, next] = parseTable(lines, i);
      if (html) {
        out.push(html);
        i = next;
        continue;
      }
    }

    // Paragraph: consecutive lines up to a blank line or the start of another block.
    const para = [line.trim()];
    i += 1;
    while (i < lines.length && !BLANK.test(lines[i]) && !startsBlock(lines[i])) {
      para.push(lines[i].trim());
      i += 1;
    }
    out.push(`<p>${para.map(renderInline).join("<br>")}</p>`);
  }
  return out;
}

function listKind(marker) {
  return /\d/.test(marker[0]) ? "ol" : "ul";
}

function parseList(lines, start, depth) {
  const first = LIST_ITEM.exec(lines[start]);
  const baseIndent = indentWidth(first[1]);
  const kind = listKind(first[2]);
  const items = [];
  let loose = false;
  let i = start;
  while (i < lines.length) {
    const m = LIST_ITEM.exec(lines[i]);
    if (!m || HR.test(lines[i]) || indentWidth(m[1]) !== baseIndent || listKind(m[2]) !== kind) {
      break;
    }
    // Content indent: where the text after the marker starts (marker + 1 to 4 spaces).
    const gap = m[4] ? m[3].length - m[4].length : 1;
    const contentIndent = baseIndent + m[2].length + Math.min(4, Math.max(1, gap));
    const body = [m[4]];
    i += 1;
    let sawBlank = false;
    while (i < lines.length) {
      const l = lines[i];
      if (BLANK.test(l)) {
        sawBlank = true;
        body.push("");
        i += 1;
        continue;
      }
      const lead = /^[ \t]*/.exec(l)[0];
      const ind = indentWidth(lead);
      if (ind >= contentIndent || (ind > baseIndent && LIST_ITEM.test(l))) {
        body.push(stripIndent(l, Math.min(ind, contentIndent)));
        sawBlank = false;
        i += 1;
        continue;
      }
      if (!sawBlank && !startsBlock(l) && ind >= baseIndent) {
        body.push(l.trim()); // lazy continuation of the item's paragraph
        i += 1;
        continue;
      }
      break;
    }
    while (body.length > 1 && body[body.length - 1] === "") body.pop();
    if (sawBlank && i < lines.length) {
      const n = LIST_ITEM.exec(lines[i]);
      const sameList = n && !HR.test(lines[i]) && indentWidth(n[1]) === baseIndent;
      if (sameList && listKind(n[2]) === kind) loose = true;
    }
    items.push({ body, marker: m[2] });
  }
  const rendered = items.map(({ body }) => {
    const blocks = parseBlocks(body, depth + 1);
    if (!loose) {
      // Tight list: a leading paragraph shows without <p>.
      if (blocks.length && blocks[0].startsWith("<p>")) {
        blocks[0] = blocks[0].slice(3, -4);
      }
    }
    return `<li>${blocks.join("")}</li>`;
  });
  let startAttr = "";
  if (kind === "ol") {
    const n = parseInt(items[0].marker, 10);
    if (n !== 1) startAttr = ` start="${n}"`;
  }
  return [`<${kind}${startAttr}>${rendered.join("")}</${kind}>`, i];
}

function splitRow(line) {
  let s = line.trim();
  if (s.startsWith("|")) s = s.slice(1);
  if (s.endsWith("|")) s = s.slice(0, -1);
  return s.split("|").map((c) => c.trim());
}

function parseTable(lines, start) {
  const head = splitRow(lines[start]);
  const aligns = splitRow(lines[start + 1]).map((c) => {
    const l = c.startsWith(":");
    const r = c.endsWith(":");
    if (l && r) return "center";
    if (r) return "right";
    if (l) return "left";
    return "";
  });
  if (head.length !== aligns.length) return [null, start];
  const cell = (tag, content, col) => {
    const a = aligns[col] ? ` class="align-${aligns[col]}"` : "";
    return `<${tag}${a}>${renderInline(content || "")}</${tag}>`;
  };
  let html = "<div class=\"table-wrap\"><table><thead><tr>";
  html += head.map((c, k) => cell("th", c, k)).join("");
  html += "</tr></thead><tbody>";
  let i = start + 2;
  while (i < lines.length && !BLANK.test(lines[i]) && lines[i].includes("|")) {
    const row = splitRow(lines[i]);
    html += "<tr>";
    for (let k = 0; k < head.length; k += 1) html += cell("td", row[k], k);
    html += "</tr>";
    i += 1;
  }
  html += "</tbody></table></div>";
  return [html, i];
}

// ---- inline -------------------------------------------------------------------------------

// Escaped text holds no raw < > " ' characters, so these patterns only ever see entities.
const CODE_SPAN = /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/g;
const LINK = /\[([^\[\]\n]+)\]\(((?:[^\s()]|\([^\s()]*\))+)(?:[ \t]+&quot;((?:(?!&quot;).)*)&quot;)?\)/g;
const BARE_URL = /\bhttps?:\/\/(?:(?!&(?:lt|gt|quot|#39);)[^\s，。！？、；：（）【】「」《》])+/g;
const SAFE_URL = /^https?:\/\/[^\s]+$/i;

function linkHtml(href, labelHtml, title) {
  const t = title ? ` title="${title}"` : "";
  return `<a href="${href}"${t} rel="noopener noreferrer" target="_blank">${labelHtml}</a>`;
}

/** Render inline Markdown in one line or paragraph of ALREADY ESCAPED text. */
export function renderInline(escaped) {
  const slots = [];
  const hold = (html) => {
    slots.push(html);
    return `${PH_OPEN}${slots.length - 1}${PH_CLOSE}`;
  };

  let s = escaped.replace(CODE_SPAN, (_, ticks, code) => {
    let c = code;
    if (c.length > 2 && c.startsWith(" ") && c.endsWith(" ") && c.trim()) c = c.slice(1, -1);
    return hold(`<code>${c}</code>`);
  });

  s = s.replace(LINK, (whole, label, url, title) => {
    if (!SAFE_URL.test(url)) return whole; // javascript:, data:, relative… stay plain text
    return hold(linkHtml(url, emphasis(label), title));
  });

  s = s.replace(BARE_URL, (url) => {
    const m = /^(.*?)([.,;:!?)]*)$/.exec(url);
    const trail = m[2];
    const href = m[1];
    if (!SAFE_URL.test(href) || href.length < 10) return url;
    return hold(linkHtml(href, href)) + trail;
  });

  s = emphasis(s);
  // Placeholders may nest (a link label holding a code span), so restore until none are left.
  for (let k = 0; k < 4 && s.includes(PH_OPEN); k += 1) {
    s = s.replace(PH_RE, (_, n) => slots[Number(n)] ?? "");
  }
  return s;
}

function emphasis(s) {
  return s
    .replace(/\*\*(?=\S)([\s\S]*?\S)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^\w])__(?=\S)([\s\S]*?\S)__(?!\w)/g, "$1<strong>$2</strong>")
    .replace(/~~(?=\S)([\s\S]*?\S)~~/g, "<del>$1</del>")
    .replace(/(^|[^*])\*(?=[^\s*])([^*<]*?[^\s*<])\*(?!\*)/g, "$1<em>$2</em>")
    .replace(/(^|[^\w])_(?=[^\s_])([^_<]*?[^\s_<])_(?!\w)/g, "$1<em>$2</em>");
}
