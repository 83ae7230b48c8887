"""What the browser test modules share: Debian's Chromium driven by Playwright.

The tests need ``/usr/bin/chromium`` and the ``playwright`` Python package (both installed by
``scripts/install-browser``; Playwright's own browser download is never used). Without them the
tests are skipped, except under CI (the ``CI`` variable is set), where they must run: then a
missing piece fails the collection loudly.

The fixtures live in this importable module (test modules never import a ``conftest``); the
test modules import the ``*_fixture`` functions, registered under the plain names (``page``, …).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
