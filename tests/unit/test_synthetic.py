"""The synthetic store: its samples follow its true model, and the model is exposed exactly."""

from __future__ import annotations

import hashlib
import io
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from clickstream.errors import ClickstreamError
from clickstream.pages import PageConfig, assign_pages
from clickstream.schema import RAW_COLUMNS, validate_hits
from clickstream.synthetic import (
    INTENTS,
    SimulatedSessions,
    SyntheticConfig,
    SyntheticStore,
    apply_recommendation,
    build_store,
    ga_sample_stats,
    load,
    session_stats,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def intent_store() -> SyntheticStore:
    return build_store(SyntheticConfig(n_pages=200, mode="intent", seed=0))


@pytest.fixture(scope="module")
def markov_store() -> SyntheticStore:
    return build_store(SyntheticConfig(n_pages=200, mode="markov", seed=0))


@pytest.fixture(scope="module")
def intent_sample(intent_store: SyntheticStore) -> SimulatedSessions:
    return intent_store.simulate(200_000, seed=11)


def _next_of_each_view(sim: SimulatedSessions, exit_index: int) -> np.ndarray:
    """What follows each page view (next page or EXIT), shape ``(N,)``."""
    nxt = np.r_[sim.pages[1:], exit_index]
    nxt[sim.offsets[1:] - 1] = exit_index
    return nxt


def _first_order_counts(sim: SimulatedSessions, p: int) -> np.ndarray:
    nxt = _next_of_each_view(sim, p)
    return np.bincount(sim.pages * (p + 1) + nxt, minlength=p * (p + 1)).reshape(p, p + 1)


# ---- the store ------------------------------------------------------------------------------


def test_store_shape_and_stochastic_rows(intent_store: SyntheticStore) -> None:
    s = intent_store
    p = s.n_pages
    assert p == 200 and len(set(s.pages)) == p
    assert s.intents == INTENTS and s.transitions.shape == (3, p, p + 1)
    np.testing.assert_allclose(s.transitions.sum(axis=2), 1.0, atol=1e-12)
    np.testing.assert_allclose(s.entry.sum(axis=1), 1.0, atol=1e-12)
    assert np.isclose(s.prior.sum(), 1.0)
    assert (s.transitions >= 0).all()
    # no page links to itself (reload_prob = 0 by default)
    assert np.diagonal(s.transitions[:, :, :p], axis1=1, axis2=2).max() == 0
    for name in ("/home", "/basket.html", "/signin.html", "/ordercompleted.html"):
        assert name in s.pages
    types = pd.Series(s.page_types).value_counts()
    assert types["product"] >= 150 and types["category"] == 6 and types["brand"] == 4
    assert s.expected_revenue[s.order_page] > 150 and s.expected_revenue.sum() == pytest.approx(
        s.expected_revenue[s.order_page]
    )


@pytest.mark.parametrize("n_pages", [50, 10_000])
def test_sizes_at_both_ends(n_pages: int) -> None:
    s = build_store(SyntheticConfig(n_pages=n_pages))
    assert len(s.pages) == n_pages == len(set(s.pages))
    row_sums = np.add.reduceat(s.probs, s.indptr[:-1])
    np.testing.assert_allclose(row_sums, 1.0, atol=1e-12)
    # funnel order: basket -> signin -> yourinfo -> payment -> revieworder -> ordercompleted
    funnel = ["/basket.html", "/signin.html", "/yourinfo.html", "/payment.html"]
    funnel += ["/revieworder.html", "/ordercompleted.html"]
    buy = INTENTS.index("buy")
    for a, b in itertools.pairwise(funnel):
        row = s.transition_row(buy, a)
        assert row[s.page_index(b)] == row[: s.n_pages].max()


def test_bad_config_is_refused() -> None:
    # messages name the key users set: data.<key> of configs/data/synthetic.yaml
    with pytest.raises(ClickstreamError) as info:
        SyntheticConfig(n_pages=49)
    assert str(info.value) == "synthetic store: data.n_pages must be in [50, 10000], got 49"
    with pytest.raises(ClickstreamError) as info:
        SyntheticConfig(n_sessions=0)
    assert str(info.value) == "synthetic store: data.n_sessions must be >= 1, got 0"
    with pytest.raises(ClickstreamError, match="mode"):
        SyntheticConfig(mode="hmm")
    with pytest.raises(ClickstreamError, match="intent_prior"):
        SyntheticConfig(intent_prior=(0.5, 0.5, 0.5))
    with pytest.raises(ClickstreamError, match="unknown synthetic store option"):
        SyntheticConfig.from_dict({"n_page": 100})


def test_behaviour_overrides_replace_only_their_rows(intent_store: SyntheticStore) -> None:
    # researchers on policy pages: half leave, half go to the basket (every policy page links it)
    cfg = SyntheticConfig(
        kind_weights={"research": {"policy": {"exit": 1.0, "basket": 1.0}}},
        entry_weights={"buy": {"basket": 2.0}},
    )
    store = build_store(cfg)
    research, buy = INTENTS.index("research"), INTENTS.index("buy")
    basket = store.page_index("/basket.html")
    policy = np.flatnonzero(np.array(store.page_types) == "policy")
    rows = store.transitions[research][policy]
    np.testing.assert_allclose(rows[:, store.exit_index], 0.5)
    np.testing.assert_allclose(rows[:, basket], 0.5)
    np.testing.assert_allclose(rows.sum(1), 1.0)
    # every other row and entry as in the default store
    changed = np.zeros_like(store.transitions, dtype=bool)
    changed[research, policy] = True
    np.testing.assert_array_equal(store.transitions[~changed], intent_store.transitions[~changed])
    assert store.entry[buy, basket] == 1.0 and store.entry[buy].sum() == 1.0
    np.testing.assert_array_equal(store.entry[:buy], intent_store.entry[:buy])
    assert store.config.kind_table("research")["policy"] == {"exit": 1.0, "basket": 1.0}
    assert store.config.kind_table("browse") == intent_store.config.kind_table("browse")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("kind_weights", {"shopper": {}}, r"unknown intent\(s\) \['shopper'\]"),
        ("kind_weights", {"buy": {"checkout": {"exit": 1}}}, "unknown page type 'checkout'"),
        ("kind_weights", {"buy": {"product": {"exit": 1, "cart": 1}}}, "unknown 'cart'"),
        ("kind_weights", {"buy": {"product": {"basket": 1}}}, r"'exit' must be > 0"),
        ("kind_weights", {"buy": {"product": {"exit": -0.1}}}, r"\[exit\] must be a finite"),
        ("kind_weights", {"buy": {"product": {"exit": "x"}}}, r"\[exit\] must be a finite"),
        ("kind_weights", {"buy": ["exit"]}, r"^synthetic store: data\.kind_weights\[buy\] must"),
        ("entry_weights", {"buy": {"checkout": 1}}, r"entry_weights\[buy\]: unknown 'checkout'"),
        ("entry_weights", {"buy": {"home": 0}}, r"entry_weights\[buy\] has no positive weight"),
        ("entry_weights", [1, 2], "entry_weights must be a mapping"),
    ],
)
def test_bad_behaviour_overrides_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ClickstreamError, match=message):
        SyntheticConfig(**{field: value})


def test_behaviour_overrides_survive_save_load_and_hydra(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    node = OmegaConf.create({"research": {"policy": {"exit": 1, "basket": 3}}})
    store = build_store(SyntheticConfig(kind_weights=node))  # a Hydra node becomes plain data
    assert store.config.kind_weights == {"research": {"policy": {"exit": 1.0, "basket": 3.0}}}
    store.save(tmp_path / "true_model")
    back = SyntheticStore.load(tmp_path / "true_model")
    assert back.config == store.config
    np.testing.assert_array_equal(back.transitions, store.transitions)


def test_page_groups_match_the_merchandise_store_page_config(
    intent_store: SyntheticStore,
) -> None:
    """Preparing synthetic hits with the real store's page rules keeps pages and groups."""
    cfg = yaml.safe_load((REPO / "configs/pages/merchandise_store.yaml").read_text())
    cfg.pop("defaults", None)
    s = intent_store
    table = pd.DataFrame(
        {
            "page_raw": s.pages,
            "page_title": s.page_titles,
            "content_group": pd.Series(s.content_groups, dtype="str"),
        }
    )
    for config in (PageConfig.from_dict(cfg), PageConfig(group_rules=s.group_rules())):
        assigned = assign_pages(table, config)
        assert assigned.page.tolist() == s.pages
        assert assigned.page_group.tolist() == s.page_groups


# ---- sampling follows the true model -----------------------------------------------------


def test_markov_empirical_transitions_match_the_true_matrix(markov_store: SyntheticStore) -> None:
    s = markov_store
    p = s.n_pages
    sim = s.simulate(200_000, seed=3)
    counts = _first_order_counts(sim, p)
    visits = counts.sum(axis=1)
    freq = counts / np.maximum(visits, 1)[:, None]
    true = s.transitions[0]
    # a frequency from n visits has sd <= 0.5 / sqrt(n): an absolute 0.01 is > 4.5 sd from
    # 50,000 visits on; on every row with >= 2,000 visits the deviation stays within 5 sd
    big = visits >= 50_000
    assert big.sum() >= 3
    dev_big = np.abs(freq[big] - true[big]).max()
    print(f"rows >= 50,000 visits: {big.sum()}, max abs deviation {dev_big:.4f}")
    assert dev_big < 0.01
    rows = visits >= 2_000
    assert rows.sum() >= 20
    sd = np.sqrt(true[rows] * (1 - true[rows]) / visits[rows, None])
    z = np.abs(freq[rows] - true[rows]) / np.maximum(sd, 1e-12)
    print(f"rows >= 2,000 visits: {rows.sum()}, max |z| {z.max():.2f}")
    assert z.max() < 5.5
    assert (counts[true == 0] == 0).all()  # nothing off the link structure
    entry = np.bincount(sim.pages[sim.offsets[:-1]], minlength=p) / len(sim)
    assert np.abs(entry - s.entry[0]).max() < 0.01


def test_markov_mode_is_the_first_order_marginal_of_intent_mode(
    markov_store: SyntheticStore, intent_sample: SimulatedSessions
) -> None:
    """A first-order model fitted to intent sessions converges to the markov-mode matrix."""
    p = markov_store.n_pages
    counts = _first_order_counts(intent_sample, p)
    visits = counts.sum(axis=1)
    big = visits >= 50_000
    freq = counts[big] / visits[big, None]
    assert np.abs(freq - markov_store.transitions[0][big]).max() < 0.01


def test_intent_predictive_distribution_sums_to_one(
    intent_store: SyntheticStore, intent_sample: SimulatedSessions
) -> None:
    s = intent_store
    rng = np.random.default_rng(5)
    for i in rng.choice(len(intent_sample), 200, replace=False):
        session = intent_sample.session(int(i))
        t = int(rng.integers(1, len(session) + 1))
        dist = s.next_page_distribution(session[:t])
        assert dist.shape == (s.n_pages + 1,)
        assert abs(dist.sum() - 1.0) < 1e-9 and (dist >= 0).all()
        post = s.intent_posterior(session[:t])
        assert abs(post.sum() - 1.0) < 1e-9
    with pytest.raises(ClickstreamError, match="impossible"):
        s.next_page_distribution(["/ordercompleted.html", "/ordercompleted.html"])
    # paths and indices name the same history
    h = ["/home", "/basket.html"]
    np.testing.assert_array_equal(
        s.next_page_distribution(h), s.next_page_distribution([s.page_index(x) for x in h])
    )


@pytest.mark.parametrize(("length", "min_count"), [(1, 1_000), (2, 1_000), (3, 300)])
def test_intent_predictive_matches_empirical_conditionals(
    intent_store: SyntheticStore, intent_sample: SimulatedSessions, length: int, min_count: int
) -> None:
    """For every history prefix seen often enough, next-page frequencies match p(next | h)."""
    s, sim = intent_store, intent_sample
    p = s.n_pages
    lengths = sim.lengths
    ok = lengths >= length
    starts = sim.offsets[:-1][ok]
    key = np.zeros(len(starts), dtype=np.int64)
    for t in range(length):
        key = key * p + sim.pages[starts + t]
    nxt = np.full(len(starts), p, dtype=np.int64)
    more = lengths[ok] > length
    nxt[more] = sim.pages[starts[more] + length]
    keys, inv, n = np.unique(key, return_inverse=True, return_counts=True)
    checked = 0
    worst = 0.0
    for k in np.flatnonzero(n >= min_count):
        history = []
        rest = int(keys[k])
        for _ in range(length):
            history.append(rest % p)
            rest //= p
        history.reverse()
        freq = np.bincount(nxt[inv == k], minlength=p + 1) / n[k]
        exact = s.next_page_distribution(history)
        sd = np.sqrt(exact * (1 - exact) / n[k])
        z = np.abs(freq - exact) / np.maximum(sd, 1e-12)
        worst = max(worst, float(z.max()))
        assert (freq[exact == 0] == 0).all()
        checked += 1
    print(f"histories of length {length} checked: {checked}, max |z| {worst:.2f}")
    assert checked >= 3
    assert worst < 5.5


def test_history_matters_markov_log_loss_is_worse_than_bayes(
    intent_store: SyntheticStore, intent_sample: SimulatedSessions
) -> None:
    """A smoothed first-order model fitted on intent sessions loses to the true model."""
    s = intent_store
    p = s.n_pages
    test = s.simulate(50_000, seed=12)
    counts = _first_order_counts(intent_sample, p) + 0.01  # add-small smoothing
    fitted = counts / counts.sum(axis=1, keepdims=True)
    markov = float(-np.log(fitted[test.pages, _next_of_each_view(test, p)]).mean())
    bayes = s.predictive_log_loss(test)
    print(f"test log-loss: first-order Markov {markov:.4f}, Bayes-optimal {bayes:.4f}, ")
    print(f"margin {markov - bayes:.4f} nats per step")
    assert markov - bayes > 0.05


def test_log_loss_agrees_across_inputs_and_with_the_scalar_filter(
    intent_store: SyntheticStore,
) -> None:
    s = intent_store
    raw = s.sample_sessions(300, seed=4)
    sim = s.simulate(300, seed=4)
    from_sim = s.predictive_log_loss(sim)
    assert s.predictive_log_loss(raw.hits) == pytest.approx(from_sim, rel=1e-12)
    assert s.predictive_log_loss(sim.to_list()) == pytest.approx(from_sim, rel=1e-12)
    by_path = [[s.pages[i] for i in x] for x in sim.to_list()[:20]]
    total, steps = 0.0, 0
    for session in sim.to_list()[:20]:
        for t in range(len(session)):
            nxt = session[t + 1] if t + 1 < len(session) else s.exit_index
            total -= np.log(s.next_page_distribution(session[: t + 1])[nxt])
            steps += 1
    assert s.predictive_log_loss(by_path) == pytest.approx(total / steps, rel=1e-10)
    with pytest.raises(ClickstreamError, match="not a page"):
        s.predictive_log_loss(raw.hits.assign(page_raw="/nowhere"))


# ---- hits ---------------------------------------------------------------------------------


def test_hits_follow_the_raw_schema(intent_store: SyntheticStore) -> None:
    raw = intent_store.sample_sessions(3_000, seed=2)
    hits = raw.hits
    validate_hits(hits, source="synthetic")
    assert list(hits.columns) == list(RAW_COLUMNS) and raw.source == "synthetic"
    sid = hits["session_id"].to_numpy()
    first = np.r_[True, sid[1:] != sid[:-1]]
    last = np.r_[sid[1:] != sid[:-1], True]
    assert hits["session_id"].iloc[0] == "syn-0000001" and first.sum() == 3_000
    starts = hits["session_start"].to_numpy("datetime64[ns]")[first].astype(np.int64)
    assert (np.diff(starts) > 0).all()
    top = hits["time_on_page_s"].to_numpy()
    assert np.isnan(top[last]).all() and (top[~last] > 0).all()
    gaps = np.diff(hits["hit_time"].to_numpy("datetime64[ns]").astype(np.int64)) / 1e9
    within = ~last[:-1]  # gap to the next row is the time on page inside a session
    np.testing.assert_allclose(gaps[within], top[:-1][within], atol=1e-6)
    tx = hits["is_transaction"].to_numpy()
    assert (hits["page_raw"].to_numpy()[tx] == "/ordercompleted.html").all()
    assert (hits["revenue"].to_numpy()[tx] > 0).all() and (hits["revenue"][~tx] == 0).all()
    intents = raw.info["session_intents"]
    assert len(intents) == 3_000 and set(intents["intent"]) <= set(INTENTS)
    sim = intent_store.simulate(3_000, seed=2)
    assert (intents["intent"].cat.codes.to_numpy() == sim.intents).all()
    assert hits["page_raw"].tolist() == [intent_store.pages[i] for i in sim.pages]


def test_same_seed_same_bytes(intent_store: SyntheticStore) -> None:
    def digest(seed: int) -> str:
        hits = build_store(SyntheticConfig(seed=0)).sample_sessions(2_000, seed).hits
        buf = io.BytesIO()
        hits.to_parquet(buf, index=False)
        return hashlib.sha256(buf.getvalue()).hexdigest()

    assert digest(7) == digest(7)
    assert digest(7) != digest(8)
    other = build_store(SyntheticConfig(seed=1))
    assert other.pages != intent_store.pages or not np.array_equal(other.probs, intent_store.probs)


def test_save_load_round_trip(intent_store: SyntheticStore, tmp_path: Path) -> None:
    npz, js = intent_store.save(tmp_path / "true_model")
    assert npz.name == "true_model.npz" and js.name == "true_model.json"
    back = SyntheticStore.load(tmp_path / "true_model")
    assert back.pages == intent_store.pages and back.page_groups == intent_store.page_groups
    assert back.page_types == intent_store.page_types and back.config == intent_store.config
    np.testing.assert_array_equal(back.transitions, intent_store.transitions)
    np.testing.assert_array_equal(back.entry, intent_store.entry)
    h = ["/home", "/google+redesign/apparel", "/basket.html"]
    np.testing.assert_array_equal(
        back.next_page_distribution(h, "/signin.html"),
        intent_store.next_page_distribution(h, "/signin.html"),
    )
    a = back.sample_sessions(500, 3).hits
    b = intent_store.sample_sessions(500, 3).hits
    pd.testing.assert_frame_equal(a, b)


# ---- the recommendation response ----------------------------------------------------------


def test_boost_matches_the_formula() -> None:
    p = np.array([0.5, 0.3, 0.2])  # two pages and EXIT
    boosted = apply_recommendation(p, 1, beta=1.0)
    expected = np.array([0.5, 0.3 * np.e, 0.2]) / (0.7 + 0.3 * np.e)
    np.testing.assert_allclose(boosted, expected, rtol=1e-12)
    np.testing.assert_array_equal(apply_recommendation(p, 1, beta=0.0), p)
    np.testing.assert_array_equal(apply_recommendation(p, -1, beta=2.0), p)
    batch = apply_recommendation(np.stack([p, p]), np.array([0, -1]), beta=1.0)
    np.testing.assert_allclose(batch[1], p)
    assert batch[0, 0] == pytest.approx(0.5 * np.e / (0.5 * np.e + 0.5))
    with pytest.raises(ClickstreamError, match="EXIT"):
        apply_recommendation(p, 2, beta=1.0)


def test_store_applies_its_true_beta(intent_store: SyntheticStore) -> None:
    s = intent_store
    h = ["/home", "/google+redesign/apparel"]
    organic = s.next_page_distribution(h)
    a = int(np.argmax(organic[: s.n_pages]))
    rec = s.next_page_distribution(h, recommendation=a)
    np.testing.assert_allclose(rec, apply_recommendation(organic, a, s.beta), rtol=1e-12)
    assert rec[a] > organic[a]
    np.testing.assert_allclose(s.next_page_distribution(h, a, beta=0.0), organic, rtol=1e-12)
    unlinked = int(np.flatnonzero(organic[: s.n_pages] == 0)[0])
    np.testing.assert_allclose(s.next_page_distribution(h, unlinked), organic, rtol=1e-12)


# ---- loader interface and realism ---------------------------------------------------------


def test_loader_interface() -> None:
    raw = load(None, n_pages=80, mode="markov", n_sessions=1_000, seed=3, show_progress=True)
    store = raw.info["store"]
    assert isinstance(store, SyntheticStore) and store.mode == "markov" and store.n_pages == 80
    assert raw.hits["session_id"].nunique() == 1_000
    assert raw.info["sample_seed"] == 4 and raw.info["intent_counts"] == {"markov": 1_000}


def test_sessions_look_like_the_ga_sample_day(intent_store: SyntheticStore) -> None:
    """GA 2017-08-01: 4.28 page views per session, 48.6 % bounces, 1.68 % conversion."""
    stats = session_stats(intent_store.sample_sessions(50_000, seed=1).hits)
    print(stats)
    assert 3.4 < stats["pages_per_session"] < 5.2
    assert 0.40 < stats["bounce_rate"] < 0.56
    assert 0.010 < stats["conversion_rate"] < 0.025
    assert 100 < stats["mean_order_value"] < 300


def test_ga_sample_figures_by_duckdb(ga_sample_path: Path) -> None:
    """The reference figures of the realism comparison, computed from the export itself."""
    ga = ga_sample_stats(ga_sample_path)
    assert ga["sessions"] == 2_556 and ga["page_views"] == 10_939
    assert ga["bounce_rate"] == pytest.approx(1_243 / 2_556)
    assert ga["conversion_rate"] == pytest.approx(43 / 2_556)


# ---- the item-level store (mode="items") --------------------------------------------------


@pytest.fixture(scope="module")
def item_store() -> SyntheticStore:
    return build_store(SyntheticConfig(mode="items", n_pages=600, n_categories=6))


def test_item_store_shape(item_store: SyntheticStore) -> None:
    s = item_store
    assert s.n_pages == 600 and s.n_intents == 6 and s.mode == "items"
    assert all(p[1:].isdigit() and len(p) == 7 for p in s.pages)  # "/104233": bare item ids
    assert len(set(s.pages)) == 600
    assert sorted(set(s.page_groups)) == [f"category_0{k}" for k in range(1, 7)]
    assert s.content_groups == s.page_groups and set(s.page_types) == {"product"}
    assert s.intents == tuple(f"interest_0{k}" for k in range(1, 7))
    np.testing.assert_allclose(s.prior.sum(), 1.0)
    np.testing.assert_allclose(s.entry.sum(axis=1), 1.0)
    rows = np.repeat(np.arange(6 * 600), np.diff(s.indptr))
    np.testing.assert_allclose(np.bincount(rows, weights=s.probs), 1.0)
    assert not ((s.indices == rows % 600) & (s.indices < 600)).any()  # no reloads
    assert s.order_page == -1 and not s.expected_revenue.any()
    # an interest lands on its own category 85 % of the time (else a bestseller)
    own = np.array(s.page_groups) == "category_01"
    assert s.entry[0, own].sum() >= 0.85
    # the default number of categories: n_pages / 250 within [4, 20]
    assert build_store(SyntheticConfig(mode="items", n_pages=2000)).n_intents == 8


def test_item_store_interest_makes_history_matter(item_store: SyntheticStore) -> None:
    s = item_store
    p = s.n_pages
    train, test = s.simulate(100_000, seed=3), s.simulate(20_000, seed=4)
    counts = _first_order_counts(train, p) + 0.01
    fitted = counts / counts.sum(axis=1, keepdims=True)
    markov = float(-np.log(fitted[test.pages, _next_of_each_view(test, p)]).mean())
    bayes = s.predictive_log_loss(test)
    print(f"items: first-order Markov {markov:.4f}, Bayes-optimal {bayes:.4f} nats per step")
    assert markov - bayes > 0.1
    # sessions stay mostly in one category: the latent interest
    sessions = test.to_list()
    groups = np.array(s.page_groups)
    share = np.mean([pd.Series(groups[x]).value_counts().iloc[0] / len(x) for x in sessions])
    assert share > 0.8


def test_item_store_hits_save_load_and_config(item_store: SyntheticStore, tmp_path: Path) -> None:
    raw = item_store.sample_sessions(2000, seed=5)
    validate_hits(raw.hits, source="items")
    assert not raw.hits["is_transaction"].any() and raw.hits["revenue"].sum() == 0
    assert raw.info["dataset_name"] == "synthetic_items_600p"
    assert raw.hits["time_on_page_s"].notna().mean() > 0.7
    item_store.save(tmp_path / "true_model")
    loaded = SyntheticStore.load(tmp_path / "true_model")
    assert loaded.pages == item_store.pages and loaded.mode == "items"
    np.testing.assert_array_equal(loaded.probs, item_store.probs)
    with pytest.raises(
        ClickstreamError, match=r"data\.n_categories is an option of data\.mode=items"
    ):
        SyntheticConfig(n_categories=5)
    with pytest.raises(
        ClickstreamError, match=r"data\.n_categories must be in \[2, data\.n_pages / 5\]"
    ):
        SyntheticConfig(mode="items", n_pages=100, n_categories=30)
    with pytest.raises(ClickstreamError, match="mode=items has its own"):
        SyntheticConfig(mode="items", kind_weights={"browse": {"home": {"exit": 1.0}}})
