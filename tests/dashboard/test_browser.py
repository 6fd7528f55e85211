"""What a person sees in a real browser: `tftmon dashboard` on the live stack of conftest.py (service, feeder),
opened in headless Chromium through Selenium; every tab, a click on the heatmap, a refresh that keeps the tab,
the selection and the scroll position; and the banner of a dashboard whose service is down. Screenshots of
every tab go to tests/artifacts/ (git-ignored); docs/img/ holds copies for the README."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from tests.conftest import ROOT
from tests.dashboard.conftest import SERVERS, Stack, stop_group, wait_for
from tests.serving import free_port
from tftmon.dashboard.app import TABS

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "tests" / "artifacts"
#: The dashboards' refresh interval: short, so the test sees a refresh.
REFRESH = 5
#: The Advanced tab's height at most (px): settings, scenario, status table and a closed raw record.
MAX_ADVANCED_HEIGHT = 3000


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} missing: the browser test drives Debian's chromium and chromium-driver, which "
            "`.ci/run` installs (apt-get install chromium chromium-driver)"
        )
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1300"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _dashboard(service_url: str, feeder_url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`tftmon dashboard` on a free port (not yet ready: see _ready)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tftmon.cli", "dashboard", "--port", str(port), "--service-url", service_url,
         "--feeder-url", feeder_url, "--refresh-seconds", str(REFRESH)],
        cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "HOME": str(log.parent)},  # Streamlit's own config and credentials stay out of ~
    )  # fmt: skip
    return process, f"http://127.0.0.1:{port}"


def _ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"tftmon dashboard exited:\n{log.read_text()[-3000:]}")
        try:
            return requests.get(f"{url}/_stcore/health", timeout=2).ok
        except requests.RequestException:
            return False

    wait_for(up, "the dashboard", timeout=60)


@pytest.fixture(scope="module")
def dashboards(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Two `tftmon dashboard` processes, started together: on the live stack, and on a port nobody serves."""
    logs = tmp_path_factory.mktemp("dashboards")
    live = _dashboard(stack.url, stack.feeder_url, logs / "live.log")
    dead = _dashboard(f"http://127.0.0.1:{free_port()}", stack.feeder_url, logs / "dead.log")
    try:
        _ready(*live, logs / "live.log")
        _ready(*dead, logs / "dead.log")
        yield live[1], dead[1]
    finally:
        stop_group(live[0])
        stop_group(dead[0])


def until(driver: WebDriver, check: Callable[[], object], what: str, timeout: float = 40) -> object:
    """Poll the page until `check` is truthy (stale elements mean the page is redrawing: try again)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (StaleElementReferenceException, WebDriverException):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            ARTIFACTS.mkdir(exist_ok=True)
            driver.save_screenshot(str(ARTIFACTS / "dashboard-failure.png"))
            raise AssertionError(f"{what}: not seen within {timeout:g} s (tests/artifacts/dashboard-failure.png)")
        time.sleep(0.2)


def text(driver: WebDriver) -> str:
    """What the page says: its text and the text of its SVG charts (titles, labels)."""
    return str(driver.execute_script(
        "return document.body.innerText + '\\n' + [...document.querySelectorAll('svg text')]"
        ".map(t => t.textContent).join('\\n')"
    ))  # fmt: skip


def scroll(driver: WebDriver, to: int | None = None) -> int:
    """Scroll Streamlit's main pane (the window itself does not scroll) to `to`; its position."""
    return int(driver.execute_script(
        "const pane = document.querySelector('[data-testid=stMain]');"
        "if (arguments[0] !== null) pane.scrollTop = arguments[0]; return pane.scrollTop;", to,
    ))  # fmt: skip


def height(driver: WebDriver) -> int:
    """How tall the page's content is (px): what an operator scrolls through."""
    return int(driver.execute_script("return document.querySelector('[data-testid=stMain]').scrollHeight"))


def refreshed(driver: WebDriver) -> str:
    """The time the page says it last refreshed."""
    return str(driver.execute_script("return document.body.innerText.match(/refreshed (\\S+) UTC/)[1]"))


def marks(driver: WebDriver, css: str) -> list[WebElement]:
    """Drawn marks: SVG paths with a shape, inside mark groups matching `css`."""
    return [p for p in driver.find_elements(By.CSS_SELECTOR, f"{css} path") if p.get_attribute("d")]


def open_tab(driver: WebDriver, name: str) -> None:
    scroll(driver, 0)  # the tab bar scrolls with the page, under Streamlit's header
    tab = next(t for t in driver.find_elements(By.CSS_SELECTOR, "[role=tab]") if t.text == name)
    tab.click()
    until(driver, lambda: tab.get_attribute("aria-selected") == "true", f"tab {name} selected")


def shot(driver: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    scroll(driver, 0)
    time.sleep(0.5)  # charts fade in
    driver.save_screenshot(str(ARTIFACTS / f"dashboard-{name.lower().replace(' ', '-')}.png"))


def test_every_tab_in_a_browser(stack: Stack, browser: WebDriver, dashboards: tuple[str, str]) -> None:
    live, _ = dashboards
    names = sorted(p["server_name"] for p in stack.get("/predictions/current")["predictions"])
    started = time.perf_counter()
    browser.get(f"{live}/?tab=Heatmap")
    cells = until(browser, lambda: (found := marks(browser, "g.heatmap_marks")) and len(found) == SERVERS and found,
                  "one heatmap cell per server")  # fmt: skip
    loaded = time.perf_counter() - started
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "dashboard-timing.json").write_text(json.dumps({"servers": SERVERS, "load_to_heatmap_s": loaded}))
    assert [t.text for t in browser.find_elements(By.CSS_SELECTOR, "[role=tab]")] == list(TABS)
    assert isinstance(cells, list)
    labels = [c.get_attribute("aria-label") or "" for c in cells]
    assert sorted(label.split("server: ")[1].split(";")[0] for label in labels) == names
    assert all("risk: " in label and "reason: " in label for label in labels)  # what hovering shows

    picked = names[-1]
    cell = next(c for c, label in zip(cells, labels, strict=True) if f"server: {picked};" in label)
    ActionChains(browser).move_to_element(cell).click().perform()
    until(browser, lambda: f"Selected: {picked}" in text(browser), "the clicked server selected")
    shot(browser, "Heatmap")

    open_tab(browser, "Top Servers")
    until(browser, lambda: f"{picked} (selected)" in text(browser), "the selected server among the top servers")
    until(browser, lambda: marks(browser, "g.mark-area"), "a fan chart's p10–p90 band")
    page = text(browser)
    assert f"I/O wait on {picked}" in page or f"on {picked}" in page
    assert "CPU idle" not in page
    shot(browser, "Top Servers")

    # A refresh redraws the tab in place: same tab, same selection, same scroll position.
    scroll(browser, 400)
    stamp = refreshed(browser)
    until(browser, lambda: refreshed(browser) != stamp, "an automatic refresh", timeout=3 * REFRESH)
    time.sleep(1)
    assert scroll(browser) == 400
    top = next(t for t in browser.find_elements(By.CSS_SELECTOR, "[role=tab]") if t.text == "Top Servers")
    assert top.get_attribute("aria-selected") == "true" and f"{picked} (selected)" in text(browser)

    open_tab(browser, "Historical")
    until(browser, lambda: "Servers by forecast severity" in text(browser), "the fleet's history")
    until(browser, lambda: marks(browser, "g.mark-area"), "servers by severity over time")
    shot(browser, "Historical")

    open_tab(browser, "Explain")
    until(browser, lambda: f"Why the model forecast {picked}" in text(browser), "the selected server explained")
    until(browser, lambda: len(marks(browser, "g.mark-rect")) >= 3, "importance bars")
    assert "History inputs (encoder)" in text(browser) and "Attention over the history" in text(browser)
    page = text(browser)  # operators' names, the model's internals one bar (issue 31, item 17)
    assert "Time of day" in page and not any(raw in page for raw in ("_center", "_scale", "dow_sin", "relative_time"))
    shot(browser, "Explain")

    open_tab(browser, "Advanced")
    until(browser, lambda: "Feeder scenario: degrading" in text(browser), "the feeder's scenario")
    until(browser, lambda: "model_version" in text(browser), "the model's status")
    assert height(browser) < MAX_ADVANCED_HEIGHT  # the raw JSON closed: it was ~8,300 px (issue 31, item 17)
    shot(browser, "Advanced")

    open_tab(browser, "Overview")
    until(browser, lambda: "Servers forecast" in text(browser) and marks(browser, "g.mark-rect"), "the overview")
    assert "Warming up" in text(browser)
    shot(browser, "Overview")


def test_service_down_banner_in_a_browser(browser: WebDriver, dashboards: tuple[str, str]) -> None:
    _, dead = dashboards
    browser.get(dead)
    until(browser, lambda: "The service is not reachable" in text(browser), "the service-down banner")
    page = text(browser)
    assert "tftmon serve" in page and "Traceback" not in page
    shot(browser, "Service down")
