"""The latent-class visitor model: exact predictive, recovery of known types, the simulator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clickstream.errors import ClickstreamError
from envs.baselines import FirstOrderMarkov, mean_log_loss
from envs.click_model import MultinomialBoost
from envs.core import SiteCore
from envs.latent_class import LatentClassConfig, LatentClassModel
from envs.sequences import SessionSequences

PAGES = ("/a1", "/a2", "/b1", "/b2")
GROUPS = np.array([0, 0, 1, 1])


SHARED = np.array(
    [
        [0.1, 0.4, 0.2, 0.1, 0.2],
        [0.4, 0.1, 0.1, 0.2, 0.2],
        [0.2, 0.1, 0.1, 0.3, 0.3],
        [0.1, 0.2, 0.3, 0.1, 0.3],
    ]
)
"""The page table that :func:`two_types` re-weights by group per type."""


def two_types() -> LatentClassModel:
    """Type 0 (70 %) stays in group a, type 1 (30 %) moves on to group b: the model's own
    family (a shared page table re-weighted by group per type)."""
    weight = {
        0: np.array([[3.0, 0.2, 1.0], [3.0, 0.2, 1.0]]),
        1: np.array([[0.2, 4.0, 1.0], [0.2, 4.0, 1.0]]),
    }
    dest = np.r_[GROUPS, 2]
    rows = []
    for z in (0, 1):
        t = SHARED * weight[z][GROUPS][:, dest]
        rows.append(t / t.sum(1, keepdims=True))
    entry = np.array([[0.6, 0.4, 0.0, 0.0], [0.3, 0.3, 0.2, 0.2]])
    return LatentClassModel(np.array([0.7, 0.3]), entry, np.stack(rows), PAGES)


def sample(model: LatentClassModel, n: int, seed: int) -> SessionSequences:
    rng = np.random.default_rng(seed)
    p = len(model.pages)
    sessions = []
    for _ in range(n):
        z = rng.choice(len(model.prior), p=model.prior)
        page, session = rng.choice(p, p=model.entry[z]), []
        while page != p and len(session) < 30:
            session.append(page)
            page = rng.choice(p + 1, p=model.transitions[z, page])
        sessions.append(session)
    return SessionSequences.from_lists(sessions, p)


def test_predictive_is_the_forward_filter_by_hand() -> None:
    m = two_types()
    logp = m.log_prob_next(np.array([[0, 2, 4]]), lengths=np.array([2]))[0]
    # after /a1: p(z) ∝ prior · entry(z, /a1)
    w = m.prior * m.entry[:, 0]
    w = w / w.sum()
    np.testing.assert_allclose(np.exp(logp[0]), w @ m.transitions[:, 0], rtol=1e-12)
    # after /a1 -> /b1: times the step's probability under each type
    w2 = m.prior * m.entry[:, 0] * m.transitions[:, 0, 2]
    w2 = w2 / w2.sum()
    np.testing.assert_allclose(np.exp(logp[1]), w2 @ m.transitions[:, 2], rtol=1e-12)
    assert np.isnan(logp[2]).all()
    np.testing.assert_allclose(m.session_type_posterior(np.array([0, 2])), w2, rtol=1e-12)


def test_fit_recovers_known_types_and_auto_picks_their_number() -> None:
    truth = two_types()
    train, valid = sample(truth, 6000, seed=1), sample(truth, 2000, seed=2)
    cfg = LatentClassConfig(classes="auto", max_classes=3, restarts=2, iters=300)
    fit = LatentClassModel.fit(train, GROUPS, PAGES, cfg, valid=valid)
    assert fit.n_classes == 2 and fit.info["classes"] == 2
    scores = {int(k): v for k, v in fit.info["valid_log_loss"].items()}
    assert scores[2] < scores[1] - 0.02  # a second type pays on held-out sessions
    np.testing.assert_allclose(fit.prior, truth.prior, atol=0.04)  # types sorted by size
    np.testing.assert_allclose(fit.transitions.sum(-1), 1.0, atol=1e-12)
    # each type's probability of leaving group a for group b, from /a1
    to_b = lambda m: m.transitions[:, 0, 2:4].sum(-1)  # noqa: E731
    np.testing.assert_allclose(to_b(fit), to_b(truth), atol=0.05)
    # and it predicts held-out sessions better than a first-order chain, close to the truth
    first_order = mean_log_loss(FirstOrderMarkov().fit(train), valid)
    assert mean_log_loss(fit, valid) < first_order - 0.02
    assert mean_log_loss(fit, valid) - mean_log_loss(truth, valid) < 0.01


def test_fit_replays_under_a_seed() -> None:
    train = sample(two_types(), 1000, seed=3)
    cfg = LatentClassConfig(classes=2, restarts=1, iters=50)
    a = LatentClassModel.fit(train, GROUPS, PAGES, cfg)
    b = LatentClassModel.fit(train, GROUPS, PAGES, cfg)
    np.testing.assert_array_equal(a.transitions, b.transitions)
    assert a.info["classes"] == 2 and a.info["parameters"] == 2 * (2 * 4 + 1) - 1


def test_fitting_likelihood_equals_the_dense_tables_one() -> None:
    """The fit never builds the (Z, P, P + 1) table: its likelihood (per-group normalisers and
    the observed transitions) must equal the one read off the dense tables, also with a group
    id that has no pages (its mass is zero)."""
    from envs.latent_class import _Problem

    train = sample(two_types(), 500, seed=4)
    for groups in (GROUPS, np.array([0, 0, 2, 2])):  # group 1 empty in the second
        problem = _Problem(train, groups, smoothing=20.0)
        gen = torch.Generator().manual_seed(5)
        g = problem.n_groups
        v = torch.randn(3, g, g + 1, generator=gen, dtype=torch.float64)
        c = torch.randn(3, g, generator=gen, dtype=torch.float64)
        a = torch.randn(3, generator=gen, dtype=torch.float64)
        log_prior, log_e, log_t = problem.tables(v, c, a)
        src, dst, dense = train.pages, train.targets(), 0.0
        for start, end in zip(train.offsets[:-1], train.offsets[1:], strict=True):
            steps = log_t[:, src[start:end], dst[start:end]].sum(-1)  # (Z,)
            dense += float(torch.logsumexp(log_prior + log_e[:, src[start]] + steps, dim=0))
        assert float(problem.log_likelihood(v, c, a)) == pytest.approx(dense, rel=1e-12)


def test_a_given_base_table_replaces_the_counted_one() -> None:
    from envs.dynamics import first_order_table

    truth = two_types()
    train, valid = sample(truth, 80, seed=6), sample(truth, 4000, seed=7)
    cfg = LatentClassConfig(classes=2, restarts=2, iters=300)
    counted = LatentClassModel.fit(train, GROUPS, PAGES, cfg)
    # passing the table the fit would count is the default fit, exactly
    same = LatentClassModel.fit(
        train, GROUPS, PAGES, cfg, base_table=first_order_table(train, cfg.smoothing)
    )
    np.testing.assert_array_equal(same.transitions, counted.transitions)
    # the generating model's own table (no sampling error): from 80 sessions the held-out
    # log-loss is 0.008 above the truth's, where the counted table leaves 0.016
    oracle = LatentClassModel.fit(train, GROUPS, PAGES, cfg, base_table=np.asarray(SHARED))
    truth_loss = mean_log_loss(truth, valid)
    assert mean_log_loss(oracle, valid) - truth_loss < 0.01
    assert mean_log_loss(counted, valid) - truth_loss > 0.015
    with pytest.raises(ClickstreamError, match=r"base table must be \(4, 5\)"):
        LatentClassModel.fit(train, GROUPS, PAGES, cfg, base_table=np.asarray(SHARED)[:, :4])
    with pytest.raises(ClickstreamError, match=r"sum to 1 \(row sums 2 to 2"):
        LatentClassModel.fit(train, GROUPS, PAGES, cfg, base_table=2 * np.asarray(SHARED))
    # a table that rules out a move the training sessions make: /a1 -> /a2
    blocked = np.asarray(SHARED).copy()
    blocked[0] = [0.2, 0.0, 0.3, 0.2, 0.3]
    with pytest.raises(
        ClickstreamError, match=r"probability 0 to [\d,]+ training .*'/a1' -> '/a2'"
    ):
        LatentClassModel.fit(train, GROUPS, PAGES, cfg, base_table=blocked)


def test_save_and_load_round_trip(tmp_path) -> None:
    m = two_types()
    m.info = {"classes": 2}
    back = LatentClassModel.load(m.save(tmp_path / "lc.npz"))
    np.testing.assert_array_equal(back.transitions, m.transitions)
    assert back.pages == PAGES and back.info == {"classes": 2}


def test_bad_input_is_named() -> None:
    with pytest.raises(ClickstreamError, match="no latent-class visitor model"):
        LatentClassModel.load("/nonexistent/latent_class.npz")
    with pytest.raises(ClickstreamError, match="classes must be an integer"):
        LatentClassConfig(classes=0)
    with pytest.raises(ClickstreamError, match="unknown"):
        LatentClassConfig.from_dict({"clases": 3})
    train = sample(two_types(), 50, seed=0)
    with pytest.raises(ClickstreamError, match="validation split"):
        LatentClassModel.fit(train, GROUPS, PAGES, LatentClassConfig(classes="auto"))
    with pytest.raises(ClickstreamError, match="group id"):
        LatentClassModel.fit(train, GROUPS[:3], PAGES, LatentClassConfig(classes=1))
    m = two_types()
    with pytest.raises(ClickstreamError, match="must sum to 1"):
        LatentClassModel(m.prior * 2, m.entry, m.transitions, PAGES)
    no_b2 = LatentClassModel(
        m.prior, np.array([[0.6, 0.4, 0, 0], [0.5, 0.3, 0.2, 0]]), m.transitions, PAGES
    )
    with pytest.raises(ClickstreamError, match=r"impossible .* '/b2'"):
        no_b2.log_prob_next(np.array([[3, 0]]))
    # a page one type never enters from is fine: the other type explains it
    assert np.isfinite(no_b2.log_prob_next(np.array([[2, 0]]))[0, 0]).all()


def test_simulated_visitors_keep_their_type_and_respond_on_its_row() -> None:
    m = two_types()
    click = MultinomialBoost(beta=1.5)
    core = SiteCore(m.dynamics(), click, np.r_[0.0, 0.0, 1.0, 5.0, 0.0], n_visitors=4096)
    core.reset(seed=0)
    types = core.dynamics.intent(core.state).clone()
    assert abs(float((types == 1).float().mean()) - 0.3) < 0.03
    actions = torch.full((4096,), 2)  # recommend /b1: nothing to a visitor already on it
    shown = torch.where(core.page == 2, -1, 2)
    assert bool((shown == -1).any())  # some are: that row stays organic
    expected = click.apply(core.dynamics.transitions[types, core.page], shown)
    torch.testing.assert_close(core.next_page_probs(actions), expected)
    for _ in range(3):
        step = core.step(actions)
        new = step.terminated | step.truncated
        assert torch.equal(core.dynamics.intent(core.state)[~new], types[~new])
        types = core.dynamics.intent(core.state).clone()
