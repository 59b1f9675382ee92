"""Reward tables: catalog estimates aligned to the vocabulary, and the synthetic store's truth."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch

from clickstream.catalog import page_stats
from clickstream.errors import ClickstreamError
from clickstream.synthetic import SyntheticConfig, SyntheticStore, build_store
from envs.rewards import (
    REWARD_KINDS,
    RewardTable,
    check_learnable,
    reward_from_catalog,
    reward_from_store,
    true_page_value,
)

FUNNEL = [
    "/basket.html",
    "/signin.html",
    "/yourinfo.html",
    "/payment.html",
    "/revieworder.html",
]


@pytest.fixture(scope="module")
def store() -> SyntheticStore:
    return build_store(n_pages=60, seed=0)


@pytest.fixture
def catalog() -> pd.DataFrame:
    """Four pages plus one the vocabulary does not use (``/z``)."""
    return pd.DataFrame(
        {
            "page_id": [0, 1, 2, 3, 4],
            "page": ["/a", "/b", "/c", "/d", "/z"],
            "page_group": ["g", "g", "order", "g", "g"],
            "pageviews": [10, 4, 5, 2, 1],
            "revenue": [0.0, 0.0, 150.0, 0.0, 0.0],
            "page_value": [12.5, 40.0, 0.0, 0.0, 99.0],
            "avg_time_on_page_s": [10.0, np.nan, 20.0, 60.0, 1000.0],
        }
    )


def _values(table: RewardTable) -> list[float]:
    return table.per_page.tolist()


# ---- from a catalog -------------------------------------------------------------------------


def test_catalog_rewards_by_hand(catalog: pd.DataFrame) -> None:
    vocab = ["/a", "/b", "/c", "/d"]
    pv = reward_from_catalog("page_value", catalog, vocab)
    assert pv.name == "page_value" and pv.per_page.dtype == torch.float32 and pv.n_pages == 4
    assert _values(pv) == [12.5, 40.0, 0.0, 0.0, 0.0]  # EXIT last, pays 0
    # revenue / pageviews: 150 USD over 5 views of /c = 30 per view
    assert _values(reward_from_catalog("revenue", catalog, vocab)) == [0.0, 0.0, 30.0, 0.0, 0.0]
    # /b has no known time: the mean over vocabulary pages with one, (10 + 20 + 60) / 3 = 30
    # (/z's 1000 s is outside the vocabulary and does not count)
    engagement = reward_from_catalog("engagement", catalog, vocab)
    assert _values(engagement) == [10.0, 30.0, 20.0, 60.0, 0.0]


def test_catalog_rewards_follow_the_vocabulary_order(catalog: pd.DataFrame) -> None:
    vocab = ["/c", "/a", "/d", "/b"]
    assert _values(reward_from_catalog("page_value", catalog, vocab)) == [0, 12.5, 0, 40, 0]
    assert _values(reward_from_catalog("revenue", catalog, vocab)) == [30, 0, 0, 0, 0]
    shuffled = catalog.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert _values(reward_from_catalog("engagement", shuffled, vocab)) == [20, 10, 60, 30, 0]


def test_catalog_edge_values(catalog: pd.DataFrame) -> None:
    no_times = catalog.assign(avg_time_on_page_s=np.nan)
    assert _values(reward_from_catalog("engagement", no_times, ["/a", "/b"])) == [0, 0, 0]
    no_views = catalog.assign(pageviews=[10, 4, 0, 2, 1], revenue=[20.0, 0, 150, 0, 0])
    assert _values(reward_from_catalog("revenue", no_views, ["/a", "/c"])) == [2, 0, 0]
    # a reward that is 0 on every page is a valid table (the evaluation's revenue of a site
    # without transactions) but leaves an env nothing to learn: check_learnable refuses it
    no_revenue = reward_from_catalog("revenue", catalog, ["/a", "/b"])
    assert _values(no_revenue) == [0, 0, 0]
    with pytest.raises(ClickstreamError, match=r"'revenue' is 0 on every page of x.*pageviews"):
        check_learnable(no_revenue, "x")
    paying = reward_from_catalog("page_value", catalog, ["/a"])
    assert check_learnable(paying, "x") is paying
    assert _values(reward_from_catalog("pageviews", catalog[["page"]], ["/d", "/a"])) == [1, 1, 0]
    bad_value = catalog.assign(page_value=[12.5, np.nan, 0, 0, 0])
    with pytest.raises(ClickstreamError, match="'/b' has no finite page_value"):
        reward_from_catalog("page_value", bad_value, ["/a", "/b"])
    assert _values(reward_from_catalog("page_value", bad_value, ["/a"])) == [12.5, 0]


def test_catalog_errors(catalog: pd.DataFrame) -> None:
    with pytest.raises(ClickstreamError, match="vocabulary page '/x' is not in the page catalog"):
        reward_from_catalog("page_value", catalog, ["/a", "/x", "/y"])
    with pytest.raises(ClickstreamError, match=r"and 1 more"):
        reward_from_catalog("page_value", catalog, ["/a", "/x", "/y"])
    with pytest.raises(
        ClickstreamError, match=r"\['page_value', 'revenue', 'engagement', 'pageviews'\]"
    ):
        reward_from_catalog("clicks", catalog, ["/a"])
    with pytest.raises(ClickstreamError, match="lacks column"):
        reward_from_catalog("revenue", catalog.drop(columns="pageviews"), ["/a"])
    with pytest.raises(ClickstreamError, match="more than once"):
        reward_from_catalog("page_value", pd.concat([catalog, catalog]), ["/a"])
    with pytest.raises(ClickstreamError, match="EXIT"):
        reward_from_catalog("page_value", catalog, ["/a", "EXIT"])


def test_catalog_of_sampled_hits_estimates_the_true_rewards(store: SyntheticStore) -> None:
    """page_stats on the store's own hits estimates its true rewards (the data path)."""
    hits = store.sample_sessions(100_000, seed=5).hits
    group = dict(zip(store.pages, store.page_groups, strict=True))
    hits = hits.assign(page=hits["page_raw"], page_group=hits["page_raw"].map(group))
    pages = page_stats(hits)
    vocab = pages["page"].tolist()  # traffic order, not the store's
    busy = (pages["pageviews"] >= 10_000).to_numpy()
    assert busy.sum() >= 5

    def compare(kind: str, catalog: pd.DataFrame, rtol: float, median_rtol: float) -> None:
        est = reward_from_catalog(kind, catalog, vocab).per_page[:-1].numpy()[busy]
        true = reward_from_store(kind, store, vocab).per_page[:-1].numpy()[busy]
        np.testing.assert_allclose(est, true, rtol=rtol, err_msg=kind)
        assert np.median(np.abs(est / true - 1)) < median_rtol, kind

    compare("engagement", pages, 0.05, 0.02)
    # Orders of log-sd 1.6 make sampled page values very noisy; with each order at its mean
    # value only the paths' noise is left. It is still large on pages few buyers pass (5 % of
    # sessions buy): up to ±25 % over seeds at 100k sessions, about 5 % in the median.
    order = store.order_page
    mean_revenue = hits["page_raw"].eq("/ordercompleted.html") * store.expected_revenue[order]
    compare("page_value", page_stats(hits.assign(revenue=mean_revenue)), 0.35, 0.1)

    est = reward_from_catalog("revenue", pages, vocab).per_page
    true = reward_from_store("revenue", store, vocab).per_page
    i = vocab.index("/ordercompleted.html")
    assert float(est[i]) == pytest.approx(float(true[i]), rel=0.5)  # a few hundred orders
    assert int((est != 0).sum()) == 1 and int((true != 0).sum()) == 1


# ---- from the synthetic store ---------------------------------------------------------------


def test_store_revenue_and_engagement(store: SyntheticStore) -> None:
    revenue = reward_from_store("revenue", store)
    assert revenue.n_pages == store.n_pages == 60
    nonzero = torch.nonzero(revenue.per_page)[:, 0].tolist()
    assert nonzero == [store.order_page]
    cfg = store.config  # mean of the log-normal order value: 55 · e^(1.6² / 2) ≈ 197 USD
    mean_order = cfg.order_value_median * math.exp(cfg.order_value_sigma**2 / 2)
    assert float(revenue.per_page[store.order_page]) == pytest.approx(mean_order, rel=1e-6)

    engagement = reward_from_store("engagement", store)
    assert bool((engagement.per_page[:-1] > 0).all()) and float(engagement.per_page[-1]) == 0
    views = reward_from_store("pageviews", store)
    assert views.per_page.tolist() == [1.0] * store.n_pages + [0.0]
    home = store.page_index("/home")  # median 10 s, log-sd 1.1: 10 · e^0.605 ≈ 18.3 s
    assert float(engagement.per_page[home]) == pytest.approx(10 * math.exp(1.1**2 / 2), rel=1e-6)


def test_store_page_value_rises_along_the_funnel(store: SyntheticStore) -> None:
    pv = reward_from_store("page_value", store)
    values = pv.per_page[:-1].numpy()
    assert np.isfinite(values).all() and (values >= 0).all() and float(pv.per_page[-1]) == 0
    funnel = [values[store.page_index(p)] for p in FUNNEL]
    assert all(a < b for a, b in itertools.pairwise(funnel))
    assert funnel[-1] > 10 * values[store.page_index("/home")] > 0
    assert values.argmax() == store.page_index("/revieworder.html")


def test_exact_page_value_matches_simulation(store: SyntheticStore) -> None:
    exact = true_page_value(store, "exact")
    sampled = true_page_value(store, "sampled", n_sessions=50_000, seed=1)
    assert np.array_equal(true_page_value(store), exact)  # auto: exact for small stores
    pages = ["/home", "/store-search", *FUNNEL]  # well-visited; /ordercompleted.html is not
    idx = [store.page_index(p) for p in pages]
    np.testing.assert_allclose(sampled[idx], exact[idx], rtol=0.05, atol=0.5)


def _toy_store() -> SyntheticStore:
    """Pages A, B, O (orders, 100 USD); both intents enter on A, prior 1/2 each.

    browse: A → B 1/2 or EXIT 1/2; B → EXIT; O → EXIT. Never buys.
    buy:    A → B; B → A 1/2 or O 1/2; O → EXIT. Always buys, may view A and B many times.
    """
    base = build_store(SyntheticConfig(n_pages=50, seed=0))
    exit_ = 3
    return SyntheticStore(
        config=base.config,
        pages=["/a", "/b", "/ordercompleted.html"],
        page_titles=["A", "B", "O"],
        content_groups=[None, None, None],
        page_types=["home", "basket", "ordercompleted"],
        page_groups=["home", "basket", "order_completed"],
        intents=("browse", "buy"),
        prior=np.array([0.5, 0.5]),
        entry=np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]),
        indptr=np.array([0, 2, 3, 4, 5, 7, 8]),
        indices=np.array([1, exit_, exit_, exit_, 1, 0, 2, exit_]),
        probs=np.array([0.5, 0.5, 1.0, 1.0, 1.0, 0.5, 0.5, 1.0]),
        time_mu=np.zeros(3),
        time_sigma=np.zeros(3),
        expected_revenue=np.array([0.0, 0.0, 100.0]),
        beta=1.0,
    )


def test_page_value_by_hand_on_a_toy_store() -> None:
    # Every session views A; only buyers buy (100 USD): page value of A = 0.5 · 100 = 50.
    # B is viewed by every buyer and by half the browsers: (0.5 · 100) / (0.5 + 0.25) = 66.67.
    # O: nothing is bought after it. A buyer views A twice on average (returns do not count).
    toy = _toy_store()
    expected = [50.0, 100.0 / 1.5, 0.0]
    np.testing.assert_allclose(true_page_value(toy, "exact"), expected, atol=1e-9)
    sampled = true_page_value(toy, "sampled", n_sessions=20_000, seed=0)
    np.testing.assert_allclose(sampled, expected, rtol=0.03)


def test_markov_store_page_value() -> None:
    markov = build_store(n_pages=60, seed=0, mode="markov")
    values = true_page_value(markov)
    assert np.isfinite(values).all() and (values >= 0).all()
    assert values[markov.page_index("/revieworder.html")] > values[markov.page_index("/home")]


def test_store_rewards_follow_the_vocabulary(store: SyntheticStore) -> None:
    vocab = list(reversed(store.pages))[:10]
    for kind in REWARD_KINDS:
        full = reward_from_store(kind, store)
        part = reward_from_store(kind, store, vocab)
        assert part.n_pages == 10
        idx = torch.tensor([store.page_index(p) for p in vocab])
        assert torch.equal(part.per_page[:-1], full.per_page[idx])
    with pytest.raises(ClickstreamError, match="'/nope' is not in the synthetic store"):
        reward_from_store("revenue", store, ["/home", "/nope"])
    with pytest.raises(ClickstreamError, match="reward must be one of"):
        reward_from_store("profit", store)
    with pytest.raises(ClickstreamError, match="page value method"):
        reward_from_store("page_value", store, page_value_method="guess")


# ---- the table ------------------------------------------------------------------------------


def test_call_gathers_a_batch(store: SyntheticStore) -> None:
    table = reward_from_store("engagement", store)
    exit_ = store.exit_index
    landed = torch.tensor([0, exit_, 5, 5, store.order_page, exit_])
    out = table(landed)
    assert out.shape == (6,) and out.dtype == torch.float32
    assert out.tolist() == [table.per_page[i].item() for i in landed.tolist()]
    assert out[1] == 0 and out[5] == 0
    assert table(landed.view(2, 3)).shape == (2, 3)
    moved = table.to("cpu")
    assert moved.name == "engagement" and torch.equal(moved.per_page, table.per_page)
    assert moved.device == torch.device("cpu")


def test_table_validation() -> None:
    table = RewardTable("revenue", torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64))
    assert table.per_page.dtype == torch.float32
    with pytest.raises(ClickstreamError, match="EXIT"):
        RewardTable("revenue", torch.tensor([1.0, 2.0]))
    with pytest.raises(ClickstreamError, match="NaN"):
        RewardTable("revenue", torch.tensor([float("nan"), 0.0]))
    with pytest.raises(ClickstreamError, match=r"\(P \+ 1,\)"):
        RewardTable("revenue", torch.zeros(2, 2))
