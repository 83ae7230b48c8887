// Markdown for streamed chat answers: markdown-it (vendored, pinned: see vendor/VERSIONS.tsv)
// configured safe, plus what a growing answer needs.
//
// Safety: raw HTML is off (markdown-it escapes it as text), images are off, and a link is kept
// only for an http(s) URL (markdown-it's validateLink, replaced), rendered with
// rel="noopener noreferrer" target="_blank". Code is escaped by markdown-it or by highlight.js.
// No text of the source can open a tag or an attribute.
//
// Streaming: rendering is a pure function of the text so far. An unterminated code fence holds
// everything after it (CommonMark's rule), marked `data-open`, so a growing answer never
// flashes raw backticks. `renderBlocks` returns one HTML string per top-level block, which lets
// the caller patch only the blocks that changed (usually the last).
//
// Citations: Baidu's web-search answers cite sources as ^[n]^, several at once as ^[2][3]^.
// Each number renders as a superscript: a link to source n when the answer's sources
// (env.sources: [{index, url, title}]) name it with an http(s) URL, else the plain marker.

import MarkdownIt from "./vendor/markdown-it.min.mjs";
import { highlight } from "./code.js";

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** Escape text for use in HTML content and in double-quoted attribute values. */
export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

const SAFE_URL = /^https?:\/\/[^\s]+$/i;
const CLOSING_FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*$/;
const CITATION = /^\^((?:\[\d{1,3}\]){1,8})\^/;

const md = new MarkdownIt({ html: false, linkify: true, breaks: true, typographer: false });
md.disable(["image"]);
md.linkify.set({ fuzzyLink: false, fuzzyEmail: false, fuzzyIP: false });
md.validateLink = (url) => SAFE_URL.test(url.trim());

md.renderer.rules.link_open = (tokens, idx, options, env, self) => {
  tokens[idx].attrSet("rel", "noopener noreferrer");
  tokens[idx].attrSet("target", "_blank");
  return self.renderToken(tokens, idx, options);
};

// Tables scroll inside their own box, and column alignment is a class (the page's CSP allows
// no inline style attributes).
md.renderer.rules.table_open = () => '<div class="table-wrap"><table>\n';
md.renderer.rules.table_close = () => "</table></div>\n";
for (const cell of ["th_open", "td_open"]) {
  md.renderer.rules[cell] = (tokens, idx, options, env, self) => {
    const token = tokens[idx];
    const style = token.attrGet("style") || "";
    const m = /text-align:(left|right|center)/.exec(style);
    token.attrs = m ? [["class", `align-${m[1]}`]] : null;
    return self.renderToken(tokens, idx, options);
  };
}

/** The language tag of a fence's info string: letters, digits and + # . - only. */
function fenceLanguage(info) {
  return (info || "").trim().split(/\s+/)[0].replace(/[^\w+#.-]/g, "").slice(0, 32);
}

md.renderer.rules.fence = (tokens, idx, options, env) => {
  const token = tokens[idx];
  const lang = fenceLanguage(token.info);
  let code = token.content;
  const open = isOpenFence(token, env.lines);
  if (code.endsWith("\n")) code = code.slice(0, -1);
  const lit = lang ? highlight(code, lang.toLowerCase()) : null;
  const cls = lang ? ` class="hljs language-${lang}"` : ' class="hljs"';
  const langAttr = lang ? ` data-lang="${lang}"` : "";
  return `<pre${open ? " data-open" : ""}${langAttr}><code${cls}>${lit ?? escapeHtml(code)}</code></pre>`;
};

md.renderer.rules.code_block = (tokens, idx) => {
  const code = tokens[idx].content.replace(/\n$/, "");
  return `<pre><code class="hljs">${escapeHtml(code)}</code></pre>`;
};

/** Whether a fence token ran to the end of the text without its closing line. */
function isOpenFence(token, lines) {
  if (!token.map || !lines) return false;
  const [start, end] = token.map;
  if (end - 1 <= start) return true;
  const m = CLOSING_FENCE.exec(lines[end - 1] ?? "");
  const markup = token.markup || "```";
  return !(m && m[1][0] === markup[0] && m[1].length >= markup.length);
}

md.inline.ruler.before("emphasis", "citation", (state, silent) => {
  if (state.src.charCodeAt(state.pos) !== 0x5e /* ^ */) return false;
  const m = CITATION.exec(state.src.slice(state.pos, state.pos + 42));
  if (!m) return false;
  if (!silent) {
    for (const [, n] of m[1].matchAll(/\[(\d+)\]/g)) {
      const token = state.push("citation", "sup", 0);
      token.meta = { n: Number(n) };
    }
  }
  state.pos += m[0].length;
  return true;
});

md.renderer.rules.citation = (tokens, idx, options, env) => {
  const n = tokens[idx].meta.n;
  const source = (env.sources || []).find((s) => Number(s?.index) === n);
  const url = typeof source?.url === "string" ? source.url.trim() : "";
  if (!SAFE_URL.test(url)) return `<sup class="cite">[${n}]</sup>`;
  const title = source.title ? ` title="${escapeHtml(source.title)}"` : "";
  return (
    `<sup class="cite"><a href="${escapeHtml(url)}"${title} data-cite="${n}" ` +
    `rel="noopener noreferrer" target="_blank">${n}</a></sup>`
  );
};

function environment(text, sources) {
  return { lines: text.split("\n"), sources: Array.isArray(sources) ? sources : [] };
}

function clean(source) {
  return String(source ?? "").replace(/\u0000/g, "").replace(/\r\n?/g, "\n");
}

/** Render Markdown to an HTML string (safe: see the module comment). */
export function renderMarkdown(source, sources) {
  return renderBlocks(source, sources).join("");
}

/** Render Markdown to an array of HTML strings, one per top-level block. */
export function renderBlocks(source, sources) {
  const text = clean(source);
  const env = environment(text, sources);
  const tokens = md.parse(text, env);
  const blocks = [];
  let group = [];
  let depth = 0;
  for (const token of tokens) {
    group.push(token);
    depth += token.nesting;
    if (depth === 0) {
      blocks.push(md.renderer.render(group, md.options, env).replace(/\n$/, ""));
      group = [];
    }
  }
  if (group.length) blocks.push(md.renderer.render(group, md.options, env));
  return blocks;
}
