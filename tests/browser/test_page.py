"""The chat page in real headless Chromium against the real server and a paced emulator.

What a person would check: the answer grows word by word and is rendered as Markdown while it
grows; Stop leaves a partial answer marked stopped (and stored as partial); conversations
survive a reload; the page works at phone width; the emulator banner shows; injected markup is
shown as text; a dropped connection is resumed without losing or repeating text. Each main
state is saved as a screenshot in tests/browser/artifacts/ (gitignored).
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import (  # noqa: F401 (fixtures)
    ASSISTANT,
    IN_CI,
    USER,
    answer_length,
    artifacts_fixture,
    ask,
    browser_fixture,
    context_fixture,
    conversation_id,
    open_app,
    page_fixture,
    rendered_matches,
    require_browser,
    scratch_dir_fixture,
    wait_until,
)

require_browser()

try:
    from wenxin_stream.server import ServerConfig, create_app
except ImportError as exc:  # the server is another package area; say so clearly
    if IN_CI:
        raise
    pytest.skip(f"wenxin_stream.server is not available: {exc}", allow_module_level=True)

from servers import emulator, serving  # noqa: E402
from wenxin_stream.emulator._config import parse_scenarios  # noqa: E402

XSS_QUESTION = (
    '<script>alert(1)</script> [x](javascript:alert(1)) <img src=x onerror="window.__pwned=1">'
)
XSS_ANSWER = (
    "**注意**：<script>window.__pwned = 1; alert(1)</script>\n\n"
    "- [坏链接](javascript:alert(1))\n"
    '- [also bad](JAVASCRIPT:alert(1)) <img src=x onerror="window.__pwned=1">\n'
    "- [好链接](https://example.com/ok)\n\n"
    '<a href="javascript:alert(1)">raw html link</a> `<b>code</b>`'
)
WIDE_ANSWER = (
    "## 很宽的内容\n\n"
    "一个很长的链接：https://example.com/" + "a" * 180 + "\n\n"
    "```text\n" + "x" * 200 + "\n```\n\n"
    "| 列一 | 列二 | 列三 | 列四 | 列五 | 列六 | 列七 | 列八 |\n"
    "|---|---|---|---|---|---|---|---|\n"
    "| 一些内容 | 一些内容 | 一些内容 | 一些内容 | 一些内容 | 一些内容 | 一些内容 | 一些内容 |\n\n"
    "1. **粗体**列表项\n2. 第二项\n"
)
SCENARIOS = parse_scenarios(
    [
        {"match": "xss-test", "answer": XSS_ANSWER},
        {"match": "wide-test", "answer": WIDE_ANSWER},
    ]
)


@pytest.fixture(scope="module")
def site(scratch_dir: Path) -> Iterator[str]:
    """The real server, its upstream a paced emulator (answers take about 2–3 s)."""
    with emulator(ttft=0.25, interval=0.1, v2_interval=0.06, scenarios=SCENARIOS) as emu:
        config = ServerConfig(
            host="127.0.0.1",
            port=0,
            data_dir=scratch_dir / "data",
            upstream_api="v2",
            upstream_v2_base_url=emu.base_url,
            upstream_bearer_token="bce-v3/ALTAK-browser/test",
            upstream_emulated=True,
            ping_interval=2.0,
        )
        with serving(create_app(config)) as server:
            yield server.base_url


# ---- helpers --------------------------------------------------------------------------------


def shot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"))


def wait_status(answer: Any, *statuses: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = answer.get_attribute("data-status")
        if status in statuses:
            return str(status)
        time.sleep(0.05)
    raise AssertionError(
        f"status stayed {answer.get_attribute('data-status')!r}, wanted {statuses}"
    )


def stored(page: Any, url: str, conv_id: str) -> dict[str, Any]:
    resp = page.request.get(f"{url}/api/conversations/{conv_id}")
    assert resp.status == 200, resp.text()
    return dict(resp.json())


def assert_clean(page: Any) -> None:
    assert page.errors == [], page.errors
    assert page.dialogs == [], page.dialogs


# ---- tests ----------------------------------------------------------------------------------


def test_answer_streams_in_and_renders_markdown(page: Any, site: str, artifacts: Path) -> None:
    open_app(page, site + "/")
    shot(page, artifacts, "01-empty")
    answer = ask(page, "请用几句话介绍一下流式输出")
    assert page.get_by_test_id("stop").is_visible()

    lengths: list[int] = []
    mid_shot = False
    deadline = time.monotonic() + 20
    while answer.get_attribute("data-status") == "streaming" and time.monotonic() < deadline:
        lengths.append(answer_length(answer))
        if not mid_shot and lengths[-1] > 60:
            shot(page, artifacts, "02-streaming")
            mid_shot = True
        time.sleep(0.12)
    growth = sum(1 for a, b in itertools.pairwise(lengths) if b > a)
    assert growth >= 2, f"the answer did not grow while streaming: {lengths}"
    # Rendered text may lose a few characters when Markdown markers complete ("**要" → bold).
    shrinks = [(a, b) for a, b in itertools.pairwise(lengths) if b < a - 4]
    assert shrinks == [], f"the answer shrank while streaming: {lengths}"

    assert wait_status(answer, "complete") == "complete"
    body = answer.locator(".msg-body")
    assert body.inner_text().startswith("【离线模拟】")
    assert answer.locator("li").count() >= 2 or answer.locator("strong").count() >= 1
    assert answer.locator("ol > li").count() == 4  # the emulator's steps (a "介绍" question)
    stats = answer.get_by_test_id("stats")
    assert stats.is_visible()
    text = stats.inner_text()
    assert re.search(r"首字 \d+(\.\d+)? (ms|s)", text), text
    assert re.search(r"\d+ tokens \(\d+ \+ \d+\)", text), text
    assert answer.get_attribute("aria-live") is None
    assert body.get_attribute("aria-live") == "polite"
    assert not page.get_by_test_id("stop").is_visible()

    # The DOM is exactly the rendering of what the server stored: nothing lost or repeated.
    conv = stored(page, site, conversation_id(page))
    assert conv["messages"][-1]["status"] == "complete"
    assert rendered_matches(answer, conv["messages"][-1]["content"])
    # It appears in the sidebar after its first question.
    first = page.get_by_test_id("conversation").first
    assert first.get_attribute("data-conversation-id") == conv["id"]
    assert first.get_attribute("aria-current") == "page"
    shot(page, artifacts, "03-complete")
    assert_clean(page)


def test_stop_keeps_the_partial_answer(page: Any, site: str, artifacts: Path) -> None:
    open_app(page, site + "/")
    answer = ask(page, "写一个长一点的回答 [[wenxin:fault interval=0.1;chunks=60]]", enter=False)
    wait_until(lambda: answer_length(answer) > 20, what="the answer to start")
    page.get_by_test_id("stop").click()
    assert wait_status(answer, "stopped", timeout=6) == "stopped"
    first = answer_length(answer)
    time.sleep(0.6)
    assert answer_length(answer) == first, "text kept growing after Stop"
    assert answer.get_attribute("data-end-reason") == "cancelled"
    assert "已停止" in answer.locator(".msg-flag").inner_text()
    assert page.get_by_test_id("send").is_visible()
    assert not page.get_by_test_id("stop").is_visible()
    shot(page, artifacts, "04-stopped")

    conv_id = conversation_id(page)
    message = stored(page, site, conv_id)["messages"][-1]
    assert message["role"] == "assistant"
    assert message["status"] == "partial"
    assert message["end_reason"] == "cancelled"
    assert len(message["content"]) > 0

    page.reload()
    page.wait_for_selector('body[data-ready="true"]')
    again = page.locator(ASSISTANT).last
    again.wait_for()
    assert again.get_attribute("data-status") == "stopped"
    assert again.get_attribute("data-end-reason") == "cancelled"
    assert rendered_matches(again, message["content"])
    assert_clean(page)


def test_conversations_survive_a_reload(page: Any, site: str, artifacts: Path) -> None:
    open_app(page, site + "/")
    fast = " [[wenxin:fault ttft=0;interval=0.01]]"
    wait_status(ask(page, "第一个会话的问题" + fast), "complete")
    first_id = conversation_id(page)
    wait_status(ask(page, "同一会话的第二个问题" + fast), "complete")
    assert conversation_id(page) == first_id
    assert page.locator(USER).count() == 2

    page.get_by_test_id("new-chat").click()
    assert page.locator('[data-testid="message"]').count() == 0
    assert page.get_by_test_id("question").evaluate("(n) => n === document.activeElement")
    wait_status(ask(page, "另一个会话" + fast), "complete")
    second_id = conversation_id(page)
    assert second_id != first_id

    # A fresh load of the page (no conversation in the URL): both are listed, newest first.
    page.goto(site + "/")
    page.wait_for_selector('body[data-ready="true"]')
    assert page.locator('[data-testid="message"]').count() == 0
    items = page.get_by_test_id("conversation")
    ids = [items.nth(i).get_attribute("data-conversation-id") for i in range(items.count())]
    assert ids.index(second_id) < ids.index(first_id), ids
    item = page.locator(f'[data-testid="conversation"][data-conversation-id="{first_id}"]')
    assert "第一个会话的问题" in item.inner_text()
    item.click()
    wait_until(lambda: page.locator('[data-testid="message"]').count() == 4, what="4 messages")
    roles = page.locator('[data-testid="message"]').evaluate_all(
        "(ns) => ns.map((n) => n.dataset.role)"
    )
    assert roles == ["user", "assistant", "user", "assistant"]
    assert page.locator(USER).first.locator(".msg-body").inner_text() == "第一个会话的问题" + fast
    assert page.locator(ASSISTANT).first.get_attribute("data-status") == "complete"
    assert page.locator(ASSISTANT).first.get_by_test_id("stats").is_visible()
    assert conversation_id(page) == first_id

    # A reload keeps the open conversation (it is in the URL).
    page.reload()
    page.wait_for_selector('body[data-ready="true"]')
    wait_until(lambda: page.locator('[data-testid="message"]').count() == 4, what="reopened")
    shot(page, artifacts, "05-reopened")
    page.emulate_media(color_scheme="dark")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(21, 24, 30)"
    shot(page, artifacts, "05-reopened-dark")
    assert_clean(page)


def test_phone_width(browser: Any, site: str, artifacts: Path) -> None:
    ctx = browser.new_context(
        viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True
    )
    try:
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        open_app(page, site + "/")
        sidebar = page.locator("#sidebar")
        toggle = page.get_by_test_id("sidebar-toggle")
        assert toggle.is_visible()
        assert not sidebar.is_visible()

        answer = ask(page, "wide-test " + "很长的问题" * 20 + " https://example.com/" + "b" * 120)
        wait_status(answer, "complete")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        assert page.evaluate("document.body.scrollWidth") <= 375
        box = page.get_by_test_id("question").bounding_box()
        assert box is not None
        assert box["y"] >= 0
        assert box["y"] + box["height"] <= 740
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= 375
        send = page.get_by_test_id("send").bounding_box()
        assert send is not None
        assert send["x"] + send["width"] <= 375
        # Every message fits the width (long words wrap, code and tables scroll inside).
        widths = page.locator('[data-testid="message"]').evaluate_all(
            "(ns) => ns.map((n) => n.getBoundingClientRect().right)"
        )
        assert max(widths) <= 375, widths
        shot(page, artifacts, "06-phone")

        toggle.click()
        page.wait_for_function("document.body.classList.contains('sidebar-open')")
        wait_until(
            lambda: sidebar.evaluate("(n) => n.getBoundingClientRect().left") >= 0, what="slide-in"
        )
        assert sidebar.is_visible()
        assert toggle.get_attribute("aria-expanded") == "true"
        item = page.get_by_test_id("conversation").first
        assert item.is_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        shot(page, artifacts, "07-phone-sidebar")
        item.click()
        wait_until(lambda: not sidebar.is_visible(), what="the sidebar to close")
        assert toggle.get_attribute("aria-expanded") == "false"
        assert page.get_by_test_id("question").is_visible()
        assert errors == []
    finally:
        ctx.close()


def test_emulator_banner(page: Any, site: str, artifacts: Path) -> None:
    open_app(page, site + "/")
    banner = page.get_by_test_id("emulator-banner")
    assert banner.is_visible()
    assert banner.inner_text().strip() == "离线模拟器：回答是模拟的（未配置 ERNIE 凭据）"
    # Enter sends, Shift+Enter is a new line.
    box = page.get_by_test_id("question")
    box.fill("第一行")
    box.press("Shift+Enter")
    box.type("第二行")
    assert box.input_value() == "第一行\n第二行"
    assert page.locator('[data-testid="message"]').count() == 0
    assert page.get_by_test_id("send").is_enabled()
    box.fill("")
    assert page.get_by_test_id("send").is_disabled()
    info = page.request.get(site + "/api/info").json()
    assert info["upstream"] == "emulator"

    # With a real ERNIE upstream the banner stays hidden.
    def as_ernie(route: Any) -> None:
        resp = route.fetch()
        body = resp.json()
        body["upstream"] = "ernie"
        route.fulfill(response=resp, body=json.dumps(body))

    page.route("**/api/info", as_ernie)
    page.reload()
    page.wait_for_selector('body[data-ready="true"]')
    assert not banner.is_visible()
    assert_clean(page)


def test_injected_markup_is_shown_as_text(page: Any, site: str, artifacts: Path) -> None:
    open_app(page, site + "/")
    answer = ask(page, "xss-test " + XSS_QUESTION)
    wait_status(answer, "complete")
    question = page.locator(USER).last
    assert question.locator(".msg-body").inner_text().endswith(XSS_QUESTION)
    body = answer.locator(".msg-body")
    text = body.inner_text()
    assert "<script>window.__pwned = 1; alert(1)</script>" in text
    assert "[坏链接](javascript:alert(1))" in text
    assert '<a href="javascript:alert(1)">raw html link</a>' in text
    assert answer.locator("strong").first.inner_text() == "注意"
    assert answer.locator("code").first.inner_text() == "<b>code</b>"
    links = body.locator("a")
    assert links.count() == 1
    assert links.first.get_attribute("href") == "https://example.com/ok"
    assert "noopener" in (links.first.get_attribute("rel") or "")
    assert page.evaluate("document.querySelectorAll('#messages script, #messages img').length") == 0
    assert page.evaluate("document.querySelectorAll('a[href^=\"javascript:\" i]').length") == 0
    page.wait_for_timeout(200)  # give an onerror handler the chance to run, if it existed
    assert page.evaluate("window.__pwned") is None
    shot(page, artifacts, "08-injection-as-text")
    assert_clean(page)


# Wrap fetch() so the first answer's connection breaks after `limit` bytes (likely inside a
# multi-byte character): the body errors as a network failure would, and the real connection
# is closed, so the server sees the client go away and keeps the stream for resume.
BREAK_FIRST_STREAM = """(limit) => {
    const realFetch = window.fetch.bind(window);
    window.__broken = 0;
    window.fetch = async (input, init = {}) => {
        const url = typeof input === 'string' ? input : input.url;
        const resp = await realFetch(input, init);
        if (!(init.method === 'POST' && /\\/messages$/.test(url)) || window.__broken) return resp;
        window.__broken += 1;
        const reader = resp.body.getReader();
        let seen = 0;
        const body = new ReadableStream({
            async pull(controller) {
                const {value, done} = await reader.read();
                if (done) { controller.close(); return; }
                if (seen + value.length >= limit) {
                    controller.enqueue(value.slice(0, limit - seen));
                    reader.cancel();
                    controller.error(new TypeError('network error (simulated by the test)'));
                    return;
                }
                seen += value.length;
                controller.enqueue(value);
            },
        });
        return new Response(body, {status: resp.status, headers: resp.headers});
    };
}"""


def test_dropped_connection_is_resumed(page: Any, site: str, artifacts: Path) -> None:
    page.add_init_script(script=f"({BREAK_FIRST_STREAM})(700)")
    resumes: list[dict[str, str]] = []
    page.on(
        "request",
        lambda req: (
            resumes.append(req.headers)
            if "/api/streams/" in req.url and req.method == "GET"
            else None
        ),
    )
    open_app(page, site + "/")
    answer = ask(page, "断线续传测试：请回答完整")
    assert wait_status(answer, "complete", "error", timeout=20) == "complete"
    assert page.evaluate("window.__broken") == 1
    assert resumes, "the page did not resume the stream"
    assert re.fullmatch(r".+:\d+", resumes[0].get("last-event-id", "")), resumes[0]
    message = stored(page, site, conversation_id(page))["messages"][-1]
    assert message["status"] == "complete"
    assert rendered_matches(answer, message["content"])
    assert answer.get_by_test_id("stats").is_visible()
    assert_clean(page)


def test_api_key_is_asked_once_and_again_after_401(page: Any, site: str, artifacts: Path) -> None:
    good = "wx-" + "k" * 40
    asked: list[str] = []

    def guard(route: Any) -> None:
        req = route.request
        if req.url.endswith("/api/info"):
            resp = route.fetch()
            body = resp.json()
            body["auth_required"] = True
            route.fulfill(response=resp, body=json.dumps(body))
            return
        auth = req.headers.get("authorization", "")
        asked.append(auth)
        if auth != f"Bearer {good}":
            route.fulfill(
                status=401,
                content_type="application/json",
                body=json.dumps(
                    {
                        "error": {
                            "message": "Invalid API key",
                            "type": "authentication_error",
                            "code": "invalid_api_key",
                            "param": None,
                        }
                    }
                ),
            )
            return
        headers = {k: v for k, v in req.headers.items() if k != "authorization"}
        route.continue_(headers=headers)  # the test server runs in dev mode: no key needed

    page.route("**/api/**", guard)
    page.goto(site + "/")
    dialog = page.locator("#key-dialog")
    dialog.wait_for(state="visible")
    page.locator("#api-key").fill("wx-wrong")
    page.locator("#api-key").press("Enter")
    wait_until(lambda: "无效" in page.locator("#key-error").inner_text(), what="the 401 message")
    assert dialog.is_visible()
    shot(page, artifacts, "09-api-key")
    page.locator("#api-key").fill(good)
    page.locator("#key-dialog button[type=submit]").click()
    page.wait_for_selector('body[data-ready="true"]')
    assert not dialog.is_visible()
    assert page.evaluate("localStorage.getItem('wenxin.apiKey')") == good
    answer = ask(page, "带 key 的问题 [[wenxin:fault ttft=0;interval=0.01]]")
    assert wait_status(answer, "complete") == "complete"

    # Stored: a reload asks nothing.
    page.reload()
    page.wait_for_selector('body[data-ready="true"]')
    assert not dialog.is_visible()
    assert asked[-1] == f"Bearer {good}"
    assert_clean(page)


def test_errors_are_shown_inline(page: Any, site: str, artifacts: Path) -> None:
    def busy(route: Any) -> None:
        if route.request.method != "POST" or not route.request.url.endswith("/messages"):
            route.continue_()
            return
        route.fulfill(
            status=429,
            headers={"Retry-After": "3"},
            content_type="application/json",
            body=json.dumps(
                {
                    "error": {
                        "message": "too many concurrent streams",
                        "type": "rate_limit_error",
                        "code": "too_many_streams",
                        "param": None,
                    }
                }
            ),
        )

    open_app(page, site + "/")
    # ERNIE fails mid-answer: the text so far stays, the error is shown under it.
    answer = ask(page, "中途出错 [[wenxin:fault error=336003;error_after=3]]")
    assert wait_status(answer, "error") == "error"
    assert answer.get_attribute("data-end-reason") == "upstream_error"
    assert "Invalid Argument" in answer.get_by_test_id("error").inner_text()
    assert "上游错误" in answer.locator(".msg-flag").inner_text()
    assert answer_length(answer) > 0

    # The server refuses the question (429): shown inline, the question is given back.
    page.route("**/api/conversations/*/messages", busy)
    answer = ask(page, "这个会被限流")
    assert wait_status(answer, "error") == "error"
    error = answer.get_by_test_id("error")
    assert "too many concurrent streams" in error.inner_text()
    assert page.get_by_test_id("send").is_visible()
    assert page.get_by_test_id("question").input_value() == "这个会被限流"
    shot(page, artifacts, "10-inline-error")
    assert_clean(page)


def test_usage_line_follows_the_answers(page: Any, site: str, artifacts: Path) -> None:
    """The sidebar shows this key's usage this month (GET /api/usage: its own only) and
    refreshes it when an answer ends."""
    open_app(page, site + "/")
    usage = page.get_by_test_id("usage")
    usage.wait_for()
    assert usage.inner_text().startswith("本月：")
    answer = ask(page, "用量是多少")
    wait_status(answer, "complete")
    totals = page.request.get(site + "/api/usage").json()["totals"]
    assert totals["total_tokens"] > 0
    shown = f"本月：{totals['total_tokens']:,} tokens · ¥{totals['cost_cny']}"
    wait_until(lambda: usage.inner_text() == shown, what=f"usage line {shown!r}")
    page.get_by_test_id("language").select_option("en")
    assert usage.inner_text().startswith("This month: ")
    assert_clean(page)
