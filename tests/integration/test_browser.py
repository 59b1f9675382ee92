"""A real browser against the real server: Debian's Chromium (headless) opens ``/`` served by
waitress on loopback, clicks a page group, sees each policy's recommendations and the path,
then opens ``/impact``; screenshots of both pages are saved.

Skipped, with the reason, when Chromium, its driver or Selenium is missing (``.ci/run`` installs
``chromium`` and ``chromium-driver``). By default it runs on the tests' tiny run folder and
saves the screenshots in a temporary folder; the committed ``docs/webapp.png`` came from::

    NEXTPAGE_WEBAPP_RUN=<a pipeline run folder> NEXTPAGE_SCREENSHOT_DIR=docs \\
        python -m pytest tests/integration/test_browser.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from webapp import create_app
from webapp.app import state
from webapp.server import BackgroundServer

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# no network beyond loopback, no updates, no first-run dialogs, no GPU in CI
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--window-size=1400,1300",
)
WAIT_S = 30
CSP_RECORDER = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""


@pytest.fixture
def browser() -> Iterator[Any]:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.skip(
                f"{path} not found: install Debian's {package} "
                "(apt-get install chromium chromium-driver; .ci/run does)"
            )
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')"
    )
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in FLAGS:
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    # both paths given: Selenium Manager (which would download a browser) never runs
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    # every page records what its Content-Security-Policy refused (scripts added this way
    # are the browser's own, outside the page's CSP)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CSP_RECORDER})
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def run_dir(request: pytest.FixtureRequest) -> Path:
    chosen = os.environ.get("NEXTPAGE_WEBAPP_RUN")
    return Path(chosen) if chosen else request.getfixturevalue("webapp_run_dir")


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def test_network_click_recommendations_and_impact(browser, run_dir: Path, tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shots = Path(os.environ.get("NEXTPAGE_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    app = create_app(run_dir)
    run = next(iter(state(app).recommenders.values())).run
    wait = WebDriverWait(browser, WAIT_S)
    with BackgroundServer(app) as server:
        browser.get(server.url)
        wait.until(lambda d: d.find_element(By.ID, "app").get_attribute("data-ready") == "true")
        nodes = browser.find_elements(By.CSS_SELECTOR, "#network circle.node")
        assert sorted(n.get_attribute("data-group") for n in nodes) == sorted(run.vocab.groups)

        # the threshold hides weak transitions: all shown at 0, fewer at 30 %
        def shown_at(threshold: float) -> tuple[int, int]:
            browser.execute_script(
                "const t = document.getElementById('threshold'); t.value = arguments[0];"
                "t.dispatchEvent(new Event('input'));",
                threshold,
            )
            text = browser.find_element(By.ID, "edge-count").text
            shown, total = map(int, re.match(r"(\d+) of (\d+)", text).groups())
            visible = browser.execute_script(
                "return document.querySelectorAll('#network path.edge:not(.hidden)').length"
            )
            assert visible == shown
            return shown, total

        everything, total = shown_at(0.0)
        assert everything == total == len(run.network.to_json(run.vocab)["edges"])
        strong, _ = shown_at(0.3)
        between = run.network.probs[:, :-1][~np.eye(len(run.vocab.groups), dtype=bool)]
        assert strong == int((between >= 0.3).sum()) < total
        shown_at(0.05)

        group = (
            "basket"
            if "basket" in run.vocab.groups
            else run.vocab.groups[int(run.network.views.argmax())]
        )
        browser.find_element(By.CSS_SELECTOR, f'circle.node[data-group="{group}"]').click()
        recommending = [p for p in run.policies if p != "organic"]
        wait.until(
            lambda d: (
                len(d.find_elements(By.CSS_SELECTOR, "#panel tr.recommendation"))
                >= 3 * len(recommending)
            )
        )
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#path li.path-step"))
        assert browser.find_element(By.CSS_SELECTOR, "#panel h2").text == group
        # what the page shows is what the API answers for the group's most viewed page
        top_page = run.vocab.pages[int(run.network.top_page[run.vocab.groups.index(group)])]
        for policy in recommending:
            rows = browser.find_elements(
                By.CSS_SELECTOR, f'section.policy-recs[data-policy="{policy}"] tr.recommendation'
            )
            assert len(rows) == 3
            if policy == "random":  # draws anew on every request
                continue
            answer = _post(
                server.url + "api/recommend", {"history": [top_page], "k": 3, "policy": policy}
            )
            assert [r.get_attribute("data-page") for r in rows] == [
                r["page"] or r["page_group"] for r in answer["recommendations"]
            ]
            for row, rec in zip(rows, answer["recommendations"], strict=True):
                follow = row.find_elements(By.TAG_NAME, "td")[2].text
                assert follow.startswith(f"{100 * rec['follow_probability']:.1f} %")
        browser.save_screenshot(str(shots / "webapp.png"))
        assert browser.execute_script("return window.__csp") == []  # the CSP holds the page

        browser.get(server.url + "impact")
        table = wait.until(lambda d: d.find_element(By.ID, "impact-table"))
        if run.worlds:
            world = run.worlds[0]
            policies = {r["policy"] for r in run.results["records"] if r["world"] == world}
            rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
            assert {r.get_attribute("data-policy") for r in rows} == policies
            assert len(browser.find_elements(By.CSS_SELECTOR, "figure.chart svg")) == 4
        browser.save_screenshot(str(shots / "webapp_impact.png"))
        assert browser.execute_script("return window.__csp") == []
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        # the policy is in force and the recorder sees it: an inline style is refused
        browser.execute_script("document.body.setAttribute('style', 'color: red')")
        wait.until(lambda d: d.execute_script("return window.__csp.length") > 0)
        assert browser.execute_script("return window.__csp") == ["style-src-attr inline"]
    assert (shots / "webapp.png").stat().st_size > 10_000
