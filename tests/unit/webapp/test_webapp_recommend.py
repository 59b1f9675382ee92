"""The numbers of ``POST /api/recommend`` and ``POST /api/path``: top-k by score, follow
probabilities and expected values by hand from the first-order tables, the GRU's and the
latent-class model's own probabilities, caches that change nothing, and how unknown pages
are matched, mapped to their group or dropped."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient

from clickstream.errors import ClickstreamError
from tests.hydra_configs import reseal
from tests.webapp_support import post
from webapp import create_app
from webapp.artefacts import RunArtefacts
from webapp.recommend import PageResolver

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
    # greedy ranks by the expected reward of the next step on the same tables (its scores
    # from the float32 rows as trained, the app's from the rows renormalised in float64)
    for page in run.vocab.pages[:20]:
        body = post(markov, "/api/recommend", {"history": [page], "k": 5, "policy": "greedy"})
        for rec in body["recommendations"]:
            assert rec["expected_value"] == pytest.approx(rec["score"], rel=1e-6)


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


def test_a_page_dropped_by_unknown_drop_says_so(client: FlaskClient, run: RunArtefacts):
    page = "/google+redesign/apparel/zzz"
    assert "category:apparel" in run.vocab.groups  # mapped by default, not dropped
    body = post(client, "/api/recommend", {"history": [page, "/home"], "policy": "greedy"})
    assert [h["how"] for h in body["history"]] == ["group", "exact"]
    body = post(
        client,
        "/api/recommend",
        {"history": [page, "/home"], "policy": "greedy", "unknown": "drop"},
    )
    assert [h["how"] for h in body["history"]] == ["dropped", "exact"]
    assert body["warnings"] == [
        f"history[0]: unknown page {page!r} dropped (unknown='drop': unknown pages are not "
        "mapped to their group 'category:apparel')"
    ]


def test_resolver_without_page_rules_matches_exactly(run: RunArtefacts):
    resolver = PageResolver(run.vocab, run.network.top_page, None)
    assert resolver.resolve("/home", 0).how == "exact"
    assert resolver.resolve(" /home ", 0).page_id == 0
    assert resolver.resolve("/HOME", 0).how == "dropped"


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
    last = body["steps"][-1]
    assert len(body["steps"]) == 6 or last["loop"] or last["exit_likelier"]
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


def test_a_slate_run_scores_its_positions_together(run, tables):
    """With env.slate_size = 3 the first 3 recommendations are one slate: each position's
    follow probability is the position-biased MNL's, by hand from the organic probabilities."""
    import copy

    from envs.slate import PositionMNL
    from webapp.recommend import Recommender

    model = PositionMNL(float(np.log(tables["boost"])), (1.0, 0.5, 0.25))
    rec = Recommender(run, cache=False)
    rec.template = copy.copy(rec.template)
    rec.template.slate_model = model
    r, kappa, eps = tables["r"], tables["boost"] - 1.0, np.array(model.examination)
    for page in range(5):
        out = rec.recommend("value_iteration", (page,), 4)
        p = np.array([x.organic_probability for x in out.recommendations[:3]])
        z = 1.0 + kappa * (eps * p).sum()
        follow = [x.slate_follow_probability for x in out.recommendations]
        assert follow[:3] == pytest.approx(list(p * (1 + kappa * eps) / z), rel=1e-9)
        assert follow[3] is None  # beyond the slate
        organic_value = out.organic_expected_value
        pages = [x.page_id for x in out.recommendations[:3]]
        expected = (organic_value + kappa * (eps * p * r[pages]).sum()) / z
        assert out.slate_expected_value == pytest.approx(expected, rel=1e-6)


def test_organic_recommends_nothing_rather_than_the_first_page_ids(client: FlaskClient):
    """Organic scores every page alike and prefers to show nothing: a top-k of it would be the
    first page ids, a list that looks like a choice."""
    body = post(client, "/api/recommend", {"history": ["/home"], "k": 3, "policy": "organic"})
    assert body["prefers_nothing"] is True and body["recommendations"] == []
    assert body["warnings"] == ["'organic' shows nothing here and ranks no page above another"]
    greedy = post(client, "/api/recommend", {"history": ["/home"], "k": 3, "policy": "greedy"})
    assert len(greedy["recommendations"]) == 3  # a policy that ranks pages keeps its list


def test_a_page_of_the_runs_own_vocabulary_is_read_whatever_its_characters():
    """prepare_data keeps a soft hyphen, a zero-width joiner or a no-break space in a page
    name; such a page, listed by GET /api/pages, must be answered, not refused as unprintable."""
    from types import SimpleNamespace

    from clickstream.pages import PageConfig, normalise_path

    config = PageConfig()
    raw = ["/caf\u00ade", "/emoji/\U0001f468\u200d\U0001f469", "/shop\u00a0sale"]
    pages = [normalise_path(p, config) for p in raw]
    assert pages == raw  # kept as they are by the data's own rules
    resolver = PageResolver(SimpleNamespace(pages=pages, groups=["g"]), np.array([0]), config)
    assert [resolver.resolve(p, 0).page_id for p in pages] == [0, 1, 2]
    with pytest.raises(ClickstreamError, match="not printable"):  # unknown: still refused
        resolver.resolve("/tea\u00adpot", 0)


def test_a_page_of_the_runs_own_vocabulary_is_read_whatever_its_length():
    """A page longer than MAX_PAGE_CHARS (a URL kept raw, query string and all) that the run
    lists and its policies recommend must be answered; the limit is for other entries."""
    from types import SimpleNamespace

    from webapp.recommend import MAX_PAGE_CHARS

    long_page = "/long/" + "x" * (MAX_PAGE_CHARS + 100)
    resolver = PageResolver(SimpleNamespace(pages=["/a", long_page], groups=["g"]), [0], None)
    read = resolver.resolve(long_page, 0)
    assert (read.page_id, read.how) == (1, "exact")
    with pytest.raises(ClickstreamError, match="characters long; at most 2048"):
        resolver.resolve("/long/" + "y" * (MAX_PAGE_CHARS + 100), 0)  # unknown: still refused


def test_path_ends_where_leaving_is_likelier_and_names_its_reward(markov, run, tables):
    """The likeliest path stops after a step whose exit probability beats its next page's
    (flagged ``exit_likelier``); earlier steps never have leaving likelier; ``reward_sum``
    (and ``value``, its older name) sums the next pages' rewards, in the run's reward."""
    r = tables["r"]
    ended = 0
    for page in run.vocab.pages:
        body = post(
            markov, "/api/path", {"history": [page], "policy": "value_iteration", "steps": 6}
        )
        steps = body["steps"]
        assert body["reward"] == run.reward == "page_value"
        for step in steps[:-1]:
            assert not step["exit_likelier"] and not step["loop"]
            assert step["exit_probability"] <= step["probability"]
        last = steps[-1]
        assert last["exit_likelier"] == (last["exit_probability"] > last["probability"])
        assert len(steps) == 6 or last["loop"] or last["exit_likelier"]
        ended += last["exit_likelier"]
        total = sum(r[s["next_page"]["page_id"]] for s in steps)
        assert body["reward_sum"] == body["value"] == pytest.approx(total, rel=1e-6)
    assert ended  # the tiny run has such pages: the rule is exercised
