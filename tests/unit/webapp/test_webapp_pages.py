"""The web app's HTML pages: local assets only, the security headers and CSP on every
answer, and the impact page (results against organic, its table and chart geometry)."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient

from agents.evaluate import ratio_ci
from tests.webapp_support import REPO
from webapp import create_app, views
from webapp.app import CONTENT_SECURITY_POLICY, SECURITY_HEADERS, state
from webapp.impact import METRICS, Metric, _ticks, bar_chart, impact_rows, records_for

# ---- pages -----------------------------------------------------------------------------------


def _urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', html)


def test_network_page_uses_local_assets_only(client: FlaskClient, webapp_run_dir: Path):
    answer = client.get("/")
    html = answer.get_data(as_text=True)
    assert answer.status_code == 200 and 'id="network"' in html
    assert f'data-run="{webapp_run_dir.name}"' in html and 'id="threshold"' in html
    urls = _urls(html)
    assert "/static/network.js" in urls and "/static/style.css" in urls
    assert all(u.startswith(("/", "data:")) for u in urls), urls
    for asset, kind in (
        ("network.js", "javascript"),
        ("common.js", "javascript"),
        ("style.css", "text/css"),
    ):
        static = client.get(f"/static/{asset}")
        assert static.status_code == 200 and kind in static.content_type
        # no CDN, no font service: the only URL is the SVG namespace's name
        assert set(re.findall(r"https?://[^\s\"')]+", static.get_data(as_text=True))) <= {
            "http://www.w3.org/2000/svg"
        }
        static.close()


def test_every_answer_carries_the_security_headers(client: FlaskClient):
    answers = [
        client.get("/"),
        client.get("/impact"),
        client.get("/?run=nope"),
        client.get("/static/network.js"),
        client.get("/api/health"),
        client.get("/api/nothing"),
        client.post("/api/recommend", json={}),
    ]
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers[name] == value, (answer.request.path, name)
        answer.close()
    csp = dict(d.strip().split(" ", 1) for d in CONTENT_SECURITY_POLICY.split(";"))
    assert csp["default-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
    assert csp["script-src"] == csp["style-src"] == csp["connect-src"] == "'self'"


def test_pages_satisfy_the_csp_without_inline_code(client: FlaskClient):
    # script-src/style-src 'self' without 'unsafe-inline': no inline <script>, <style>,
    # style="" or on...="" handlers, no javascript: URLs in the pages; the scripts never set
    # a style attribute (the CSSOM is allowed)
    for answer in (client.get("/"), client.get("/impact")):
        html = answer.get_data(as_text=True)
        assert answer.status_code == 200
        scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
        assert scripts and all('src="/static/' in a and not body.strip() for a, body in scripts)
        assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=|javascript:", html, re.I), html
    for asset in ("network.js", "common.js"):
        js = (REPO / "webapp" / "static" / asset).read_text()
        assert not re.search(r"setAttribute\(\s*[\"']style|\bstyle:\s|innerHTML|eval\(", js)


def _row(html: str, policy: str) -> str:
    match = re.search(rf'<tr data-policy="{policy}".*?</tr>', html, re.S)
    assert match, policy
    return match.group(0)


def _cell(row: str, metric: str, delta: bool = False) -> str:
    cls = "num delta" if delta else "num"
    match = re.search(rf'<td class="{cls}" data-metric="{metric}">([^<]*)</td>', row)
    assert match, (metric, delta)
    return match.group(1)


def test_impact_table_shows_the_results_against_organic(client: FlaskClient, run):
    answer = client.get("/impact?world=ground_truth")
    html = answer.get_data(as_text=True)
    assert answer.status_code == 200 and _urls(html)
    records = {r["policy"]: r for r in run.results["records"] if r["world"] == "ground_truth"}
    organic = records["organic"]
    for policy, r in records.items():
        row = _row(html, policy)
        assert _cell(row, "mean_return") == f"{r['mean_return']:.2f} ± {r['ci95']:.2f}"
        assert (
            _cell(row, "bounce_rate") == f"{100 * r['bounce_rate']:.1f} ± "
            f"{100 * r['bounce_ci95']:.1f} %"
        )
        assert _cell(row, "time_on_page_s") == f"{r['time_on_page_s']:.1f} s"
        # the money, next to conversion: revenue per session ± its 95 % half-width
        assert _cell(row, "revenue_per_session") == (
            f"{r['revenue_per_session']:.2f} ± {r['revenue_ci95']:.2f}"
        )
        if policy == "organic":
            assert _cell(row, "mean_return", delta=True) == ""
            assert _cell(row, "revenue_per_session", delta=True) == ""
            continue
        assert _cell(row, "mean_return", delta=True) == (
            f"{r['uplift_pct']:+.1f} % ± {r['uplift_ci95']:.1f}"
        )
        uplift, half = ratio_ci(
            r["revenue_per_session"],
            r["revenue_ci95"],
            organic["revenue_per_session"],
            organic["revenue_ci95"],
        )
        assert _cell(row, "revenue_per_session", delta=True) == f"{uplift:+.1f} % ± {half:.1f}"
        conv = 100 * (r["conversion_rate"] - organic["conversion_rate"])
        ci = 100 * math.hypot(r["conversion_ci95"], organic["conversion_ci95"])
        assert _cell(row, "conversion_rate", delta=True) == f"{conv:+.1f} pp ± {ci:.1f}"
    # one chart per metric, one bar per policy
    assert html.count('<figure class="chart"') == 5
    assert html.count('class="bar ') + html.count('class="bar"') == 5 * len(records)
    assert '<figure class="chart" data-metric="revenue_per_session">' in html
    assert client.get("/impact?world=learned").status_code == 200
    assert client.get("/impact").get_data(as_text=True).count("ground_truth") >= 1


def test_impact_rejects_worlds_the_run_has_not(client: FlaskClient):
    answer = client.get("/impact?world=held_out")
    html = answer.get_data(as_text=True)
    assert answer.status_code == 400 and "unknown world &#39;held_out&#39;" in html
    assert client.get("/?run=nope").status_code == 400


def test_impact_without_results_names_the_command(webapp_run_dir: Path, tmp_path: Path):
    copy = tmp_path / "unevaluated"
    shutil.copytree(webapp_run_dir, copy, ignore=shutil.ignore_patterns("eval"))
    html = create_app(copy).test_client().get("/impact").get_data(as_text=True)
    assert 'id="no-results"' in html
    assert "python scripts/pipeline.py out_dir=&lt;the run folder&gt;" in html
    assert "<code>unevaluated</code>" in html and str(tmp_path) not in html  # no path


def test_impact_rows_and_chart_geometry():
    records = [
        {
            "policy": "vi",
            "world": "w",
            "mean_return": 12.0,
            "ci95": 1.0,
            "bounce_rate": 0.4,
            "bounce_ci95": 0.03,
            "conversion_rate": 0.02,
            "conversion_ci95": 0.004,
            "time_on_page_s": 40.0,
            "revenue_per_session": 3.0,
            "revenue_ci95": 0.3,
            "uplift_pct": 20.0,
            "uplift_ci95": 12.5,
            "n_sessions": 1000,
        },
        {
            "policy": "organic",
            "world": "w",
            "mean_return": 10.0,
            "ci95": 1.0,
            "bounce_rate": 0.5,
            "bounce_ci95": 0.04,
            "conversion_rate": 0.01,
            "conversion_ci95": 0.003,
            "time_on_page_s": 38.0,
            "revenue_per_session": 2.0,
            "revenue_ci95": 0.2,
            "uplift_pct": 0.0,
            "uplift_ci95": 0.0,
            "n_sessions": 1000,
        },
    ]
    ordered = records_for({"records": records}, "w")
    assert [r["policy"] for r in ordered] == ["organic", "vi"]
    vi = impact_rows(ordered)[1]["cells"]
    # revenue: +50 % ± 100 · 1.5 · √(0.1² + 0.1²) = 21.2
    assert [c["delta_text"] for c in vi] == [
        "+20.0 % ± 12.5",
        "+50.0 % ± 21.2",
        "+1.0 pp ± 0.5",
        "-10.0 pp ± 5.0",
        "+2.0 s",
    ]
    chart = bar_chart(ordered, METRICS[0])
    organic, best = chart["bars"]
    # the axis spans 0 to the highest whisker (13): x = 130 + 310 · value / 13.0
    assert organic["x"] == pytest.approx(130.0) and chart["organic_x"] == pytest.approx(
        130 + 310 * 10 / 13
    )
    assert best["hi_x"] == pytest.approx(440.0) and best["lo_x"] == pytest.approx(
        130 + 310 * 11 / 13
    )
    assert _ticks(0.0, 13.0) == [0.0, 5.0, 10.0]
    assert Metric("x", None, "x", "%").show(0.1234, 0.01) == "12.3 ± 1.0 %"


# ---- the reward, the money, the intervals, what was played ----------------------------------


@pytest.fixture
def own_app(webapp_run_dir: Path):
    """An app of its own, for tests that change its loaded run in memory."""
    return create_app(webapp_run_dir)


def _own_run(app):
    return next(iter(state(app).recommenders.values())).run


def test_impact_labels_the_return_by_the_runs_reward(own_app):
    from webapp.impact import metrics_for

    html = own_app.test_client().get("/impact").get_data(as_text=True)
    assert "<figcaption>Return: page value per session</figcaption>" in html
    assert "shaping signal, not money earned" in html  # what a page-value return sums
    run = _own_run(own_app)
    run.results["config"]["env"]["reward"] = "engagement"  # a site without revenue
    run.site.env["reward"] = "engagement"
    client = own_app.test_client()
    html = client.get("/impact").get_data(as_text=True)
    assert "page value per session" not in html.lower()
    assert "<figcaption>Return: expected seconds per session</figcaption>" in html
    assert [m.label for m in metrics_for("pageviews")][:2] == [
        "Return: page views per session (after the first)",
        "Revenue per session",
    ]
    # the network page and the API name the reward too
    network = client.get("/").get_data(as_text=True)
    assert 'data-reward="engagement" data-reward-name="seconds on the page"' in network
    assert client.get("/api/policies").get_json()["reward"] == "engagement"
    path = client.post("/api/path", json={"history": ["/home"], "steps": 2}).get_json()
    assert path["reward"] == "engagement" and path["reward_sum"] == path["value"]


def test_impact_says_what_its_intervals_cover(client: FlaskClient):
    html = client.get("/impact").get_data(as_text=True)
    notes = re.search(r'<p class="muted small" id="interval-notes">(.*?)</p>', html, re.S)
    assert notes, "no note on the intervals"
    text = " ".join(notes.group(1).split())
    assert "pooled" in text and "training seed" in text and "organic's own seeds" in text


def test_impact_sessions_per_seed_is_what_each_seed_played(client: FlaskClient, run):
    # the tiny run asks 300 sessions per seed; 256 visitors together play 512
    assert run.results["config"]["n_sessions"] == 300
    html = client.get("/impact").get_data(as_text=True)
    shown = re.search(r"([\d,]+) sessions per seed", html).group(1)
    record = next(r for r in run.results["records"] if r["world"] == run.worlds[0])
    assert int(shown.replace(",", "")) == record["n_sessions"] // len(record["seeds"]) == 512


def test_network_page_asks_for_no_more_pages_than_can_be_recommended(own_app):
    client = own_app.test_client()
    assert 'data-k="3"' in client.get("/").get_data(as_text=True)
    js = (REPO / "webapp" / "static" / "network.js").read_text()
    assert "app.dataset.k" in js and "k: K" in js  # the page sends the k it was given
    # a site whose actions show two pages only (the rest show nothing)
    rec = next(iter(state(own_app).recommenders.values()))
    pages = rec.action_pages.copy()
    shown = np.flatnonzero(pages >= 0)
    pages[shown[2:]] = -1
    rec.action_pages = pages
    assert rec.n_recommendable == 2
    assert 'data-k="2"' in client.get("/").get_data(as_text=True)
    answer = client.post("/api/recommend", json={"history": ["/home"], "k": 2, "policy": "greedy"})
    assert answer.status_code == 200, answer.get_json()
    assert [views.ui_k(n) for n in (0, 1, 2, 3, 50)] == [1, 1, 2, 3, 3]


def test_network_page_marks_stale_results_and_prefers_fresh_ones(own_app):
    run = _own_run(own_app)
    client = own_app.test_client()
    best = run.default_policy
    html = client.get("/").get_data(as_text=True)
    assert 'id="stale-results"' not in html
    # the best policy's folder was remade after the evaluation
    run.stale = {f"agents/{best}/seed_0": "remade after the evaluation"}
    del run.__dict__["default_policy"]  # a cached property: computed again
    assert run.default_policy != best
    html = client.get("/").get_data(as_text=True)
    assert 'id="stale-results"' in html and f"<code>agents/{best}/seed_0</code>" in html
    assert f'data-default-policy="{run.default_policy}"' in html
    stale = {
        p["name"]: p["results_stale"] for p in client.get("/api/policies").get_json()["policies"]
    }
    assert stale[best] and not stale[run.default_policy]
    js = (REPO / "webapp" / "static" / "network.js").read_text()
    assert "results_stale" in js  # the page orders and marks them
