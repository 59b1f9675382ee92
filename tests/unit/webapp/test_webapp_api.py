"""The web app's API as a contract: the GET routes (health, policies, pages, the network
counted again from the hits) and every bad request (bodies, content types, JSON depth, wrong
URLs and methods) answered with a 4xx JSON error saying what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from flask.testing import FlaskClient

from clickstream.errors import ClickstreamError
from tests.webapp_support import POLICIES
from webapp import create_app
from webapp.api import json_depth

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
    assert body["actions"] == {
        "level": "page",
        "count": 51,
        "show_nothing": True,
        "history_len": 4,
        "observation_extras": [],
    }
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
    ({"history": ["/home\x00"]}, "history[0] holds characters that are not printable"),
    # C1 controls, separators, format characters and unpaired surrogates too (str.strip()
    # took "\x85" for whitespace: "/home\x85" was read as /home, "\x85" as an empty path)
    ({"history": ["/home\x85"]}, "history[0] holds characters that are not printable"),
    ({"history": ["\x85"]}, "history[0] holds characters that are not printable"),
    ({"history": ["/home\u2028"]}, "history[0] holds characters that are not printable"),
    ({"history": ["/ho\u200bme"]}, "history[0] holds characters that are not printable"),
    ({"history": ["/home\ud800"]}, "history[0] holds characters that are not printable"),
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
        (b'["/home"]', "application/json", 400, "the body must be a JSON object, got a list"),
        (b"null", "application/json", 400, "the body must be a JSON object, got null"),
        (b'"x"', "application/json", 400, "the body must be a JSON object, got a string"),
        (
            b'{"history": 5, "history": ["/home"]}',
            "application/json",
            400,
            "invalid JSON: the field 'history' is given more than once",
        ),
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


def test_a_page_path_with_a_space_or_a_letter_beyond_ascii_is_read(client: FlaskClient):
    for page in ("/home page", "/café"):
        answer = client.post("/api/recommend", json={"history": [page, "/home"]})
        assert answer.status_code == 200, answer.get_json()


@pytest.mark.parametrize(
    ("method", "url", "message"),
    [
        # a POST reads its settings from the body: a run in the URL was silently ignored
        (
            "post",
            "/api/recommend?run=nope&k=9",
            "query parameter(s) ['run', 'k'] not read: /api/recommend takes its settings in "
            "the JSON body (fields ['history', 'k', 'policy', 'run', 'unknown'])",
        ),
        ("post", "/api/path?steps=2", "query parameter(s) ['steps'] not read: /api/path"),
        ("get", "/api/pages?foo=1", "unknown query parameter 'foo'; known: ['run', 'group']"),
        ("get", "/api/pages?run=a&run=b", "query parameter 'run' given more than once"),
        ("get", "/api/pages?group=home&group=basket", "query parameter 'group' given more"),
        ("get", "/api/health?run=nope", "unknown query parameter 'run'; this request takes none"),
        ("get", "/api/policies?policy=ppo", "unknown query parameter 'policy'; known: ['run']"),
        ("get", "/api/network?group=home", "unknown query parameter 'group'; known: ['run']"),
    ],
)
def test_query_parameters_are_read_or_refused(client: FlaskClient, method, url, message):
    call = getattr(client, method)
    answer = call(url, json={"history": ["/home"]}) if method == "post" else call(url)
    assert answer.status_code == 400 and answer.is_json
    assert answer.get_json()["error"].startswith(message)


@pytest.mark.parametrize(
    "url", ["/?nope=1", "/impact?run=a&run=b", "/impact?policy=ppo", "/?world=learned"]
)
def test_pages_refuse_unknown_or_repeated_parameters(client: FlaskClient, url: str):
    answer = client.get(url)
    assert answer.status_code == 400
    assert b"query parameter" in answer.data


@pytest.mark.parametrize("method", ["get", "post"])
def test_the_bare_api_path_answers_json(client: FlaskClient, method: str):
    answer = getattr(client, method)("/api")
    assert answer.status_code == 404 and answer.is_json
    assert answer.get_json()["error"] == "no such endpoint: /api (see GET /api/health)"
