"""Fixtures that drive the widget in Debian's headless Chromium through Playwright's async API.

Playwright's sync API keeps an event loop running in the main thread, which breaks the
pytest-asyncio tests that run after it in the same process, so only the async API is used here.
The browser and the server are shared by the session; each test gets a fresh browser context,
so its localStorage and sessionStorage start empty.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.server.conftest import LiveServer, build_settings, running_server

BROWSER_TESTS_DIR = Path(__file__).parent
CHROMIUM = Path("/usr/bin/chromium")
# The background-networking flags keep Chromium from calling Google's services during the tests.
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
VIEWPORT = {"width": 1200, "height": 800}


def missing_browser_reason() -> str | None:
    """Return why the browser tests cannot run here, or None when they can."""
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed; install the test extra: pip install -e '.[test]'"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found; install Debian's chromium package (never 'playwright install')"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # pytest calls this hook with the items of the whole session, so only this folder's are marked.
    reason = missing_browser_reason()
    session_loop = pytest.mark.asyncio(loop_scope="session")
    for item in items:
        if not item.path.is_relative_to(BROWSER_TESTS_DIR):
            continue
        item.add_marker(pytest.mark.browser)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))
        if pytest_asyncio.is_async_test(item):
            item.add_marker(session_loop, append=False)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def widget_server(shipped_models: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    """The entraide server of the browser tests, with the shipped data and the session's model."""
    database = tmp_path_factory.mktemp("browser-server") / "entraide.db"
    async with running_server(build_settings(shipped_models, database)) as live:
        yield live


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser():
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture(loop_scope="session")
async def context(browser):
    """A fresh browser profile: empty storage, French locale, desktop viewport."""
    browser_context = await browser.new_context(viewport=VIEWPORT, locale="fr-FR")
    try:
        yield browser_context
    finally:
        await browser_context.close()


@pytest.fixture
def page_errors() -> list[str]:
    """The uncaught JavaScript errors of the test's page, filled while the test runs."""
    return []


@pytest_asyncio.fixture(loop_scope="session")
async def page(context, widget_server: LiveServer, page_errors: list[str]):
    """The demo ENT page of the server, loaded, with the widget's launcher shown."""
    new_page = await context.new_page()
    new_page.on("pageerror", lambda error: page_errors.append(str(error)))
    await new_page.goto(f"{widget_server.url}/")
    await new_page.locator("#entraide-launcher").wait_for(state="visible")
    yield new_page
