"""Simulator fidelity: organic simulation against a toy Markov chain's exact statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clickstream.errors import ClickstreamError
from envs.click_model import build_click_model
from envs.core import SiteCore
from envs.dynamics import MarkovDynamics
from envs.fidelity import (
    _median_from_hist,
    fidelity_report,
    format_fidelity_markdown,
    format_fidelity_table,
    simulate_organic_sessions,
    total_variation,
)
from envs.sequences import SessionSequences, Vocabulary

PAGES = ("/a", "/b", "/c")
# pages /a and /b form group "browse", /c (the converting page) group "buy"
VOCAB = Vocabulary(pages=PAGES, groups=("browse", "buy"), page_group=np.array([0, 0, 1]))
CATALOG = pd.DataFrame({"page": list(PAGES), "revenue": [0.0, 0.0, 25.0]})
ENTRY = np.array([0.6, 0.3, 0.1])
# rows: from /a, /b, /c; columns: /a, /b, /c, EXIT
TRANSITIONS = np.array(
    [
        [0.1, 0.4, 0.1, 0.4],
        [0.3, 0.0, 0.3, 0.4],
        [0.2, 0.2, 0.0, 0.6],
    ]
)


def make_core(
    n_visitors: int = 1024,
    entry: np.ndarray = ENTRY,
    transitions: np.ndarray = TRANSITIONS,
    max_steps: int = 1000,
    allow_no_recommendation: bool = True,
) -> SiteCore:
    return SiteCore(
        MarkovDynamics(entry, transitions, PAGES),
        build_click_model("boost", beta=2.0),  # a strong response: showing nothing must matter
        np.zeros(len(PAGES) + 1),
        n_visitors,
        allow_no_recommendation=allow_no_recommendation,
        max_steps=max_steps,
    )


def exact_statistics() -> dict[str, object]:
    """The chain's exact figures from its fundamental matrix ``N = (I - Q)^-1``."""
    q = TRANSITIONS[:, :3]
    exit_p = TRANSITIONS[:, 3]
    visits = ENTRY @ np.linalg.inv(np.eye(3) - q)  # expected views of each page per session
    # P(session reaches /c): h_c = 1, h_i = Q[i, c] + Σ_{j≠c} Q[i, j] h_j
    sub = [0, 1]
    h = np.linalg.solve(np.eye(2) - q[np.ix_(sub, sub)], q[sub, 2])
    views_by_group = np.array([visits[:2].sum(), visits[2]])
    exits_by_group = np.array([(visits * exit_p)[:2].sum(), (visits * exit_p)[2]])
    lengths = np.array([ENTRY @ np.linalg.matrix_power(q, k - 1) @ exit_p for k in range(1, 60)])
    return {
        "pages_per_session": visits.sum(),
        "bounce_rate": ENTRY @ exit_p,
        "conversion_rate": ENTRY[:2] @ h + ENTRY[2],
        "page_freq": visits / visits.sum(),
        "exit_rate_by_group": exits_by_group / views_by_group,
        "length_dist": lengths,
    }


@pytest.fixture(scope="module")
def simulated() -> SessionSequences:
    return simulate_organic_sessions(make_core(), 30_000, seed=0)


def test_simulated_statistics_converge_to_the_exact_ones(simulated) -> None:
    exact = exact_statistics()
    assert len(simulated) == 30_000 and not simulated.truncated.any()
    lengths = simulated.lengths
    # standard errors at 30,000 sessions: mean length ~0.011, rates ~0.003
    assert lengths.mean() == pytest.approx(exact["pages_per_session"], abs=0.05)
    assert (lengths == 1).mean() == pytest.approx(exact["bounce_rate"], abs=0.012)
    assert total_variation(np.bincount(lengths, minlength=60)[1:60], exact["length_dist"]) < 0.02
    freq = np.bincount(simulated.pages, minlength=3)
    assert total_variation(freq, exact["page_freq"]) < 0.01

    # the report's figures on the simulated side are the same statistics
    report = fidelity_report(simulated, simulated, VOCAB, CATALOG, n_boot=0)
    sim = {k: v["simulator"] for k, v in report["figures"].items()}
    assert sim["pages_per_session"] == pytest.approx(lengths.mean())
    assert sim["conversion_rate"] == pytest.approx(exact["conversion_rate"], abs=0.012)
    for g, name in enumerate(VOCAB.groups):
        assert report["exit_rate_by_group"][name]["simulator"] == pytest.approx(
            exact["exit_rate_by_group"][g], abs=0.012
        )
    assert report["converting_pages"] == ["/c"]


def test_sessions_are_whole_and_in_arrival_order() -> None:
    # deterministic walk /a → /b → /c → EXIT from every entry: each session is a suffix of it
    walk = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    sims = simulate_organic_sessions(make_core(64, transitions=walk), 200, seed=3)
    assert len(sims) == 200
    suffixes = {(0, 1, 2), (1, 2), (2,)}
    assert {tuple(sims.session(i)) for i in range(len(sims))} <= suffixes
    assert list(sims.session_ids[:2]) == ["sim0", "sim1"]


def test_sessions_cut_at_max_steps_are_marked() -> None:
    # nobody ever leaves: every session is cut after max_steps steps, max_steps + 1 page views
    loop = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0.0]])
    sims = simulate_organic_sessions(make_core(16, transitions=loop, max_steps=3), 37, seed=0)
    assert len(sims) == 37 and sims.truncated.all()
    assert (sims.lengths == 4).all()
    report = fidelity_report(sims, sims, VOCAB, CATALOG, n_boot=0)
    assert report["sizes"]["simulator_truncated"] == 37


def test_fewer_sessions_than_visitors() -> None:
    sims = simulate_organic_sessions(make_core(256), 10, seed=1)
    assert len(sims) == 10 and len(sims.truncated) == 10
    assert sims.offsets[-1] == len(sims.pages)


def test_needs_the_show_nothing_action() -> None:
    with pytest.raises(ClickstreamError, match="show nothing"):
        simulate_organic_sessions(make_core(8, allow_no_recommendation=False), 10)
    with pytest.raises(ClickstreamError, match="n_sessions"):
        simulate_organic_sessions(make_core(8), 0)


def test_same_seed_same_sessions_and_report() -> None:
    def once(seed: int) -> tuple[SessionSequences, dict]:
        sims = simulate_organic_sessions(make_core(128), 2000, seed=seed)
        test = SessionSequences.from_lists([[0], [0, 1, 2], [1, 2]], exit_id=3)
        return sims, fidelity_report(sims, test, VOCAB, CATALOG, n_boot=20, seed=seed)

    (a, ra), (b, rb), (c, _) = once(4), once(4), once(5)
    assert np.array_equal(a.pages, b.pages) and np.array_equal(a.offsets, b.offsets)
    assert ra == rb
    assert not np.array_equal(a.pages[: len(c.pages)], c.pages[: len(a.pages)])


def test_report_figures_on_hand_made_sessions() -> None:
    test = SessionSequences.from_lists([[0], [0, 1, 2], [1, 2]], exit_id=3)
    sim = SessionSequences.from_lists([[1, 1], [2], [0, 2], [0]], exit_id=3)
    r = fidelity_report(sim, test, VOCAB, CATALOG, n_boot=10)
    f = r["figures"]
    assert f["pages_per_session"]["test"] == pytest.approx(2.0)
    assert f["pages_per_session"]["simulator"] == pytest.approx(1.5)
    assert f["pages_per_session"]["difference"] == pytest.approx(-0.5)
    assert f["median_pages_per_session"]["test"] == 2.0
    assert f["median_pages_per_session"]["simulator"] == 1.5
    assert f["bounce_rate"]["test"] == pytest.approx(1 / 3)
    assert f["bounce_rate"]["simulator"] == pytest.approx(0.5)
    assert f["conversion_rate"]["test"] == pytest.approx(2 / 3)
    assert f["conversion_rate"]["simulator"] == pytest.approx(0.5)
    # test: browse 4 views, 1 exit; buy 2 views, 2 exits. sim: browse 4 views, 2 exits (/b, /a);
    # buy 2 views, 2 exits
    ex = r["exit_rate_by_group"]
    assert ex["browse"]["test"] == pytest.approx(0.25) and ex["buy"]["test"] == 1.0
    assert ex["browse"]["simulator"] == pytest.approx(0.5) and ex["buy"]["simulator"] == 1.0
    assert ex["browse"]["test_views"] == 4 and ex["buy"]["simulator_views"] == 2
    # page views: test (2, 2, 2)/6, sim (2, 2, 2)/6 → 0; lengths: test {1,2,3}, sim {1,1,2,2}
    assert r["distances"]["tv_pages"]["value"] == pytest.approx(0.0)
    assert r["distances"]["tv_session_length"]["value"] == pytest.approx(1 / 3)
    lo, hi = f["bounce_rate"]["difference_ci95"]
    assert lo <= hi
    table = format_fidelity_table(r)
    assert "exit rate: browse" in table and "tv_pages" in table
    md = format_fidelity_markdown(r)
    assert md.startswith("# Simulator fidelity") and "| bounce_rate |" in md


def test_tv_distance_of_identical_and_disjoint_samples() -> None:
    assert total_variation([1, 2, 3], [2, 4, 6]) == 0.0
    assert total_variation([1, 0, 0], [0, 2, 3]) == 1.0
    assert total_variation([1, 1], [1, 0, 1]) == pytest.approx(0.5)
    sessions = SessionSequences.from_lists([[0, 1], [1], [0, 1, 0]], exit_id=3)
    same = fidelity_report(sessions, sessions, VOCAB, CATALOG, n_boot=0)
    assert all(d["value"] == 0.0 for d in same["distances"].values())
    assert all(v["difference"] == 0.0 for v in same["figures"].values())
    # disjoint pages and groups (and lengths)
    only_c = SessionSequences.from_lists([[2, 2, 2], [2, 2, 2]], exit_id=3)
    apart = fidelity_report(only_c, sessions, VOCAB, CATALOG, n_boot=0)
    assert {k: d["value"] for k, d in apart["distances"].items()} == {
        "tv_pages": 1.0,
        "tv_groups": 1.0,
        "tv_session_length": pytest.approx(2 / 3),
    }
    # a group one side never viewed has no exit rate there
    assert apart["exit_rate_by_group"]["browse"]["simulator"] is None
    assert apart["exit_rate_by_group"]["browse"]["difference"] is None


def test_noise_floor_shrinks_with_test_size() -> None:
    rng = np.random.default_rng(0)

    def sample(n: int) -> SessionSequences:
        return SessionSequences.from_lists(
            [rng.integers(0, 3, rng.integers(1, 5)) for _ in range(n)], exit_id=3
        )

    small = fidelity_report(sample(2000), sample(50), VOCAB, CATALOG, n_boot=50)
    large = fidelity_report(sample(2000), sample(2000), VOCAB, CATALOG, n_boot=50)
    assert (
        large["distances"]["tv_pages"]["noise_floor"]
        < small["distances"]["tv_pages"]["noise_floor"] / 3
    )


def test_median_from_histogram_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 10, 101):
        values = rng.integers(1, 9, n)
        assert _median_from_hist(np.bincount(values).astype(float)) == np.median(values)


def test_vocabulary_mismatch_and_missing_revenue() -> None:
    sessions = SessionSequences.from_lists([[0, 1]], exit_id=3)
    other = SessionSequences.from_lists([[0, 1]], exit_id=4)
    with pytest.raises(ClickstreamError, match="vocabulary"):
        fidelity_report(other, sessions, VOCAB, CATALOG)
    with pytest.raises(ClickstreamError, match="revenue"):
        fidelity_report(sessions, sessions, VOCAB, CATALOG.drop(columns="revenue"))


def test_report_of_a_10000_page_site_fits_on_one_screen() -> None:
    """An item-level site: 10,000 pages, one group per page (the worst case). The table and the
    Markdown summarise (most viewed and worst pages and groups); the JSON keeps every one."""
    p = 10_000
    vocab = Vocabulary(
        pages=tuple(f"/{100000 + i}" for i in range(p)),
        groups=tuple(f"/{100000 + i}" for i in range(p)),
        page_group=np.arange(p),
    )
    catalog = pd.DataFrame({"page": list(vocab.pages), "revenue": np.zeros(p)})
    rng = np.random.default_rng(0)
    zipf = 1.0 / np.arange(1, p + 1)

    def sessions(n: int, skew: float) -> SessionSequences:
        w = zipf**skew
        lengths = rng.integers(1, 8, size=n)
        pages = rng.choice(p, size=int(lengths.sum()), p=w / w.sum())
        return SessionSequences.from_lists(np.split(pages, np.cumsum(lengths)[:-1]), exit_id=p)

    test, sim = sessions(5_000, 1.0), sessions(5_000, 0.9)
    # page 7 is over-simulated: the worst offender
    sim.pages[: sim.n_steps // 10] = 7
    r = fidelity_report(sim, test, vocab, catalog, n_boot=20, top=5)

    table = format_fidelity_table(r)
    lines = table.splitlines()
    assert len(lines) <= 40, table
    assert max(len(line) for line in lines) <= 120
    s = r["summary"]
    assert s["n_groups"] == p and len(s["top_groups"]) == 5 and len(s["worst_groups"]) == 5
    assert len(s["top_pages"]) == 5 and len(s["worst_pages"]) == 5
    assert "/100007" in s["top_pages"] + s["worst_pages"]
    assert r["pages"][0]["page"] == "/100007"  # the largest contribution comes first
    md = format_fidelity_markdown(r)
    table_rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table_rows) <= 3 * 1 + 7 + 10 + 10  # 3 headers, figures, groups, pages

    # the JSON holds every page either side viewed, and their TV contributions add up
    seen = np.union1d(test.pages, sim.pages)
    assert len(r["pages"]) == len(seen) == s["n_pages"]
    assert len(r["exit_rate_by_group"]) == p
    total = sum(row["tv_contribution"] for row in r["pages"])
    assert total == pytest.approx(r["distances"]["tv_pages"]["value"])
    contributions = [row["tv_contribution"] for row in r["pages"]]
    assert contributions == sorted(contributions, reverse=True)
    worst = r["pages"][0]
    assert worst["simulator_share"] > 0.1 > worst["test_share"]
    lo, hi = worst["difference_ci95"]
    assert lo <= worst["difference"] <= hi and lo > 0
