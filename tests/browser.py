"""Debian's Chromium driven by Playwright, for the tests that look at a UI as a person does.

`make browser` installs /usr/bin/chromium; Playwright's own browser download is not used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_TIMEOUT_MS = 120_000  # UIs are slow to render on a loaded 2-core machine


@contextlib.contextmanager
def chromium_page(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """One headless tab; fails the test with the install command when Chromium is missing."""
    if not CHROMIUM.is_file():
        pytest.fail("no /usr/bin/chromium: `apt-get update && apt-get install -y chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": width, "height": height})
            tab.set_default_timeout(UI_TIMEOUT_MS)
            yield tab
        finally:
            browser.close()


def expect_text(page: Any, text: str) -> None:
    """Wait until `text` is on the page (the UIs render after their API calls return)."""
    page.get_by_text(text).first.wait_for()


def row_cells(page: Any, first_cell: str) -> list[str]:
    """The texts of the table row whose first cell is exactly `first_cell`."""
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=first_cell, exact=True))
    row.first.wait_for()
    return [text.strip() for text in row.first.get_by_role("cell").all_inner_texts()]


def close_assistant_panel(page: Any) -> None:
    """MLflow 3 opens its "MLflow Assistant" side panel on first visit; it hides half of each
    page in the screenshots. The choice is remembered for the rest of the session."""
    close = page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
    close.first.click()
    close.first.wait_for(state="hidden")
