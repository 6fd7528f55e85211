"""Screenshots of every dashboard tab for the README (docs/img/dashboard-<tab>.png), from a running dashboard.

Bring the stack up first (`make demo`, or `tftmon serve`, `tftmon feed` and `tftmon dashboard`) and let it
run a few model steps; then, from the repository root:

    .venv/bin/python scripts/dashboard_screenshots.py [--url http://127.0.0.1:8501] [--out docs/img]

It opens the heatmap in headless Chromium, clicks the riskiest server's cell (so Top Servers and Explain
show it), then each tab in turn. Needs Chromium and ChromeDriver (Debian: chromium, chromium-driver).
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

TABS = ("Overview", "Heatmap", "Top Servers", "Historical", "Explain", "Advanced")


def settle(driver: WebDriver, timeout: float = 60) -> None:
    """Wait until Streamlit has finished the run and the charts have faded in."""
    deadline = time.monotonic() + timeout
    time.sleep(1)
    while driver.find_elements(By.CSS_SELECTOR, "[data-testid=stStatusWidget]") and time.monotonic() < deadline:
        time.sleep(0.3)
    time.sleep(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8501", help="The dashboard.")
    parser.add_argument("--out", type=Path, default=Path("docs/img"), help="Where the PNGs go.")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = parser.parse_args()
    options = Options()
    options.binary_location = args.chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1200"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(args.chromedriver), options=options)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        driver.get(f"{args.url}/?tab=Heatmap")
        deadline = time.monotonic() + 120
        while not driver.find_elements(By.CSS_SELECTOR, "g.heatmap_marks path") and time.monotonic() < deadline:
            time.sleep(0.5)
        cells = driver.find_elements(By.CSS_SELECTOR, "g.heatmap_marks path")
        if not cells:
            raise SystemExit(f"no heatmap at {args.url}: is the stack up and fed?")

        def risk(label: str) -> float:
            found = re.search(r"risk: ([\d.]+)", label)
            return float(found.group(1)) if found else 0.0

        worst = max(cells, key=lambda c: risk(c.get_attribute("aria-label") or ""))
        ActionChains(driver).move_to_element(worst).click().perform()
        for name in TABS:
            tab = next(t for t in driver.find_elements(By.CSS_SELECTOR, "[role=tab]") if t.text == name)
            tab.click()
            settle(driver)
            path = args.out / f"dashboard-{name.lower().replace(' ', '-')}.png"
            driver.save_screenshot(str(path))
            print(path)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
