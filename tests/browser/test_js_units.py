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
            if file.is_file() and file.resolve().parent in (STATIC_DIR, STATIC_DIR / "vendor"):
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
            window.i18n = await import('/static/i18n.js');
            window.models = await import('/static/models.js');
            window.sidebar = await import('/static/sidebar.js');
            window.message = await import('/static/message.js');
            window.composer = await import('/static/composer.js');
            window.usage = await import('/static/usage.js');
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
    "SUP", "SPAN", "S",
}  # fmt: skip
ALLOWED_ATTRS = {
    "href", "rel", "target", "title", "class", "start", "data-open", "data-lang", "data-cite",
}  # fmt: skip

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
    # Entities in the source are Markdown's to decode (CommonMark), but only into text.
    assert "&lt;script&gt; already escaped" in results[15]["html"]


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
    assert "<ol>\n<li>第一</li>\n<li>第二</li>\n</ol>" in html
    assert "<ul>\n<li>x\n<ul>\n<li>nested</li>\n</ul>\n</li>\n</ul>" in html
    assert (
        '<a href="https://example.com/a_(b)" rel="noopener noreferrer" target="_blank">链接</a>'
        in html
    )
    assert '<a href="https://example.org" rel="noopener noreferrer" target="_blank">' in html
    # Highlighted by highlight.js, the language kept for the label.
    assert (
        '<pre data-lang="python"><code class="hljs language-python">'
        '<span class="hljs-built_in">print</span>(<span class="hljs-string">&#x27;&lt;hi&gt;&#x27;'
        "</span>)</code></pre>" in html
    )
    # Alignment is a class: the page's CSP allows no style attributes.
    assert '<th class="align-left">a</th>\n<th class="align-right">b</th>' in html
    assert "style=" not in html


def test_markdown_unterminated_fence_while_streaming(js: Any) -> None:
    html = js.evaluate(
        "(src) => md.renderMarkdown(src)", "前言\n\n```js\nconst a = '<b>';\nif (a) {"
    )
    assert html == (
        '<p>前言</p><pre data-open data-lang="js"><code class="hljs language-js">'
        '<span class="hljs-keyword">const</span> a = <span class="hljs-string">&#x27;&lt;b&gt;'
        '&#x27;</span>;\n<span class="hljs-keyword">if</span> (a) {</code></pre>'
    )
    closed = js.evaluate("(src) => md.renderMarkdown(src)", "```js\nx\n```\n**after**")
    assert closed == (
        '<pre data-lang="js"><code class="hljs language-js">x</code></pre>'
        "<p><strong>after</strong></p>"
    )
    # A fence still being written, a language nobody knows, and a tilde fence.
    assert js.evaluate("(src) => md.renderMarkdown(src)", "```") == (
        '<pre data-open><code class="hljs"></code></pre>'
    )
    assert js.evaluate("(src) => md.renderMarkdown(src)", "~~~~zz\n<x>\n~~~~") == (
        '<pre data-lang="zz"><code class="hljs language-zz">&lt;x&gt;</code></pre>'
    )


def test_citations_link_to_their_sources(js: Any) -> None:
    sources = [
        {"index": 1, "url": "https://a.example/one", "title": 'One "quoted"'},
        {"index": 2, "url": "javascript:alert(1)", "title": "bad"},
    ]
    html = js.evaluate(
        "([src, s]) => md.renderMarkdown(src, s)", ["据报道^[1]^，另见^[2]^和^[3]^。", sources]
    )
    assert html == (
        '<p>据报道<sup class="cite"><a href="https://a.example/one" title="One &quot;quoted&quot;"'
        ' data-cite="1" rel="noopener noreferrer" target="_blank">1</a></sup>，另见'
        '<sup class="cite">[2]</sup>和<sup class="cite">[3]</sup>。</p>'
    )
    # Several sources in one marker (as ERNIE writes them): one superscript each.
    assert js.evaluate("([src, s]) => md.renderMarkdown(src, s)", ["见^[3][1]^。", sources]) == (
        '<p>见<sup class="cite">[3]</sup><sup class="cite"><a href="https://a.example/one" '
        'title="One &quot;quoted&quot;" data-cite="1" rel="noopener noreferrer" '
        'target="_blank">1</a></sup>。</p>'
    )
    # Before the sources arrive, the marker is a plain superscript (never raw ^[1]^).
    assert js.evaluate("(src) => md.renderMarkdown(src)", "x^[1]^") == (
        '<p>x<sup class="cite">[1]</sup></p>'
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


# ---- the page's other modules -------------------------------------------------------------


def test_every_string_exists_in_both_languages_and_the_locale_picks_one(js: Any) -> None:
    result = js.evaluate(
        """() => {
            const zh = Object.keys(i18n.STRINGS.zh).sort();
            const en = Object.keys(i18n.STRINGS.en).sort();
            const doubled = Object.entries(i18n.STRINGS.zh)
                .filter(([k, v]) => v.includes(' · ') && /[A-Za-z]{3}/.test(v)
                        && i18n.STRINGS.en[k] && v.includes(i18n.STRINGS.en[k]));
            return {
                same: JSON.stringify(zh) === JSON.stringify(en),
                doubled,
                picks: [['zh-CN'], ['zh-TW', 'en'], ['en-US', 'zh'], ['fr', 'de'], [], ['ZH']]
                    .map((tags) => i18n.localeLanguage(tags)),
            };
        }"""
    )
    assert result["same"]
    assert result["doubled"] == []  # no "中文 · English" labels
    assert result["picks"] == ["zh", "zh", "en", "en", "en", "zh"]


def test_sidebar_groups_by_day_and_filters_by_title(js: Any) -> None:
    result = js.evaluate(
        """() => {
            const now = new Date(2026, 5, 15, 10, 0, 0);
            const at = (d, h = 9) => new Date(2026, 5, d, h, 0, 0).toISOString();
            const groups = [at(15, 0), at(14, 23), at(14, 0), at(9, 1), at(8, 23), at(1), 'bad']
                .map((iso) => sidebar.dateGroup(iso, now));
            const convs = [
                {id: 'a', title: 'Python 代码示例', updated_at: at(15), message_count: 2},
                {id: 'b', title: '长城的历史', updated_at: at(14), message_count: 4},
                {id: 'c', title: '', updated_at: at(1), message_count: 0},
            ];
            const ul = document.createElement('ul');
            const state = {currentId: 'b', query: '', streaming: new Set(['a'])};
            sidebar.renderList(ul, convs, state, now);
            const rows = [...ul.children].map((li) => li.dataset.group
                || li.querySelector('.conv-title').textContent + '|'
                   + li.querySelector('.conv-meta').textContent.split(' · ').pop());
            const hits = sidebar.matching(convs, '  python  ').map((c) => c.id);
            const ul2 = document.createElement('ul');
            sidebar.renderList(ul2, convs, {query: 'zzz'}, now);
            return {groups, rows, hits, none: ul2.textContent};
        }"""
    )
    assert result["groups"] == ["today", "yesterday", "yesterday", "week", "earlier", "earlier",
                                "earlier"]  # fmt: skip
    # "0 条" never shows for an answer that is streaming: it says so instead.
    assert result["rows"] == ["today", "Python 代码示例|回答中…", "yesterday", "长城的历史|4 条",
                              "earlier", "新对话|0 条"]  # fmt: skip
    assert result["hits"] == ["a"]
    assert result["none"] == "没有匹配的会话"


CATALOGUE = [
    {"id": "ernie-x1.1", "name": "ERNIE X1.1", "family": "x1", "group": "ERNIE X1",
     "capabilities": ["reasoning", "tools", "search"], "default": False, "retired": False},
    {"id": "ernie-4.5-vl", "name": "ERNIE 4.5 VL", "family": "4.5", "group": "ERNIE 4.5",
     "capabilities": ["vision"], "default": False, "retired": False},
    {"id": "ernie-lite-8k", "name": "ERNIE Lite", "family": "lite", "group": "Lite",
     "capabilities": [], "default": True, "retired": False},
    {"id": "ernie-bot", "name": "ERNIE Bot", "family": "old", "group": "Legacy",
     "capabilities": [], "default": False, "retired": True},
]  # fmt: skip


def test_model_picker_is_grouped_curated_and_badged(js: Any) -> None:
    result = js.evaluate(
        """(catalogue) => {
            const entries = models.curate(catalogue);
            const sel = document.createElement('select');
            const chosen = models.fillSelect(sel, entries, 'nope');
            const groups = [...sel.querySelectorAll('optgroup')].map((g) =>
                [g.label, [...g.children].map((o) => o.textContent)]);
            const box = document.createElement('span');
            models.renderBadges(box, entries[0]);
            const kept = models.curate(catalogue, ['ernie-bot']).map((e) => e.id);
            const flat = models.fromNames(['a', 'b'], 'c').map((e) => [e.id, e.known]);
            const badges = [...box.children].map((b) => b.dataset.cap);
            return {chosen, groups, badges, kept, flat};
        }""",
        CATALOGUE,
    )
    assert result["chosen"] == "ernie-lite-8k"  # the default when the saved one is unknown
    assert result["groups"] == [
        ["ERNIE X1", ["ERNIE X1.1 · 思考 · 工具 · 搜索"]],
        ["ERNIE 4.5", ["ERNIE 4.5 VL · 看图"]],
        ["Lite", ["ERNIE Lite"]],
    ]  # the retired model is left out
    assert result["badges"] == ["reasoning", "tools", "search"]
    assert "ernie-bot" in result["kept"]  # … unless it is the saved choice
    assert result["flat"] == [["c", False], ["a", False], ["b", False]]


# A recorded native stream of a reasoning model with web search (the event vocabulary of
# events-contract.md): thinking first, then sources, then the answer citing them.
RECORDED = (
    'event: start\ndata: {"stream_id":"s_9","message_id":"m_1","model":"ernie-x1.1"}\n\n'
    'event: reasoning\ndata: {"text":"【模拟思考】先看"}\n\n'
    'event: reasoning\ndata: {"text":"来源。"}\n\n'
    'event: search_results\ndata: {"results":[{"index":1,"url":"https://a.example/1",'
    '"title":"来源一"},{"index":2,"url":"https://b.example/2","title":"来源二"}]}\n\n'
    'event: delta\ndata: {"text":"长城很长^[1]^，"}\n\n'
    'event: delta\ndata: {"text":"也很老^[2]^。"}\n\n'
    'event: tool_call\ndata: {"id":"c1","name":"get_weather",'
    '"arguments":"{\\"city\\":\\"北京\\"}"}\n\n'
    'event: end\ndata: {"end_reason":"completed","reasoning_chars":11}\n\n'
)


def test_recorded_stream_renders_thinking_sources_and_tool_calls(js: Any) -> None:
    result = js.evaluate(
        """(text) => {
            const view = new message.MessageView('assistant', {status: 'streaming'});
            document.body.append(view.node);
            const seen = [];
            const parser = new sse.SSEParser();
            for (const ev of parser.feed(text)) {
                view.applyEvent(ev.type, JSON.parse(ev.data));
                if (view.thinking) {
                    const title = view.thinking.querySelector('summary').textContent;
                    seen.push(`${ev.type} ${view.thinking.open ? 'open' : 'folded'} ${title}`);
                }
            }
            view.renderNow();
            view.setStatus('complete');
            const order = [...view.node.children].map((n) => n.className.split(' ')[0]);
            const cites = [...view.node.querySelectorAll('sup.cite a')].map((a) =>
                [a.textContent, a.getAttribute('href'), a.title]);
            return {
                seen, order, cites,
                thinking: view.node.querySelector('[data-testid="thinking-body"]').textContent,
                summary: view.thinking.querySelector('summary').textContent,
                sources: [...view.node.querySelectorAll('[data-testid="sources"] li')].map((li) =>
                    [li.value, li.textContent, li.querySelector('a').href]),
                tool: view.node.querySelector('[data-testid="tool-call"]').textContent,
                text: view.body.textContent,
            };
        }""",
        RECORDED,
    )
    # The thinking panel streams open, and folds away when the answer's first words arrive.
    assert result["seen"] == [
        "reasoning open 思考中…",
        "reasoning open 思考中…",
        "search_results open 思考中…",
        "delta folded 思考过程（11 字）",
        "delta folded 思考过程（11 字）",
        "tool_call folded 思考过程（11 字）",
        "end folded 思考过程（11 字）",
    ]
    assert result["thinking"] == "【模拟思考】先看来源。"
    assert result["summary"] == "思考过程（11 字）"
    assert result["order"][:3] == ["msg-who", "thinking", "msg-body"]
    assert result["cites"] == [
        ["1", "https://a.example/1", "来源一"],
        ["2", "https://b.example/2", "来源二"],
    ]
    assert result["text"] == "长城很长1，也很老2。"
    assert result["sources"] == [
        [1, "来源一", "https://a.example/1"],
        [2, "来源二", "https://b.example/2"],
    ]
    assert "get_weather" in result["tool"]
    assert '"city": "北京"' in result["tool"]


def test_image_attachment_is_size_checked(js: Any) -> None:
    result = js.evaluate(
        """() => {
            const png = {type: 'image/png'};
            const big = new File([new Uint8Array(11 * 1024 * 1024)], 'big.png', png);
            const ok = new File([new Uint8Array(10)], 'ok.png', {type: 'image/png'});
            const txt = new File(['x'], 'a.txt', {type: 'text/plain'});
            return [big, ok, txt].map((file) => composer.imageProblem(file));
        }"""
    )
    assert result == ["图片太大：11.0 MB，最大 10.0 MB", "", "只能添加图片文件"]


# ---- usage line ----------------------------------------------------------------------------


def test_usage_lines_show_the_month_and_each_budget_in_both_languages(js: Any) -> None:
    body = {
        "totals": {"total_tokens": 12345, "cost_cny": "0.0123"},
        "budgets": [
            {"period": "day", "tokens_limit": 100000, "tokens_spent": 2500,
             "cny_limit": "1.50", "cny_spent": "0.0123"},
            {"period": "month", "tokens_limit": None, "tokens_spent": 12345,
             "cny_limit": "20.00", "cny_spent": "0.0123"},
        ],
    }  # fmt: skip
    lines = js.evaluate(
        """(body) => { window.i18n.setLanguage('en'); return window.usage.usageLines(body); }""",
        body,
    )
    assert lines == [
        "This month: 12,345 tokens · ¥0.0123",
        "Daily budget: 2,500 of 100,000 tokens used",
        "Daily budget: ¥0.0123 of ¥1.50 used",
        "Monthly budget: ¥0.0123 of ¥20.00 used",
    ]
    zh = js.evaluate(
        """(body) => { window.i18n.setLanguage('zh'); return window.usage.usageLines(body); }""",
        body,
    )
    assert zh[0] == "本月：12,345 tokens · ¥0.0123"
    assert zh[1] == "今日预算：已用 2,500 / 100,000 tokens"
    assert js.evaluate("window.usage.usageLines(null)") == []
    hidden = js.evaluate(
        """() => { const p = document.createElement('p');
                   window.usage.renderUsage(p, ['a', 'b']);
                   const shown = [p.hidden, p.children.length, p.textContent];
                   window.usage.renderUsage(p, []);
                   return [...shown, p.hidden]; }"""
    )
    assert hidden == [False, 2, "ab", True]
