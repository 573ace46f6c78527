"""The app in a real browser: headless Debian Chromium driven by Playwright, against a real
``streamlit run`` process, the real service and the model server.

Chromium comes from Debian (``scripts/install_browser.sh``); Playwright never downloads one. When it
is missing the test is skipped locally, but under ``CI=true`` it FAILS, naming the binary.
Set ``SHOPREC_UI_SCREENSHOTS_DIR=docs/screenshots`` to refresh the committed screenshots.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ui.conftest import StreamlitApp, start_streamlit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

CHROMIUM = os.environ.get("SHOPREC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOTS_ENV = "SHOPREC_UI_SCREENSHOTS_DIR"
CARD = "[class*='st-key-card-']"
WAIT_MS = 90_000


def missing_browser(reason: str) -> None:
    """Fails under CI=true (the browser is part of CI's set-up), skips elsewhere."""
    message = f"{reason}: install it with `bash scripts/install_browser.sh` (Debian chromium, chromium-driver)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def chromium_path() -> str:
    """The Chromium binary, or a failure / skip naming it."""
    path = CHROMIUM if os.path.isfile(CHROMIUM) else shutil.which("chromium")
    if path is None or not os.access(path, os.X_OK):
        missing_browser(f"headless Chromium is missing ({CHROMIUM} not found, no `chromium` on PATH)")
    return str(path)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The browser, checked before any server starts."""
    return chromium_path()


@pytest.fixture
def streamlit_app(app_env: dict[str, str], tmp_path: Path) -> Iterator[StreamlitApp]:
    app = start_streamlit(app_env, tmp_path / "streamlit.log")
    try:
        yield app
    finally:
        app.stop()


def card_ids(page: object) -> list[str]:
    """The item ids of the rendered cards, in order (from their ``st-key-card-<id>`` class)."""
    classes = page.eval_on_selector_all(CARD, "els => els.map(e => e.className)")  # type: ignore[attr-defined]
    ids = []
    for names in classes:
        ids += [name.removeprefix("st-key-card-") for name in names.split() if name.startswith("st-key-card-")]
    return ids


def save(page: object, name: str, tmp_path: Path) -> Path:
    """Screenshots the page into the test's folder, and into $SHOPREC_UI_SCREENSHOTS_DIR when set."""
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    if os.environ.get(SCREENSHOTS_ENV):
        target = Path(os.environ[SCREENSHOTS_ENV])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / name)
    return path


def test_clicking_an_item_in_the_browser_changes_the_list(chromium: str, streamlit_app: StreamlitApp,
                                                          tmp_path: Path) -> None:
    executable = chromium
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_browser("the playwright package is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(streamlit_app.url, wait_until="domcontentloaded")
            page.wait_for_selector(CARD, timeout=WAIT_MS)
            page.wait_for_function(f"document.querySelectorAll(\"{CARD}\").length >= 9", timeout=WAIT_MS)
            before = card_ids(page)
            assert len(before) == 9
            # Widgets are lazily loaded components: wait until the buttons and metrics are real.
            page.wait_for_selector(f".st-key-click-{before[-1]} button", timeout=WAIT_MS)
            page.wait_for_function("document.querySelectorAll(\"[data-testid='stMetric']\").length == 4",
                                   timeout=WAIT_MS)
            page.wait_for_load_state("networkidle", timeout=WAIT_MS)
            save(page, "recommend_before_click.png", tmp_path)

            clicked = before[-1]
            page.locator(f".st-key-click-{clicked} button").click()
            page.get_by_text(f"After click on {clicked}").wait_for(timeout=WAIT_MS)
            deadline = time.monotonic() + 30
            after = card_ids(page)
            while after == before and time.monotonic() < deadline:  # the old cards may linger a moment
                time.sleep(0.2)
                after = card_ids(page)
            assert after != before, "the list did not change after the click"
            assert len(after) == 9
            page.wait_for_timeout(500)  # let the NEW badges settle before the picture
            shot = save(page, "recommend.png", tmp_path)
            assert shot.stat().st_size > 20_000

            page.set_viewport_size({"width": 1400, "height": 3000})  # the page scrolls inside its frame
            page.goto(streamlit_app.url + "/pipeline", wait_until="domcontentloaded")
            page.get_by_text("Anomalies of the last validation").wait_for(timeout=WAIT_MS)
            page.wait_for_function("(() => { const i = document.querySelector(`img[alt='metrics against K']`);"
                                   " return i !== null && i.complete && i.naturalWidth > 0; })()", timeout=WAIT_MS)
            page.wait_for_load_state("networkidle", timeout=WAIT_MS)
            page.wait_for_timeout(1500)  # the tables render after their frames
            assert save(page, "pipeline.png", tmp_path).stat().st_size > 20_000

            page.set_viewport_size({"width": 1400, "height": 800})
            page.goto(streamlit_app.url + "/experiments", wait_until="domcontentloaded")
            page.get_by_text("No experiments are running").wait_for(timeout=WAIT_MS)
            assert save(page, "experiments.png", tmp_path).stat().st_size > 5_000
        finally:
            browser.close()
