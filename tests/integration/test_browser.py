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


def shown_pct(p: float) -> str:
    """A probability as ``network.js``' ``pct`` shows it: 1 decimal from 1 %, 2 significant
    digits below, then the exponent form (``3.5e-3 %``)."""
    v = 100 * p
    if v == 0:
        return "0 %"
    if abs(v) >= 1:
        return f"{v:.1f} %"
    if abs(v) >= 0.01:
        return f"{v:#.2g} %"
    mantissa, exponent = f"{v:.1e}".split("e")
    return f"{mantissa}e{int(exponent)} %"


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
                assert follow.startswith(shown_pct(rec["follow_probability"]))
        # the path is the likeliest, not the most valuable; its sum is named by the reward
        assert browser.find_element(By.CSS_SELECTOR, "#path h3").text.startswith(
            "Likeliest path under "
        )
        reward_name = browser.find_element(By.ID, "app").get_attribute("data-reward-name")
        assert f"reward ({reward_name})" in browser.find_element(By.ID, "path-sum").text
        assert "page value" not in browser.find_element(By.ID, "organic").text or (
            reward_name == "page value"
        )
        # data strings are isolated: a bidi control in a name cannot reorder the text around it
        isolated = browser.execute_script(
            "return ['#panel h2', '#network text.label', '#panel td.page', '#page-select option']"
            ".map(s => getComputedStyle(document.querySelector(s)).unicodeBidi)"
        )
        assert isolated == ["isolate"] * 4
        option = browser.find_element(By.CSS_SELECTOR, "#page-select option")
        assert option.get_attribute("textContent").startswith("\u2068")
        browser.save_screenshot(str(shots / "webapp.png"))
        assert browser.execute_script("return window.__csp") == []  # the CSP holds the page

        browser.get(server.url + "impact")
        table = wait.until(lambda d: d.find_element(By.ID, "impact-table"))
        if run.worlds:
            world = run.worlds[0]
            policies = {r["policy"] for r in run.results["records"] if r["world"] == world}
            rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
            assert {r.get_attribute("data-policy") for r in rows} == policies
            assert len(browser.find_elements(By.CSS_SELECTOR, "figure.chart svg")) == 5
        browser.save_screenshot(str(shots / "webapp_impact.png"))
        assert browser.execute_script("return window.__csp") == []
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        # the policy is in force and the recorder sees it: an inline style is refused
        browser.execute_script("document.body.setAttribute('style', 'color: red')")
        wait.until(lambda d: d.execute_script("return window.__csp.length") > 0)
        assert browser.execute_script("return window.__csp") == ["style-src-attr inline"]
    assert (shots / "webapp.png").stat().st_size > 10_000


# what the page fetches, changed in the browser: a network of many groups (``groups``), and a
# page list longer than the panel shows (``extra`` pages with no views)
FETCH_STUB = """
(function () {
  const G = %d, EXTRA = %d, real = window.fetch.bind(window);
  const answer = function (body) {
    return new Response(JSON.stringify(body), { headers: { "Content-Type": "application/json" } });
  };
  window.fetch = function (url, opts) {
    const u = String(url);
    if (G && u.startsWith("/api/network")) {
      const nodes = [], edges = [];
      for (let i = 0; i < G; i++) {
        nodes.push({ id: i, name: "group " + i, views: 1 + (i * 7919) %% 1000, page_value: 5 + (i %% 50),
          n_pages: 3, top_page: "/home", stay_probability: 0.1, exit_probability: 0.3 });
      }
      for (let i = 0; i < 14 * G; i++) {
        const s = (i * 31) %% G, t = (i * 17 + 5) %% G;
        if (s !== t) edges.push({ source: s, target: t, probability: 0.01 * (1 + i %% 7), count: 3 });
      }
      return Promise.resolve(answer({ nodes: nodes, edges: edges, exit: "EXIT" }));
    }
    if (EXTRA && u.startsWith("/api/pages")) {
      return real(url, opts).then(function (r) { return r.json(); }).then(function (j) {
        for (let i = 0; i < EXTRA; i++) {
          j.pages.push({ page: "/extra/" + i, page_id: 100000 + i, page_group: "x", pageviews: 0 });
        }
        return answer(j);
      });
    }
    return real(url, opts);
  };
})();
"""

READY_MS = """
const done = arguments[0];
(function poll() {
  if (document.getElementById("app").dataset.ready) done(performance.now());
  else setTimeout(poll, 20);
})();
"""


@pytest.mark.parametrize("groups", [1000, 2000])
def test_a_network_of_many_groups_draws_the_most_viewed_quickly(
    browser, webapp_run_dir: Path, groups: int
):
    """Above 150 groups only the 150 most viewed are drawn, with a notice of how many are
    hidden and a list of every group (the layout of all 1,000 took 2.2 s, of 2,000 8.3 s)."""
    from selenium.webdriver.common.by import By

    browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": FETCH_STUB % (groups, 0)}
    )
    browser.set_script_timeout(60)
    with BackgroundServer(create_app(webapp_run_dir)) as server:
        browser.get(server.url)
        ready_ms = browser.execute_async_script(READY_MS)
        drawn = browser.find_elements(By.CSS_SELECTOR, "#network circle.node")
        assert len(drawn) == 150
        notice = browser.find_element(By.ID, "group-notice").text
        assert f"150 most viewed of {groups:,} page groups: {groups - 150:,} hidden" in notice
        options = browser.find_elements(By.CSS_SELECTOR, "#group-select option")
        assert len(options) == groups + 1
        # the legend's ends are the colours' ends: the smallest drawn value is the ramp's start
        legend = browser.find_element(By.ID, "legend").text
        circles = browser.execute_script(
            "return Array.from(document.querySelectorAll('circle.node'),"
            " c => [+c.getAttribute('data-id'), c.getAttribute('fill')])"
        )
        lowest = min(5 + i % 50 for i, _ in circles)  # the stub's page values
        assert legend.startswith(f"GA page value {lowest:.2f}")
        assert "rgb(68,1,84)" in {fill for _, fill in circles}
        assert ready_ms < 2000, f"ready {ready_ms:.0f} ms after navigation start"


def test_the_page_list_says_how_many_pages_it_leaves_out(browser, webapp_run_dir: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": FETCH_STUB % (0, 60)}
    )
    app = create_app(webapp_run_dir)
    run = next(iter(state(app).recommenders.values())).run
    wait = WebDriverWait(browser, WAIT_S)
    with BackgroundServer(app) as server:
        browser.get(server.url)
        wait.until(lambda d: d.find_element(By.ID, "app").get_attribute("data-ready") == "true")
        group = run.vocab.groups[int(run.network.views.argmax())]
        browser.find_element(By.CSS_SELECTOR, f'circle.node[data-group="{group}"]').click()
        note = wait.until(lambda d: d.find_element(By.ID, "page-count"))
        n_pages = int(run.network.n_pages[run.vocab.groups.index(group)])
        assert note.text == f"50 of {n_pages + 60} pages listed (the most viewed)"
        assert len(browser.find_elements(By.CSS_SELECTOR, "#page-select option")) == 50
