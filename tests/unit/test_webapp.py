"""The web app over a tiny but complete pipeline run (``webapp_run_dir``): every route, every
bad request, and the numbers (follow probabilities and expected values by hand from the
first-order tables, the GRU's own probabilities, the network counted again from the hits)."""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flask import Flask
from flask.testing import FlaskClient

from clickstream.errors import ClickstreamError
from tests.hydra_configs import compose_cfg, reseal
from webapp import create_app
from webapp.api import json_depth
from webapp.app import CONTENT_SECURITY_POLICY, SECURITY_HEADERS, state
from webapp.artefacts import RunArtefacts, load_run
from webapp.impact import METRICS, Metric, _ticks, bar_chart, impact_rows, records_for
from webapp.recommend import PageResolver
from webapp.server import BackgroundServer, Limits, listen

REPO = Path(__file__).resolve().parents[2]
POLICIES = ["greedy", "organic", "ppo", "value_iteration"]


@pytest.fixture(scope="module")
def app(webapp_run_dir: Path) -> Flask:
    return create_app(webapp_run_dir)


@pytest.fixture(scope="module")
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="module")
def run(app: Flask) -> RunArtefacts:
    return next(iter(state(app).recommenders.values())).run


@pytest.fixture(scope="module")
def markov(webapp_run_dir: Path) -> FlaskClient:
    """The app with first-order next-page rows: answers computable by hand from the tables."""
    return create_app(webapp_run_dir, visitor_model="markov").test_client()


@pytest.fixture(scope="module")
def tables(run: RunArtefacts) -> dict[str, np.ndarray]:
    """The first-order rows ``(P, P + 1)``, the reward ``(P + 1,)`` and ``e^β``."""
    beta = run.results["config"]["env"]["click_params"]["boost"]["beta"]
    return {
        "T": run.site.markov.transitions.double().numpy(),
        "r": np.r_[run.catalog["page_value"].to_numpy(np.float64), 0.0],
        "boost": math.exp(beta),
    }


def post(client: FlaskClient, url: str, body: dict) -> dict:
    answer = client.post(url, json=body)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


# ---- GET routes ------------------------------------------------------------------------------


def test_health_names_the_run_its_policies_and_sizes(client: FlaskClient, webapp_run_dir: Path):
    body = client.get("/api/health").get_json()
    assert body["status"] == "ok" and body["default_run"] == webapp_run_dir.name
    (run,) = body["runs"]
    assert run["policies"] == POLICIES and run["skipped"] == {}
    assert "run_dir" not in run  # the run's name, never a path of this machine
    assert str(webapp_run_dir.parent) not in json.dumps(body)
    assert (run["pages"], run["page_groups"], run["actions"]) == (50, 15, 51)  # 50 + nothing
    assert run["visitor_model"] == "gru" and run["evaluated"] is True


def test_policies_lists_each_once_with_the_best_as_default(client: FlaskClient, run):
    body = client.get("/api/policies").get_json()
    assert [p["name"] for p in body["policies"]] == POLICIES
    assert [p["baseline"] for p in body["policies"]] == [False, True, False, False]
    assert all(p["seed"] == 0 and p["seeds"] == [0] for p in body["policies"])
    assert body["actions"] == {"level": "page", "count": 51, "show_nothing": True, "history_len": 4}
    truth = [
        r
        for r in run.results["records"]
        if r["world"] == "ground_truth" and r["policy"] != "organic"
    ]
    assert body["default"] == max(truth, key=lambda r: r["mean_return"])["policy"]


def test_pages_are_the_catalog_in_id_order(client: FlaskClient, run):
    body = client.get("/api/pages").get_json()
    assert body["n_pages"] == 50 and len(body["pages"]) == 50
    assert [p["page_id"] for p in body["pages"]] == list(range(50))
    assert [p["page"] for p in body["pages"]] == list(run.vocab.pages)
    assert [p["pageviews"] for p in body["pages"]] == run.catalog["pageviews"].tolist()
    checkout = client.get("/api/pages?group=checkout").get_json()["pages"]
    assert [p["page"] for p in checkout] == ["/yourinfo.html", "/payment.html", "/revieworder.html"]


def test_network_is_the_train_split_counted_again(client: FlaskClient, run, webapp_run_dir):
    # an independent count with pandas from hits.parquet
    hits = pd.read_parquet(
        webapp_run_dir / "data" / "hits.parquet",
        columns=["session_id", "step", "page_group", "split"],
    )
    hits = hits[hits["split"] == "train"].sort_values(["session_id", "step"], kind="stable")
    nxt = hits.groupby("session_id")["page_group"].shift(-1).fillna("EXIT")
    pairs = pd.crosstab(hits["page_group"].to_numpy(), nxt.to_numpy())
    body = client.get("/api/network").get_json()
    names = [n["name"] for n in body["nodes"]]
    assert names == list(run.vocab.groups)
    assert sum(n["views"] for n in body["nodes"]) == len(hits)
    for edge in body["edges"]:
        src, dst = names[edge["source"]], names[edge["target"]]
        assert src != dst and edge["count"] == pairs.loc[src, dst]
        assert edge["probability"] == pytest.approx(pairs.loc[src, dst] / pairs.loc[src].sum())
    for node in body["nodes"]:
        out = sum(e["probability"] for e in body["edges"] if e["source"] == node["id"])
        assert out + node["stay_probability"] + node["exit_probability"] == pytest.approx(1.0)
        assert node["exit_probability"] == pytest.approx(
            pairs.loc[node["name"], "EXIT"] / pairs.loc[node["name"]].sum()
        )
        assert node["views"] == (hits["page_group"] == node["name"]).sum()
    groups = pd.read_parquet(webapp_run_dir / "data" / "groups.parquet")
    value = dict(zip(groups["page_group"], groups["page_value"], strict=True))
    assert [n["page_value"] for n in body["nodes"]] == [value[n] for n in names]
    # the most viewed page of each group in training
    views = hits.merge(
        pd.read_parquet(
            webapp_run_dir / "data" / "hits.parquet", columns=["session_id", "step", "page"]
        )
    )
    top = views.groupby("page_group")["page"].agg(lambda s: s.value_counts().index[0])
    assert all(n["top_page"] == top[n["name"]] for n in body["nodes"])


# ---- POST /api/recommend: the numbers -------------------------------------------------------


@pytest.mark.parametrize("policy", ["greedy", "ppo", "value_iteration"])
def test_recommendations_are_top_k_by_score_with_probabilities(client: FlaskClient, run, policy):
    r_max = float(run.catalog["page_value"].max())
    for page in run.vocab.pages[:12]:
        body = post(client, "/api/recommend", {"history": [page], "k": 3, "policy": policy})
        recs = body["recommendations"]
        assert [r["rank"] for r in recs] == [1, 2, 3]
        scores = [r["score"] for r in recs]
        assert scores == sorted(scores, reverse=True)
        assert page not in [r["page"] for r in recs]
        for r in recs:
            assert 0.0 <= r["organic_probability"] <= r["follow_probability"] <= 1.0  # β > 0
            assert 0.0 <= r["expected_value"] <= r_max
        assert 0.0 <= body["organic"]["exit_probability"] <= 1.0 and body["warnings"] == []
        # tables never prefer "show nothing"; a PPO of one rollout may, and still ranks pages
        assert body["prefers_nothing"] is (policy == "ppo" and body["prefers_nothing"])


def test_expected_values_by_hand_from_the_first_order_tables(markov: FlaskClient, run, tables):
    T, r, e = tables["T"], tables["r"], tables["boost"]
    for i in (0, 5, 23, 46):
        body = post(
            markov,
            "/api/recommend",
            {"history": [run.vocab.pages[i]], "k": 3, "policy": "value_iteration"},
        )
        p = T[i]
        assert body["organic"]["expected_value"] == pytest.approx(p @ r, rel=1e-6)
        assert body["organic"]["exit_probability"] == pytest.approx(p[50], rel=1e-12)
        for rec in body["recommendations"]:
            a = rec["page_id"]
            # multinomial boost: p'(j) = p(j) e^{β[j=a]} / (1 + (e^β - 1) p(a))
            norm = 1.0 + (e - 1.0) * p[a]
            assert rec["organic_probability"] == pytest.approx(p[a], rel=1e-12)
            assert rec["follow_probability"] == pytest.approx(p[a] * e / norm, rel=1e-12)
            assert rec["expected_value"] == pytest.approx(
                (p @ r + (e - 1.0) * p[a] * r[a]) / norm, rel=1e-6
            )


def test_latent_class_runs_boost_each_visitor_type_apart(webapp_run_dir, run, tables, tmp_path):
    import shutil

    from envs.latent_class import LatentClassConfig, LatentClassModel

    copy = tmp_path / "run"
    shutil.copytree(webapp_run_dir, copy)
    vocab = run.vocab
    model = LatentClassModel.fit(
        run.site.data.splits["train"],
        vocab.page_group,
        vocab.pages,
        LatentClassConfig(classes=2, restarts=1, iters=60),
    )
    model.save(copy / "data" / "simulator" / "latent_class.npz")
    reseal(copy / "data" / "simulator")
    client = create_app(copy, visitor_model="latent_class").test_client()
    assert client.get("/api/health").get_json()["runs"][0]["visitor_model"] == "latent_class"
    r, e = tables["r"], tables["boost"]
    apart_differs = False
    for history in ([0], [3, 0], [5, 23, 1]):
        body = post(
            client,
            "/api/recommend",
            {"history": [vocab.pages[i] for i in history], "k": 3, "policy": "value_iteration"},
        )
        w = model.session_type_posterior(np.array(history))
        rows = model.transitions[:, history[-1]]
        mix = w @ rows
        assert body["organic"]["exit_probability"] == pytest.approx(mix[-1], rel=1e-12)
        assert body["organic"]["expected_value"] == pytest.approx(mix @ r, rel=1e-6)
        for rec in body["recommendations"]:
            a = rec["page_id"]
            norm = 1.0 + (e - 1.0) * rows[:, a]  # one per type
            assert rec["organic_probability"] == pytest.approx(mix[a], rel=1e-12)
            assert rec["follow_probability"] == pytest.approx(
                w @ (rows[:, a] * e / norm), rel=1e-12
            )
            assert rec["expected_value"] == pytest.approx(
                w @ ((rows @ r + (e - 1.0) * rows[:, a] * r[a]) / norm), rel=1e-6
            )
            boosted_mix = mix[a] * e / (1.0 + (e - 1.0) * mix[a])
            apart_differs |= abs(rec["follow_probability"] - boosted_mix) > 1e-6
    assert apart_differs  # not the boost of the mixed row


def test_greedy_scores_are_the_first_order_expected_values(markov: FlaskClient, run):
    # greedy ranks by the expected reward of the next step on the same tables
    for page in run.vocab.pages[:20]:
        body = post(markov, "/api/recommend", {"history": [page], "k": 5, "policy": "greedy"})
        for rec in body["recommendations"]:
            assert rec["expected_value"] == pytest.approx(rec["score"], rel=1e-9)


def test_value_iteration_ranks_by_its_q_table(client: FlaskClient, run, webapp_run_dir):
    q = np.load(webapp_run_dir / "agents" / "value_iteration" / "seed_0" / "scores.npy")
    for i in (0, 4, 35):
        row = q[i, :50].copy()  # the last action shows nothing
        row[i] = -np.inf
        want = np.argsort(-row, kind="stable")[:4].tolist()
        body = post(
            client,
            "/api/recommend",
            {"history": [run.vocab.pages[i]], "k": 4, "policy": "value_iteration"},
        )
        assert [rec["page_id"] for rec in body["recommendations"]] == want
        assert [rec["score"] for rec in body["recommendations"]] == pytest.approx(row[want])


def test_gru_answers_use_the_visitor_models_own_probabilities(client, run, tables):
    from envs.visitor_model import VisitorModel

    model = VisitorModel.load(run.run_dir / "data" / "simulator" / "model.pt")
    history = ["/home", "/google+redesign/apparel", "/basket.html"]
    probs = dict(model.predict_next(history, k=51))
    e, r = tables["boost"], tables["r"]
    body = post(client, "/api/recommend", {"history": history, "k": 5, "policy": "greedy"})
    p = np.array([probs[name] for name in run.vocab.labels()], dtype=np.float64)
    p /= p.sum()
    assert body["organic"]["exit_probability"] == pytest.approx(p[50], abs=1e-6)
    for rec in body["recommendations"]:
        pa = probs[rec["page"]]
        assert rec["organic_probability"] == pytest.approx(pa, abs=1e-6)
        assert rec["follow_probability"] == pytest.approx(pa * e / (1 + (e - 1) * pa), abs=1e-6)
        a = rec["page_id"]
        assert rec["expected_value"] == pytest.approx(
            (p @ r + (e - 1) * p[a] * r[a]) / (1 + (e - 1) * p[a]), rel=1e-5
        )


def test_observation_is_the_env_window_padded_with_no_page(client: FlaskClient, run):
    pages = run.vocab.pages
    long = post(client, "/api/recommend", {"history": list(pages[:6]), "policy": "ppo"})
    assert long["observation"] == [2, 3, 4, 5] and long["k"] == 3
    short = post(client, "/api/recommend", {"history": [pages[7], pages[9]], "policy": "ppo"})
    assert short["observation"] == [50, 50, 7, 9]
    assert short["current_page"]["page_id"] == 9


def test_organic_prefers_nothing(client: FlaskClient):
    body = post(client, "/api/recommend", {"history": ["/home"], "policy": "organic"})
    assert body["prefers_nothing"] is True
    body = post(client, "/api/recommend", {"history": ["/home"], "policy": "value_iteration"})
    assert body["prefers_nothing"] is False


def test_default_policy_and_k(client: FlaskClient, run):
    body = post(client, "/api/recommend", {"history": ["/home"]})
    assert body["policy"] == run.default_policy and len(body["recommendations"]) == 3
    k20 = post(client, "/api/recommend", {"history": ["/home"], "k": 20, "policy": "ppo"})
    assert len(k20["recommendations"]) == 20


def test_answers_are_the_same_without_caches(webapp_run_dir: Path, client: FlaskClient):
    uncached = create_app(webapp_run_dir, cache=False).test_client()
    for policy in ("ppo", "greedy"):
        body = {"history": ["/home", "/store-search"], "k": 5, "policy": policy}
        first = post(client, "/api/recommend", body)
        assert post(client, "/api/recommend", body) == first  # from the caches
        assert post(uncached, "/api/recommend", body) == first


# ---- unknown pages ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "how", "page"),
    [
        ("/home", "exact", "/home"),
        ("/HOME/", "normalised", "/home"),
        (
            "https://shop.googlemerchandisestore.com/Basket.html?utm_source=x#top",
            "normalised",
            "/basket.html",
        ),
        ("/google redesign/apparel", "normalised", "/google+redesign/apparel"),
    ],
)
def test_pages_match_exactly_or_after_the_datasets_normalisation(client, given, how, page):
    body = post(client, "/api/recommend", {"history": [given], "policy": "greedy"})
    assert body["history"] == [
        {"input": given, "page": page, "page_id": body["history"][0]["page_id"], "how": how}
    ]
    assert body["current_page"]["page"] == page and body["warnings"] == []


@pytest.mark.parametrize(
    ("given", "group"),
    [
        ("/google+redesign/apparel/mens/unknown+tee.axd", "product"),
        ("/google+redesign/bags/unknown+shelf", "category:bags"),
    ],
)
def test_unknown_pages_map_to_their_groups_most_viewed_page(client, run, given, group):
    body = post(client, "/api/recommend", {"history": [given], "policy": "greedy"})
    gid = run.vocab.groups.index(group)
    top = run.vocab.pages[int(run.network.top_page[gid])]
    assert body["history"][0]["how"] == "group" and body["current_page"]["page"] == top
    (warning,) = body["warnings"]
    assert given in warning and group in warning and top in warning


def test_unmappable_pages_are_dropped_with_a_warning(client: FlaskClient):
    body = post(
        client, "/api/recommend", {"history": ["/no/such/page", "/home"], "policy": "greedy"}
    )
    assert [h["how"] for h in body["history"]] == ["dropped", "exact"]
    assert body["observation"] == [50, 50, 50, 0]
    assert body["warnings"] == [
        "history[0]: unknown page '/no/such/page' dropped (its group '/no' is not in this run)"
    ]


def test_unknown_page_modes(client: FlaskClient):
    product = "/google+redesign/apparel/mens/unknown+tee.axd"
    dropped = post(
        client,
        "/api/recommend",
        {"history": [product, "/home"], "policy": "greedy", "unknown": "drop"},
    )
    assert [h["how"] for h in dropped["history"]] == ["dropped", "exact"]
    strict = client.post(
        "/api/recommend",
        json={"history": ["/HOME", product], "policy": "greedy", "unknown": "error"},
    )
    assert strict.status_code == 400
    assert strict.get_json()["error"] == (
        f"history[1]: unknown page {product!r} (unknown='error'; GET /api/pages lists the pages)"
    )


def test_resolver_without_page_rules_matches_exactly(run: RunArtefacts):
    resolver = PageResolver(run.vocab, run.network.top_page, None)
    assert resolver.resolve("/home", 0).how == "exact"
    assert resolver.resolve(" /home ", 0).page_id == 0
    assert resolver.resolve("/HOME", 0).how == "dropped"


# ---- bad requests ----------------------------------------------------------------------------

BAD_BODIES = [
    ({"history": ["/home"], "policy": "nope"}, "unknown policy 'nope'; run "),
    ({"history": ["/home"], "policy": 3}, "policy must be a policy name (a string), got 3"),
    ({"history": ["/home"], "k": 0}, "k must be in [1, 20], got 0"),
    ({"history": ["/home"], "k": 21}, "k must be in [1, 20], got 21"),
    ({"history": ["/home"], "k": "3"}, "k must be an integer in [1, 20], got '3'"),
    ({"history": ["/home"], "k": True}, "k must be an integer in [1, 20], got True"),
    ({"history": ["/home"], "k": 2.0}, "k must be an integer in [1, 20], got 2.0"),
    ({"k": 3}, "missing field 'history'"),
    ({"history": "/home"}, "history must be a list of page paths"),
    ({"history": []}, "history must hold 1 to 100 pages, got 0"),
    ({"history": ["/home"] * 101}, "history must hold 1 to 100 pages, got 101"),
    ({"history": ["/home", 7]}, "history[1] must be a page path (a string), got a number"),
    ({"history": [None]}, "history[0] must be a page path (a string), got null"),
    ({"history": ["  "]}, "history[0] is an empty page path"),
    ({"history": ["/" + "a" * 2048]}, "history[0] is 2049 characters long; at most 2048"),
    ({"history": ["/home\x00"]}, "history[0] holds control characters"),
    ({"history": ["/no/such/page"]}, "no page of the history is known to run"),
    ({"history": ["/home"], "run": "nope"}, "unknown run 'nope'; this server has"),
    ({"history": ["/home"], "unknown": "maybe"}, "unknown must be one of ['map', 'drop', "),
    ({"histroy": ["/home"]}, "unknown field(s) ['histroy']; known: ['history', 'k', "),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
def test_bad_recommend_requests_say_what_is_wrong(client: FlaskClient, body, message):
    answer = client.post("/api/recommend", json=body)
    assert answer.status_code == 400 and answer.is_json
    assert message in answer.get_json()["error"]


@pytest.mark.parametrize(
    ("data", "content_type", "status", "message"),
    [
        (b'{"history": ["/home"]', "application/json", 400, "invalid JSON: Expecting"),
        (b"\xff\xfe\xfa", "application/json", 400, "invalid JSON"),
        (b"", "application/json", 400, "the request body is empty"),
        (b'["/home"]', "application/json", 400, "the body must be a JSON object, got list"),
        (
            b'{"history": ["/home"]}',
            "text/plain",
            415,
            "Content-Type must be application/json, got 'text/plain'",
        ),
        (b"history=/home", "application/x-www-form-urlencoded", 415, "Content-Type must be"),
        (b'{"history": ["/home"]}', None, 415, "Content-Type must be application/json, got 'none'"),
        (
            b'{"history": ["' + b"a" * 20_000 + b'"]}',
            "application/json",
            413,
            "request body too large: at most 16384 bytes",
        ),
        (
            b'{"history": ' + b"[" * 10_000,
            "application/json",
            400,
            "invalid JSON: arrays and objects nested deeper than 16 levels",
        ),
        (
            b'{"history": [["/home"]], "k": {"a": {"b": [[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]}}}',
            "application/json",
            400,
            "invalid JSON: arrays and objects nested deeper than 16 levels",
        ),
        (b'{"history": ["/home"]', "application/json", 400, "invalid JSON: Expecting"),
        (b'\xff\xfe{"\x00', "application/json", 400, "invalid JSON:"),
    ],
)
def test_bad_bodies_get_4xx_json(client: FlaskClient, data, content_type, status, message):
    answer = client.post("/api/recommend", data=data, content_type=content_type)
    assert answer.status_code == status and answer.is_json
    assert message in answer.get_json()["error"]


def test_json_depth_counts_brackets_outside_strings():
    assert json_depth("1") == 0 and json_depth('"[{"') == 0 and json_depth("[]") == 1
    assert json_depth('{"a": [1, {"b": "]]]["}], "c": []}') == 3
    assert json_depth(r'["\\", ["a\"[", [[]]]]') == 4  # escaped quotes and backslashes
    assert json_depth("[" * 100_000) == 100_000
    assert json_depth("[" * 100_000, stop=16) == 17  # stops counting past the limit


def test_bodies_as_deep_as_the_limit_are_read(webapp_run_dir: Path):
    client = create_app(webapp_run_dir, max_json_depth=2).test_client()
    assert client.post("/api/recommend", json={"history": ["/home"]}).status_code == 200
    answer = client.post("/api/recommend", json={"history": [["/home"]]})
    assert answer.status_code == 400
    assert answer.get_json()["error"].endswith("nested deeper than 2 levels")
    with pytest.raises(ClickstreamError, match="max_json_depth must be in"):
        create_app(webapp_run_dir, max_json_depth=1)


def test_json_with_a_charset_is_json(client: FlaskClient):
    answer = client.post(
        "/api/recommend",
        data=b'{"history": ["/home"]}',
        content_type="application/json; charset=utf-8",
    )
    assert answer.status_code == 200


@pytest.mark.parametrize(
    ("method", "url", "status", "message"),
    [
        ("get", "/api/recommend", 405, "GET is not allowed on /api/recommend; use OPTIONS, POST"),
        ("post", "/api/health", 405, "POST is not allowed on /api/health"),
        ("get", "/api/nothing", 404, "no such endpoint: /api/nothing"),
        ("get", "/api/pages?group=nope", 400, "unknown page group 'nope'"),
        ("get", "/api/policies?run=nope", 400, "unknown run 'nope'"),
        ("get", "/api/network?run=nope", 400, "unknown run 'nope'"),
    ],
)
def test_wrong_urls_and_methods_get_json(client: FlaskClient, method, url, status, message):
    answer = getattr(client, method)(url)
    assert answer.status_code == status and answer.is_json
    assert message in answer.get_json()["error"]


# ---- POST /api/path --------------------------------------------------------------------------


def test_path_follows_the_likeliest_page_under_the_policy(markov, run, tables, webapp_run_dir):
    T, r, e = tables["T"], tables["r"], tables["boost"]
    q = np.load(webapp_run_dir / "agents" / "value_iteration" / "seed_0" / "scores.npy")
    body = post(
        markov, "/api/path", {"history": ["/home"], "policy": "value_iteration", "steps": 6}
    )
    page, seen, prob, value = 0, {0}, 1.0, 0.0
    for step in body["steps"]:
        a = int(np.argmax(q[page]))  # the policy's own action; a = 50 shows nothing
        p = T[page].copy()
        if a < 50:  # the boost's normaliser 1 + (e^β - 1) p(a) (the row sums to 1)
            p /= 1.0 + (e - 1.0) * p[a]
            p[a] *= e
            assert step["recommended"]["page_id"] == a
            assert step["follow_probability"] == pytest.approx(p[a], rel=1e-12)
        nxt = int(np.argmax(p[:50]))
        assert step["page"]["page_id"] == page and step["next_page"]["page_id"] == nxt
        assert step["probability"] == pytest.approx(p[nxt], rel=1e-12)
        assert step["exit_probability"] == pytest.approx(p[50], rel=1e-12)
        assert step["expected_value"] == pytest.approx(p @ r, rel=1e-6)
        prob, value = prob * p[nxt], value + r[nxt]
        assert step["loop"] == (nxt in seen)
        seen.add(nxt)
        page = nxt
    assert 1 <= len(body["steps"]) <= 6
    assert len(body["steps"]) == 6 or body["steps"][-1]["loop"]
    assert body["probability"] == pytest.approx(prob, rel=1e-9)
    assert body["value"] == pytest.approx(value, rel=1e-6)


def test_path_of_organic_shows_nothing(client: FlaskClient):
    body = post(client, "/api/path", {"history": ["/home"], "policy": "organic", "steps": 3})
    assert all(s["recommended"] is None and s["follow_probability"] == 0.0 for s in body["steps"])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"history": ["/home"], "steps": 0}, "steps must be in [1, 10], got 0"),
        ({"history": ["/home"], "steps": 11}, "steps must be in [1, 10], got 11"),
        ({"history": ["/home"], "k": 3}, "unknown field(s) ['k']"),
        ({"history": ["/home"], "policy": "nope"}, "unknown policy 'nope'"),
    ],
)
def test_bad_path_requests(client: FlaskClient, body, message):
    answer = client.post("/api/path", json=body)
    assert answer.status_code == 400 and message in answer.get_json()["error"]


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


# ---- loading a run folder --------------------------------------------------------------------


def test_nothing_trained_names_the_pipeline_command(webapp_run_dir: Path, tmp_path: Path):
    cases = {"missing": tmp_path / "missing", "empty": tmp_path / "empty"}
    cases["empty"].mkdir()
    cases["data only"] = tmp_path / "data_only"
    shutil.copytree(webapp_run_dir / "data", cases["data only"] / "data")
    cases["no visitor model"] = tmp_path / "no_model"
    shutil.copytree(
        webapp_run_dir, cases["no visitor model"], ignore=shutil.ignore_patterns("model.pt")
    )
    expected = {
        "missing": "run folder not found",
        "empty": "data/meta.json is missing",
        "data only": "no saved policy in agents/",
        "no visitor model": "data/simulator/model.pt is missing",
    }
    for name, folder in cases.items():
        with pytest.raises(ClickstreamError) as err:
            load_run(folder)
        assert expected[name] in str(err.value)
        assert f"`python scripts/pipeline.py out_dir={folder}`" in str(err.value)
    # first-order answers need no GRU
    assert load_run(cases["no visitor model"], visitor_model="markov").dynamics == "markov"


def test_policies_trained_for_another_env_are_not_served(webapp_run_dir: Path, tmp_path: Path):
    copy = tmp_path / "run"
    shutil.copytree(webapp_run_dir, copy)
    record_path = copy / "agents" / "greedy" / "seed_0" / "run.json"
    record = json.loads(record_path.read_text())
    record["config"]["env"]["history_len"] = 2
    record_path.write_text(json.dumps(record))
    reseal(record_path.parent)
    run = load_run(copy)
    assert "greedy" not in run.policies
    assert run.skipped["greedy"] == (
        "trained with other env options than the run's: history_len=2 (run: 4)"
    )
    answer = (
        create_app(run)
        .test_client()
        .post("/api/recommend", json={"history": ["/home"], "policy": "greedy"})
    )
    assert answer.status_code == 400
    assert answer.get_json()["error"].startswith("policy 'greedy' is not served: trained with")
    with pytest.raises(ClickstreamError, match=r"no saved policy named \['nope'\]"):
        load_run(copy, policies=["nope"])
    assert list(load_run(copy, policies=["ppo"]).policies) == ["ppo"]


def test_two_runs_choose_by_name(webapp_run_dir: Path, tmp_path: Path):
    other = tmp_path / "other"
    shutil.copytree(webapp_run_dir, other)
    client = create_app([webapp_run_dir, other]).test_client()
    health = client.get("/api/health").get_json()
    assert [r["name"] for r in health["runs"]] == [webapp_run_dir.name, "other"]
    body = post(client, "/api/recommend", {"history": ["/home"], "run": "other"})
    assert body["run"] == "other"
    assert 'value="other"' in client.get("/?run=other").get_data(as_text=True)
    with pytest.raises(ClickstreamError, match="two runs are named"):
        create_app([webapp_run_dir, webapp_run_dir])


# ---- serving ---------------------------------------------------------------------------------


def test_waitress_serves_the_api_over_http(app: Flask):
    with BackgroundServer(app) as server:
        assert server.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(server.url + "api/health", timeout=10) as answer:
            assert answer.status == 200 and json.load(answer)["status"] == "ok"
        request = urllib.request.Request(
            server.url + "api/recommend",
            data=b'{"history": ["/home"], "k": 2}',
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert len(json.load(answer)["recommendations"]) == 2


def test_waitress_refuses_a_large_body_before_the_app_as_json(app: Flask):
    with BackgroundServer(app, limits=Limits(max_body_bytes=1024)) as server:
        port = int(server.url.rsplit(":", 1)[1].strip("/"))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /api/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                b"\r\nContent-Length: 1025\r\n\r\n"
            )
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, body = answer.decode().split("\r\n\r\n", 1)
        assert head.startswith("HTTP/1.1 413 Request Entity Too Large\r\n")
        assert json.loads(body) == {"error": "request body too large: at most 1024 bytes"}
        for name, value in (("X-Content-Type-Options", "nosniff"), ("Connection", "close")):
            assert f"\r\n{name}: {value}" in head
        # exactly the limit is read, and the app answers
        request = urllib.request.Request(
            server.url + "api/recommend",
            data=b'{"history": ["/home"]}'.ljust(1024),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as ok:
            assert ok.status == 200


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("connection_limit", 0, "connection_limit must be an integer >= 1, got 0"),
        ("connection_limit", 4, "connection_limit must be >= 8"),
        ("channel_timeout", 2.5, "channel_timeout must be an integer >= 1, got 2.5"),
        ("request_timeout", "10", "request_timeout must be an integer >= 1, got '10'"),
        ("max_body_bytes", -1, "max_body_bytes must be an integer >= 1"),
    ],
)
def test_bad_limits_name_their_key(key: str, value, message: str):
    with pytest.raises(ClickstreamError, match=re.escape(message)):
        Limits(**{key: value})


def test_serve_yaml_limits_are_the_defaults():
    from scripts.serve import server_limits

    assert server_limits(compose_cfg("serve", [])) == Limits()
    assert server_limits(compose_cfg("serve", ["request_timeout=3"])).request_timeout == 3


def test_listen_shares_a_port_between_workers_and_refuses_a_taken_one():
    first, second = listen("127.0.0.1", 0, 2)
    try:
        port = first.getsockname()[1]
        assert second.getsockname()[1] == port
        with pytest.raises(ClickstreamError, match=f"cannot listen on 127.0.0.1:{port}"):
            listen("127.0.0.1", port, 1)
    finally:
        first.close()
        second.close()


def test_serve_dry_run_loads_and_reports(webapp_run_dir: Path):
    from scripts.serve import run

    info = run(compose_cfg("serve", [f"run_dir={webapp_run_dir}", "dry_run=true", "port=8123"]))
    assert info["url"] == "http://127.0.0.1:8123/"
    assert info["runs"][webapp_run_dir.name]["policies"] == POLICIES
    with pytest.raises(ClickstreamError, match="nothing trained yet"):
        run(compose_cfg("serve", [f"run_dir={webapp_run_dir / 'data'}", "dry_run=true"]))


def test_serve_exits_2_naming_the_command_when_nothing_is_trained(tmp_path: Path):
    empty = tmp_path / "run"
    empty.mkdir()
    done = subprocess.run(
        [sys.executable, "scripts/serve.py", f"run_dir={empty}", f"hydra.run.dir={tmp_path}/h"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert (
        f"nothing trained yet: data/meta.json is missing; train one with "
        f"`python scripts/pipeline.py out_dir={empty}`" in done.stderr
    )


def test_a_policy_is_called_by_one_thread_at_a_time():
    # SB3 policies keep each call's logits in one shared distribution object: two threads in
    # action_scores at once can read each other's
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from agents.base import Policy
    from webapp.recommend import Recommender

    class Slow(Policy):
        inside, most = 0, 0
        guard = threading.Lock()

        def action_scores(self, obs):
            with self.guard:
                Slow.inside += 1
                Slow.most = max(Slow.most, Slow.inside)
            time.sleep(0.01)
            with self.guard:
                Slow.inside -= 1
            return np.asarray(obs, dtype=np.float64)

    for cache in (False, True):
        score = Recommender._scorer(Slow(), cache)
        with ThreadPoolExecutor(8) as pool:
            out = list(pool.map(score, [(i, 1, 2, 3) for i in range(32)]))
        assert [o[0] for o in out] == list(range(32))
    assert Slow.most == 1
