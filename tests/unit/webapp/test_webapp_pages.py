"""The web app's HTML pages: local assets only, the security headers and CSP on every
answer, and the impact page (results against organic, its table and chart geometry)."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from tests.webapp_support import REPO
from webapp import create_app
from webapp.app import CONTENT_SECURITY_POLICY, SECURITY_HEADERS
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
        if policy == "organic":
            assert _cell(row, "mean_return", delta=True) == ""
            continue
        assert _cell(row, "mean_return", delta=True) == (
            f"{r['uplift_pct']:+.1f} % ± {r['uplift_ci95']:.1f}"
        )
        conv = 100 * (r["conversion_rate"] - organic["conversion_rate"])
        ci = 100 * math.hypot(r["conversion_ci95"], organic["conversion_ci95"])
        assert _cell(row, "conversion_rate", delta=True) == f"{conv:+.1f} pp ± {ci:.1f}"
    # one chart per metric, one bar per policy
    assert html.count('<figure class="chart"') == 4
    assert html.count('class="bar ') + html.count('class="bar"') == 4 * len(records)
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
            "uplift_pct": 0.0,
            "uplift_ci95": 14.1,
            "n_sessions": 1000,
        },
    ]
    ordered = records_for({"records": records}, "w")
    assert [r["policy"] for r in ordered] == ["organic", "vi"]
    vi = impact_rows(ordered)[1]["cells"]
    assert [c["delta_text"] for c in vi] == [
        "+20.0 % ± 12.5",
        "+2.0 s",
        "-10.0 pp ± 5.0",
        "+1.0 pp ± 0.5",
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
