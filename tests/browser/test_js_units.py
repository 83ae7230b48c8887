"""Unit tests of the page's own JavaScript (the SSE parser in app.js, markdown.js), run in
headless Chromium.

The modules are served from the source tree on a made-up origin through Playwright's request
interception, so these tests need no server. Importing app.js on a page that is not the chat
page has no side effects (it boots only on ``<body data-app="wenxin">``).
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Iterator
from typing import Any

import pytest
from browser_support import (  # noqa: F401 (fixtures)
    STATIC_DIR,
    browser_fixture,
    context_fixture,
    page_fixture,
    require_browser,
)

require_browser()

ORIGIN = "http://wenxin.test"


@pytest.fixture
def js(page: Any) -> Iterator[Any]:
    """A blank page on ORIGIN with the page's modules importable as window.sse / window.md."""

    def handle(route: Any) -> None:
        path = route.request.url[len(ORIGIN) :].split("?", 1)[0]
        if path == "/blank":
            route.fulfill(status=200, content_type="text/html", body="<!doctype html><body></body>")
            return
        if path.startswith("/static/"):
            file = STATIC_DIR / path.removeprefix("/static/")
            if file.is_file() and file.resolve().parent == STATIC_DIR:
                ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                if file.suffix == ".js":
                    ctype = "text/javascript"
                route.fulfill(status=200, content_type=ctype, body=file.read_bytes())
                return
        route.fulfill(status=404, body="not found")

    page.route(f"{ORIGIN}/**", handle)
    page.goto(f"{ORIGIN}/blank")
    page.evaluate(
        """async () => {
            window.sse = await import('/static/app.js');
            window.md = await import('/static/markdown.js');
        }"""
    )
    assert page.evaluate("document.body.dataset.app") is None
    yield page
    assert page.errors == []


# ---- SSE parser ---------------------------------------------------------------------------

SSE_STREAM = (
    "\ufeffretry: 1000\r\n"
    "\r\n"
    "id: s_1:0\r\n"
    "event: start\r\n"
    'data: {"stream_id":"s_1"}\r\n'
    "\r\n"
    ": ping\n"
    "id: s_1:1\n"
    "event: delta\n"
    'data: {"text":"你好，世界"}\n'
    "\n"
    "id: s_1:2\r"
    "event: delta\r"
    "data: line one\r"
    "data: line two\r"
    "data\r"
    "\r"
    ": ping\r\n"
    "event: nodata\n"
    "\n"
    "id: bad\u0000id\n"
    "data: keeps the old id\n"
    "\n"
    "id: s_1:3\r\n"
    "event: end\r\n"
    'data: {"end_reason":"completed"}\r\n'
    "\r\n"
    "data: unterminated at the end"
)

SSE_EXPECTED = [
    {"type": "start", "data": '{"stream_id":"s_1"}', "id": "s_1:0"},
    {"type": "delta", "data": '{"text":"你好，世界"}', "id": "s_1:1"},
    {"type": "delta", "data": "line one\nline two\n", "id": "s_1:2"},
    {"type": "message", "data": "keeps the old id", "id": "s_1:2"},
    {"type": "end", "data": '{"end_reason":"completed"}', "id": "s_1:3"},
]


def test_sse_parser_whole_and_every_two_way_split(js: Any) -> None:
    result = js.evaluate(
        """(text) => {
            const run = (pieces) => {
                const p = new sse.SSEParser();
                const out = [];
                for (const piece of pieces) out.push(...p.feed(piece));
                out.push(...(p.end(), []));
                return {events: out, retry: p.retry, comments: p.comments, last: p.lastEventId};
            };
            const whole = run([text]);
            const bad = [];
            for (let i = 1; i < text.length; i++) {
                const r = run([text.slice(0, i), text.slice(i)]);
                if (JSON.stringify(r) !== JSON.stringify(whole)) bad.push(i);
            }
            const single = run([...text]);  // one character at a time
            const empties = run(text.split('').flatMap((c) => ['', c, '']));
            return {whole, bad, single, empties};
        }""",
        SSE_STREAM,
    )
    whole = result["whole"]
    assert whole["events"] == SSE_EXPECTED
    assert whole["retry"] == 1000
    assert whole["comments"] == 2
    assert whole["last"] == "s_1:3"
    assert result["bad"] == []
    assert result["single"] == whole
    assert result["empties"] == whole


def test_sse_crlf_split_exactly_between_cr_and_lf(js: Any) -> None:
    events = js.evaluate(
        """() => {
            const p = new sse.SSEParser();
            const out = [];
            const pieces = ['data: a\\r', '\\ndata: b\\r', '\\n\\r', '\\n', 'data: c\\r', '\\r'];
            for (const piece of pieces) out.push(...p.feed(piece));
            return out.map((e) => e.data);
        }"""
    )
    # "\r" + "\n" is one line end; "\r\r" is two (a blank line that dispatches).
    assert events == ["a\nb", "c"]


def test_sse_decoder_keeps_multibyte_characters_split_across_chunks(js: Any) -> None:
    result = js.evaluate(
        """() => {
            const bytes = new TextEncoder().encode(
                'id: s:1\\nevent: delta\\ndata: {"text":"文心一言😀"}\\n\\n');
            const runs = [];
            // every byte on its own, and every two-way split
            const d1 = new sse.SSEDecoder();
            const one = [];
            for (const b of bytes) one.push(...d1.push(new Uint8Array([b])));
            one.push(...d1.end());
            runs.push(one);
            for (let i = 1; i < bytes.length; i++) {
                const d = new sse.SSEDecoder();
                const ev = [...d.push(bytes.slice(0, i)), ...d.push(bytes.slice(i)), ...d.end()];
                runs.push(ev);
            }
            return runs.map((evs) => evs.map((e) => JSON.parse(e.data).text));
        }"""
    )
    assert all(run == ["文心一言😀"] for run in result), result[:3]


def test_read_event_stream_over_a_readable_stream(js: Any) -> None:
    result = js.evaluate(
        """async () => {
            const enc = new TextEncoder();
            const whole = enc.encode(
                'event: delta\\r\\ndata: 你\\r\\n\\r\\n: ping\\r\\n'
                + 'event: end\\r\\ndata: {}\\r\\n\\r\\n');
            const cuts = [0, 3, 13, 14, 15, 16, 30, whole.length];
            const body = new ReadableStream({
                start(controller) {
                    for (let i = 1; i < cuts.length; i++) {
                        controller.enqueue(whole.slice(cuts[i - 1], cuts[i]));
                    }
                    controller.close();
                },
            });
            const seen = [];
            await sse.readEventStream(body, (e) => { seen.push([e.type, e.data]); });
            return seen;
        }"""
    )
    assert result == [["delta", "你"], ["end", "{}"]]


# ---- Markdown ----------------------------------------------------------------------------

ALLOWED_TAGS = {
    "P", "BR", "STRONG", "EM", "DEL", "CODE", "PRE", "H1", "H2", "H3", "H4", "H5", "H6",
    "UL", "OL", "LI", "A", "BLOCKQUOTE", "HR", "DIV", "TABLE", "THEAD", "TBODY", "TR", "TH", "TD",
}  # fmt: skip
ALLOWED_ATTRS = {"href", "rel", "target", "title", "class", "start", "data-open", "data-lang"}

AUDIT_JS = """(sources) => sources.map((src) => {
    const host = document.createElement('div');
    host.innerHTML = md.renderMarkdown(src);
    const bad = [];
    for (const node of host.querySelectorAll('*')) {
        if (!ALLOWED_TAGS.includes(node.tagName)) bad.push('tag ' + node.tagName);
        for (const a of node.attributes) {
            if (!ALLOWED_ATTRS.includes(a.name)) bad.push('attr ' + a.name + ' on ' + node.tagName);
        }
        if (node.tagName === 'A') {
            const href = node.getAttribute('href') || '';
            if (!/^https?:\\/\\//i.test(href)) bad.push('href ' + href);
            if (!(node.getAttribute('rel') || '').includes('noopener')) bad.push('rel');
        }
    }
    return {bad, text: host.textContent, html: host.innerHTML};
})"""

NASTY = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '"><svg onload=alert(1)>',
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](data:text/html,<script>alert(1)</script>)",
    '[x](https://ok.example/"onmouseover=alert(1))',
    '[x](https://ok.example/ "t" onclick=alert(1))',
    "[<img src=x onerror=alert(1)>](https://ok.example)",
    "**<b>bold</b>** _<i>x</i>_ `<code>` ~~<s>~~",
    "```html\n<script>alert(1)</script>\n```",
    "```\n<iframe src=javascript:alert(1)>",
    "# <h1>x</h1>\n> <blockquote onmouseover=alert(1)>\n- <li>",
    "| a | <b>b</b> |\n|---|---|\n| <img src=x> | 2 |",
    "\ue000" + "0" + "\ue001 placeholder forgery",
    "&lt;script&gt; already escaped &amp; stays literal",
    'https://example.com/?q=<script> and http://x.io/"onload=1',
]


def test_markdown_never_emits_unsafe_markup(js: Any) -> None:
    results = js.evaluate(
        f"window.ALLOWED_TAGS = {json.dumps(sorted(ALLOWED_TAGS))};"
        f"window.ALLOWED_ATTRS = {json.dumps(sorted(ALLOWED_ATTRS))};"
    )
    results = js.evaluate(AUDIT_JS, NASTY)
    for src, res in zip(NASTY, results, strict=True):
        assert res["bad"] == [], (src, res)
    # Injected markup shows as text.
    assert "<script>alert(1)</script>" in results[0]["text"]
    assert "<img src=x onerror=alert(1)>" in results[1]["text"]
    assert "[x](javascript:alert(1))" in results[3]["text"]
    assert "<a " not in results[3]["html"]
    assert "&amp;lt;script&amp;gt;" in results[15]["html"]  # entities are not decoded


def test_markdown_constructs(js: Any) -> None:
    html = js.evaluate(
        """(src) => md.renderMarkdown(src)""",
        "# 标题\n\n**粗体** and *斜体* and `a*b*c`\n\n1. 第一\n2. 第二\n\n"
        "- x\n  - nested\n\n[链接](https://example.com/a_(b)) https://example.org.\n\n"
        "```python\nprint('<hi>')\n```\n\n| a | b |\n|:-|-:|\n| 1 | 2 |",
    )
    assert "<h1>标题</h1>" in html
    assert "<strong>粗体</strong>" in html
    assert "<em>斜体</em>" in html
    assert "<code>a*b*c</code>" in html
    assert "<ol><li>第一</li><li>第二</li></ol>" in html
    assert "<ul><li>x<ul><li>nested</li></ul></li></ul>" in html
    assert (
        '<a href="https://example.com/a_(b)" rel="noopener noreferrer" target="_blank">链接</a>'
        in html
    )
    assert '<a href="https://example.org" rel="noopener noreferrer" target="_blank">' in html
    assert (
        '<pre><code class="language-python" data-lang="python">'
        "print(&#39;&lt;hi&gt;&#39;)</code></pre>" in html
    )
    assert '<th class="align-left">a</th><th class="align-right">b</th>' in html


def test_markdown_unterminated_fence_while_streaming(js: Any) -> None:
    html = js.evaluate(
        "(src) => md.renderMarkdown(src)", "前言\n\n```js\nconst a = '<b>';\nif (a) {"
    )
    assert html == (
        '<p>前言</p><pre data-open><code class="language-js" data-lang="js">'
        "const a = &#39;&lt;b&gt;&#39;;\nif (a) {</code></pre>"
    )
    closed = js.evaluate("(src) => md.renderMarkdown(src)", "```js\nx\n```\n**after**")
    assert closed == (
        '<pre><code class="language-js" data-lang="js">x</code></pre><p><strong>after</strong></p>'
    )


def test_markdown_every_prefix_of_a_streamed_answer_is_safe(js: Any) -> None:
    answer = (
        "【离线模拟】这是回答。\n\n**要点**\n\n1. 第一点 `code`\n2. 第二点 [link](https://a.b)\n\n"
        "```sh\necho '<hi>'\n```\n\n> 引用 <img src=x onerror=alert(1)>\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n"
    )
    prefixes = [answer[:i] for i in range(len(answer) + 1)]
    js.evaluate(
        f"window.ALLOWED_TAGS = {json.dumps(sorted(ALLOWED_TAGS))};"
        f"window.ALLOWED_ATTRS = {json.dumps(sorted(ALLOWED_ATTRS))};"
    )
    results = js.evaluate(AUDIT_JS, prefixes)
    assert [r["bad"] for r in results if r["bad"]] == []
    # The blocks of a prefix are the blocks of the whole text except (at most) the last ones,
    # which is what lets the page patch only the tail of a growing answer.
    blocks = js.evaluate("(src) => md.renderBlocks(src)", answer)
    assert len(blocks) >= 6
    assert (
        js.evaluate("(src) => md.renderBlocks(src)", answer[: answer.index("2. 第二点")])[:2]
        == blocks[:2]
    )
