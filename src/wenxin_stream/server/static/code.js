// Syntax highlighting of code blocks: highlight.js core (vendored, pinned: see
// vendor/VERSIONS.tsv and scripts/vendor-static) with a few common grammars. A block is
// highlighted only when its fence names a language we have (no guessing: detection is slow and
// unreliable on a half-written block); the output is highlight.js's, which escapes the code and
// adds only <span class="hljs-…"> elements.

import hljs from "./vendor/hljs-core.min.js";
import bash from "./vendor/hljs-bash.min.js";
import c from "./vendor/hljs-c.min.js";
import cpp from "./vendor/hljs-cpp.min.js";
import css from "./vendor/hljs-css.min.js";
import diff from "./vendor/hljs-diff.min.js";
import go from "./vendor/hljs-go.min.js";
import java from "./vendor/hljs-java.min.js";
import javascript from "./vendor/hljs-javascript.min.js";
import json from "./vendor/hljs-json.min.js";
import python from "./vendor/hljs-python.min.js";
import rust from "./vendor/hljs-rust.min.js";
import shell from "./vendor/hljs-shell.min.js";
import sql from "./vendor/hljs-sql.min.js";
import typescript from "./vendor/hljs-typescript.min.js";
import xml from "./vendor/hljs-xml.min.js";
import yaml from "./vendor/hljs-yaml.min.js";

const GRAMMARS = { bash, c, cpp, css, diff, go, java, javascript, json, python, rust, shell, sql, typescript, xml, yaml };
for (const [name, grammar] of Object.entries(GRAMMARS)) hljs.registerLanguage(name, grammar);

/** The grammar's display name for a fence's language tag (aliases such as py, sh, js, html
 * included), or "" when we have none. */
export function languageName(tag) {
  const grammar = tag ? hljs.getLanguage(tag) : null;
  return grammar ? grammar.name || tag : "";
}

/** Highlighted HTML for `code` in language `tag`, or null when the language is unknown. */
export function highlight(code, tag) {
  if (!tag || !hljs.getLanguage(tag)) return null;
  try {
    return hljs.highlight(code, { language: tag, ignoreIllegals: true }).value;
  } catch {
    return null;
  }
}
