"""What the browser test modules share: Debian's Chromium driven by Playwright.

The tests need ``/usr/bin/chromium`` and the ``playwright`` Python package (both installed by
``scripts/install-browser``; Playwright's own browser download is never used). Without them the
tests are skipped, except under CI (the ``CI`` variable is set), where they must run: then a
missing piece fails the collection loudly.

The fixtures live in this importable module (test modules never import a ``conftest``); the
test modules import the ``*_fixture`` functions, registered under the plain names (``page``, …).
So do the steps every page test takes (open the page, ask, wait, compare what it shows with
the Markdown it was given).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STATIC_DIR = Path(__file__).resolve().parents[2] / "src" / "wenxin_stream" / "server" / "static"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
IN_CI = bool(os.environ.get("CI"))
T = TypeVar("T")


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"browser tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_browser() -> None:
    """Skip (or under CI fail) the calling test module when the browser stack is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the playwright package is not installed (run scripts/install-browser)")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"{CHROMIUM} is missing (run scripts/install-browser)")


@pytest.fixture(scope="module", name="browser")
def browser_fixture() -> Iterator[Any]:
    """One headless Chromium per test module (so no Playwright state outlives the browser
    tests); each test gets its own context (clean storage).

    Playwright's ``launch`` gives the browser a fresh temporary user-data directory and
    removes it at close.
    """
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(name="context")
def context_fixture(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    ctx.set_default_timeout(10_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture(name="page")
def page_fixture(context: Any) -> Any:
    """A page that records console errors, uncaught exceptions and dialogs (alerts)."""
    pg = context.new_page()
    pg.errors = []  # type: ignore[attr-defined]
    pg.dialogs = []  # type: ignore[attr-defined]
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))

    def on_dialog(dialog: Any) -> None:
        pg.dialogs.append(dialog.message)
        dialog.dismiss()

    pg.on("dialog", on_dialog)
    return pg


@pytest.fixture(name="artifacts")
def artifacts_fixture() -> Path:
    """Where screenshots go (gitignored; each run overwrites them)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module", name="scratch_dir")
def scratch_dir_fixture() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="wenxin-browser-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ---- the page: what a person does and sees ----------------------------------------------------

ASSISTANT = '[data-testid="message"][data-role="assistant"]'
USER = '[data-testid="message"][data-role="user"]'


def open_app(page: Any, url: str) -> None:
    """Open the page at ``url`` and wait until its script says it is ready."""
    page.goto(url)
    page.wait_for_selector('body[data-ready="true"]')


def ask(page: Any, question: str, *, enter: bool = True) -> Any:
    """Type a question, send it (Enter or the button) and return the new answer's locator."""
    before = page.locator(ASSISTANT).count()
    box = page.get_by_test_id("question")
    box.fill(question)
    if enter:
        box.press("Enter")
    else:
        page.get_by_test_id("send").click()
    answer = page.locator(ASSISTANT).nth(before)
    answer.wait_for()
    return answer


def answer_length(answer: Any) -> int:
    """The characters of an answer's body as shown now."""
    return int(answer.evaluate("(n) => n.querySelector('.msg-body').textContent.length"))


def wait_until(predicate: Callable[[], T | None], timeout: float = 10.0, what: str = "") -> T:
    """``predicate()``'s first true value, polled every 50 ms for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)
    return value


def conversation_id(page: Any) -> str:
    """The open conversation's id, from the page's address."""
    m = re.search(r"#c=([\w.-]+)", page.url)
    assert m, f"no conversation id in {page.url}"
    return m.group(1)


def rendered_matches(answer: Any, markdown: str) -> bool:
    """Whether the answer's DOM is exactly the Markdown rendering of ``markdown`` (code blocks
    unwrapped from the box that adds their label and copy button)."""
    return bool(
        answer.evaluate(
            """async (node, src) => {
                const md = await import('/static/markdown.js');
                const body = node.querySelector('.msg-body').cloneNode(true);
                for (const box of body.querySelectorAll('.code-block')) {
                    box.replaceWith(box.querySelector('pre'));
                }
                const want = document.createElement('div');
                want.innerHTML = md.renderMarkdown(src);
                return body.innerHTML === want.innerHTML;
            }""",
            markdown,
        )
    )
