"""The latent-type GRU: per-type rows, the exact marginal likelihood, exact filtering, the
simulator's visitors keeping their type, persistence, and recovery of known types."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from agents.base import TablePolicy
from agents.evaluate import mean_ci, simulate
from agents.tabular import SiteMDP, policy_value
from clickstream.errors import ClickstreamError, RunFolderError
from envs.click_model import MultinomialBoost
from envs.core import SiteCore
from envs.latent_gru import (
    LatentGRUDynamics,
    LatentGRUModel,
    LatentTypesConfig,
    counted_trunk,
    fit_counted_full_batch,
    train_in_stages,
    train_one_stage,
)
from envs.sequences import SessionSequences, Vocabulary
from envs.training import TrainerConfig, mean_log_loss, train
from envs.visitor_model import ModelConfig, NegativeSampler, TrainingBatch, VisitorModel
from envs.visitors.latent_gru import choose_types

PAGES = ("/a1", "/a2", "/a3", "/b1", "/b2", "/b3")
GROUPS = ("a", "b")


def vocab() -> Vocabulary:
    return Vocabulary(PAGES, GROUPS, np.array([0, 0, 0, 1, 1, 1]))


def small_model(k: int = 3, seed: int = 0, **cfg) -> LatentGRUModel:
    torch.manual_seed(seed)
    settings = {"embedding_dim": 8, "hidden_size": 8, "dropout": 0.0, "group_dim": 4, **cfg}
    model = LatentGRUModel(vocab(), ModelConfig(**settings), n_types=k, init_scale=1.0)
    with torch.no_grad():  # random type preferences, prior and entries: types that differ
        model.latent.type_logit.normal_()
        model.latent.entry_page.normal_()
        model.latent.type_page.normal_()
    return model


def sessions() -> SessionSequences:
    rng = np.random.default_rng(0)
    return SessionSequences.from_lists(
        [list(rng.integers(0, len(PAGES), rng.integers(1, 7))) for _ in range(40)], len(PAGES)
    )


def brute_force(model: LatentGRUModel, session: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-type rows after every prefix ``(K, T, P + 1)`` and the joint ``log p(z, session)``
    (entry, every step, EXIT at the end), from :meth:`LatentGRUNet.type_rows`."""
    net = model.latent
    pages = torch.tensor([session])
    with torch.no_grad():
        out, _ = net.encode(pages)
        rows = net.type_rows(out, pages)[:, 0].double()  # (K, T, P + 1)
        targets = torch.tensor([*session[1:], len(PAGES)])
        steps = rows.gather(2, targets[None, :, None].expand(len(rows), -1, 1))[..., 0]
        joint = (
            net.log_type_prior().double()
            + net.entry_log_probs()[:, session[0]].double()
            + steps.sum(1)
        )
    return rows.exp().numpy(), joint.numpy()


def test_every_type_row_is_a_distribution_of_the_trunk_and_its_type_terms() -> None:
    model = small_model()
    model.net.eval()
    pages = torch.tensor([[0, 3, 4]])
    with torch.no_grad():
        out, _ = model.latent.encode(pages)
        rows = model.latent.type_rows(out, pages).exp()  # (K, 1, T, P + 1)
    assert rows.shape == (3, 1, 3, len(PAGES) + 1)
    torch.testing.assert_close(rows.sum(-1), torch.ones(3, 1, 3))
    # a type's row is the trunk's logits plus its group move and its page preference
    base = torch.log_softmax(model.latent.scores(out, pages), -1)
    net = model.latent
    for z in range(3):
        extra = net.type_move[z, net.page_group[pages]][..., net.outcome_group] + net.type_page[z]
        want = torch.softmax(base + extra, -1)
        torch.testing.assert_close(rows[z], want.detach())
    assert not torch.allclose(rows[0], rows[1])
    entry = model.latent.entry_log_probs().exp()
    torch.testing.assert_close(entry.sum(1), torch.ones(3))


def test_batch_loss_is_the_exact_marginal_likelihood() -> None:
    model = small_model()
    seqs = sessions()
    p = len(PAGES)
    lists = [seqs.session(i).tolist() for i in range(6)]
    width = max(map(len, lists))
    pages = torch.full((6, width), p)
    targets = torch.zeros(6, width, dtype=torch.long)
    for i, s in enumerate(lists):
        pages[i, : len(s)] = torch.tensor(s)
        targets[i, : len(s)] = torch.tensor([*s[1:], p])
    valid = pages < p
    lengths = valid.sum(1)
    batch = TrainingBatch(
        pages, torch.zeros_like(pages), targets, valid, lengths, None, torch.ones(6, dtype=bool)
    )
    model.net.eval()
    got = float(model.batch_loss(batch, None).detach())
    marginal = [np.logaddexp.reduce(brute_force(model, s)[1]) for s in lists]
    assert got == pytest.approx(-sum(marginal) / int(lengths.sum()), rel=1e-5)
    # the sampled normaliser with every outcome once and no weight is the exact one
    every = NegativeSampler(torch.full((p + 1,), -np.log(p + 1.0)), n_draws=100_000, exact=0)
    torch.manual_seed(0)
    assert float(model.batch_loss(batch, every).detach()) == pytest.approx(got, rel=1e-2)


def test_the_predictive_filters_the_types_exactly() -> None:
    model = small_model()
    seqs = sessions()
    targets = seqs.targets()
    rows_seen = 0
    for rows, logp in model.iter_log_probs(seqs, batch_sessions=7):
        np.testing.assert_allclose(np.exp(logp).sum(1), 1.0, rtol=1e-5)
        for step, lp in zip(rows, logp, strict=True):
            s = int(np.searchsorted(seqs.offsets, step, side="right") - 1)
            t = int(step - seqs.offsets[s])
            session = seqs.session(s).tolist()
            rows_k, _ = brute_force(model, session)
            # the posterior before position t: prior, entry and the steps before t
            start = brute_force(model, session[:1])[1] - np.log(rows_k[:, 0, len(PAGES)])
            steps = [np.log(rows_k[:, u, session[u + 1]]) for u in range(t)]
            log_w = start + np.sum(steps, axis=0) if steps else start
            w = np.exp(log_w - np.logaddexp.reduce(log_w))
            want = w @ rows_k[:, t]
            np.testing.assert_allclose(np.exp(lp), want, rtol=2e-4, atol=1e-7)
            assert targets[step] == ([*session, len(PAGES)])[t + 1]
            rows_seen += 1
    assert rows_seen == seqs.n_steps
    weights, rows = model.next_types([0, 3])
    assert weights.sum() == pytest.approx(1.0) and rows.shape == (3, len(PAGES) + 1)
    mix = model.log_prob_next(np.array([[0, 3]]))[0, -1].exp().double().numpy()
    np.testing.assert_allclose(weights @ rows, mix, rtol=1e-5)


def test_simulated_visitors_keep_their_type_and_follow_its_row() -> None:
    model = small_model()
    model.net.eval()
    dyn = LatentGRUDynamics(model)
    gen = torch.Generator().manual_seed(0)
    pages, state = dyn.start(20_000, gen)
    types = dyn.intent(state)
    prior = model.latent.log_type_prior().exp().detach()
    counts = torch.bincount(types, minlength=3) / 20_000.0
    torch.testing.assert_close(counts, prior, atol=0.015, rtol=0)
    # a visitor of type z on entry page j moves by her own type's row after [j]
    for z in range(3):
        first = int(pages[types == z][0])
        one = state[(types == z) & (pages == first)][:1]
        _, rows = model.next_types([first])
        got = dyn.next_probs(torch.tensor([first]), one)[0].double().numpy()
        np.testing.assert_allclose(got, rows[z], rtol=1e-4, atol=1e-7)
    # through a core (with a recommendation boosting the row): types never change
    core = SiteCore(dyn, MultinomialBoost(2.0), torch.ones(len(PAGES) + 1), 64)
    core.reset(1)
    kept = 0
    for _ in range(5):
        before = dyn.intent(core.state).clone()
        r = core.step(torch.zeros(64, dtype=torch.long))
        stayed = ~(r.terminated | r.truncated)
        assert torch.equal(dyn.intent(core.state)[stayed], before[stayed])
        kept += int(stayed.sum())
    assert kept > 64  # the check saw visitors who moved on, not only new arrivals
    # candidate mode scores the same outcomes the same way
    cand = LatentGRUDynamics(model, full_logits=False)
    _, cstate = cand.start(8, torch.Generator().manual_seed(1))
    fpages, fstate = dyn.start(8, torch.Generator().manual_seed(1))
    every = torch.arange(len(PAGES) + 1).expand(8, -1)
    torch.testing.assert_close(
        torch.softmax(cand.log_scores(fpages, cstate, every), -1),
        dyn.next_probs(fpages, fstate),
        rtol=1e-5,
        atol=1e-6,
    )


def test_a_first_order_trunk_gives_its_types_tables_and_their_exact_value(monkeypatch) -> None:
    model = small_model()
    model.net.eval()
    model.latent.memory = False  # the trunk sees the current page only
    dyn = LatentGRUDynamics(model)
    chains = dyn.chains()
    assert chains is not None and chains.transitions.shape == (3, len(PAGES), len(PAGES) + 1)
    torch.testing.assert_close(chains.transitions.sum(-1), torch.ones(3, len(PAGES)))
    net = model.latent
    torch.testing.assert_close(chains.prior, net.log_type_prior().exp().detach())
    torch.testing.assert_close(chains.entry, net.entry_log_probs().exp().detach())
    # first-order: whatever came before page 2, type z moves by row (z, 2) of its table
    for history in ([2], [0, 4, 2], [5, 5, 1, 2]):
        _, rows = model.next_types(history)
        np.testing.assert_allclose(
            rows, chains.transitions[:, 2].double().numpy(), rtol=1e-4, atol=1e-7
        )
    # the exact value of a table in those chains is what the simulator pays it
    reward = torch.tensor([0.0, 1.0, 2.0, 0.5, 3.0, 1.0, 0.0])
    core = SiteCore(dyn, MultinomialBoost(2.0), reward, 512, action_pages=np.array([1, 4]))
    mdp = SiteMDP.from_core(core)
    assert mdp.n_intents == 3
    rng = np.random.default_rng(0)
    table = TablePolicy(rng.normal(size=(len(PAGES), len(core.action_pages))))  # /a2, /b2, none
    exact = policy_value(mdp, table.table_probs())["mean_return"]
    zeros = {k: torch.zeros(len(PAGES) + 1) for k in ("revenue", "time_on_page_s")}
    sessions = simulate(table, core, 102_400, seed=1, tables=zeros)
    mean, half = mean_ci(sessions.returns)
    assert abs(mean - exact) <= half and half < 0.01 * exact
    # with memory, in candidate mode or too large for dense tables: no tables to plan in
    assert LatentGRUDynamics(model, full_logits=False).chains() is None
    with monkeypatch.context() as patch:
        patch.setattr("envs.latent_gru.MAX_DENSE_CELLS", 3 * len(PAGES) * (len(PAGES) + 1) - 1)
        assert dyn.chains() is None
    model.latent.memory = True
    assert LatentGRUDynamics(model).chains() is None
    with pytest.raises(ClickstreamError, match="no first-order transition tables"):
        SiteMDP.from_core(SiteCore(LatentGRUDynamics(model), MultinomialBoost(2.0), reward, 4))


def test_save_load_round_trip_and_kinds_are_not_confused(tmp_path) -> None:
    model = small_model(k=2)
    path = model.save(tmp_path / "latent_gru.pt")
    back = LatentGRUModel.load(path)
    assert back.n_types == 2
    for a, b in zip(model.net.state_dict().values(), back.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    seqs = sessions()
    assert mean_log_loss(back, seqs) == pytest.approx(mean_log_loss(model, seqs), rel=1e-6)
    with pytest.raises(RunFolderError, match="visitor model checkpoint of kind gru"):
        VisitorModel.load(path)
    gru = VisitorModel(vocab(), ModelConfig(embedding_dim=8, hidden_size=8))
    gru_path = gru.save(tmp_path / "model.pt")
    with pytest.raises(RunFolderError, match="visitor model checkpoint of kind latent_gru"):
        LatentGRUModel.load(gru_path)


def test_config_and_choice_of_types() -> None:
    assert LatentTypesConfig.from_dict({"types": "auto"}).tried == (1, 2, 3, 4)
    assert LatentTypesConfig.from_dict({"types": 3}).tried == (3,)
    with pytest.raises(ClickstreamError, match=r"latent_gru\.types"):
        LatentTypesConfig.from_dict({"types": 0})
    with pytest.raises(ClickstreamError, match="latent_gru"):
        LatentTypesConfig.from_dict({"typos": 3})
    assert choose_types({1: 2.50, 2: 2.45, 3: 2.4495, 4: 2.40}, 0.001) == 4
    assert choose_types({1: 2.50, 2: 2.45, 3: 2.4495, 4: 2.4492}, 0.001) == 2
    with pytest.raises(ClickstreamError):
        model = small_model()
        model.next_types([])


def two_type_sessions(
    n: int, seed: int, b_enters_in_b: float = 0.0
) -> tuple[SessionSequences, np.ndarray]:
    """Type 0 (60 %) browses group a and leaves, type 1 goes a -> b and stays in b: what the
    page alone cannot tell (both enter on group a pages), the visit's type can. With
    ``b_enters_in_b`` type 1 enters on a group b page that often: the entry says who it is."""
    rng = np.random.default_rng(seed)
    out, types = [], []
    for _ in range(n):
        z = int(rng.random() < 0.4)
        page, s = int(rng.integers(0, 3)), []
        if z == 1 and b_enters_in_b > 0 and rng.random() < b_enters_in_b:
            page += 3
        while page != len(PAGES) and len(s) < 12:
            s.append(page)
            in_b = page >= 3
            if z == 0:
                probs = [0.3, 0.3, 0.2, 0.0, 0.0, 0.0, 0.2]
            else:
                probs = (
                    [0.05, 0.05, 0.05, 0.25, 0.25, 0.25, 0.1]
                    if not in_b
                    else [0.0, 0.0, 0.0, 0.3, 0.3, 0.3, 0.1]
                )
            page = int(rng.choice(len(PAGES) + 1, p=probs))
        out.append(s)
        types.append(z)
    return SessionSequences.from_lists(out, len(PAGES)), np.array(types)


def test_training_recovers_two_types_and_beats_one() -> None:
    train_s, _ = two_type_sessions(3000, 0)
    valid_s, _ = two_type_sessions(1000, 1)
    cfg = TrainerConfig(
        epochs=8, batch_sessions=128, max_len=32, lr=0.01, show_progress=False, patience=3
    )
    losses, first_order = {}, {}
    for k in (1, 2):
        torch.manual_seed(0)
        model = LatentGRUModel(
            vocab(), ModelConfig(embedding_dim=8, hidden_size=16, dropout=0.0), n_types=k
        )
        stages = train_in_stages(model, train_s, valid_s, cfg)
        first_order[k] = stages["first_order"]["best_valid_log_loss"]
        losses[k] = mean_log_loss(model, valid_s)
        if k == 2:
            prior = np.sort(model.latent.log_type_prior().exp().detach().numpy())
            np.testing.assert_allclose(prior, [0.4, 0.6], atol=0.08)
            # a visitor of the b-bound type, pushed into group b, stays b-bound
            _weights, rows = model.next_types([0])
            b_type = int(np.argmax(rows[:, 3:6].sum(1)))
            assert rows[b_type, 3:6].sum() > 0.6 and rows[1 - b_type, 3:6].sum() < 0.1
    # without memory, two types explain what one cannot (the visit says who the visitor is);
    # with it, one type's GRU reads the same from the history: a likelihood cannot tell them
    # apart, which is why the types are learnt first
    assert first_order[2] < first_order[1] - 0.02
    assert losses[2] <= losses[1] + 0.003


def two_stage_fit(
    cfg: TrainerConfig, hidden_size: int, **options: Any
) -> tuple[LatentGRUModel, dict]:
    """A two-type model trained in two stages on the two-type store (1,500 training and 500
    validation sessions), from seed 0's initial weights."""
    train_s, _ = two_type_sessions(1500, 0)
    valid_s, _ = two_type_sessions(500, 1)
    torch.manual_seed(0)
    model = LatentGRUModel(
        vocab(), ModelConfig(embedding_dim=8, hidden_size=hidden_size, dropout=0.0), n_types=2
    )
    return model, train_in_stages(model, train_s, valid_s, cfg, **options)


def test_the_memory_stage_is_kept_only_when_it_earns_its_keep() -> None:
    """The same two stages (same seed, same data) keep the memory stage when it is lower on
    validation at all (the default), and the first-order stage when it must win by more than
    it does (``memory_min_gain``); the model then scores what that stage scored."""
    valid_s, _ = two_type_sessions(500, 1)
    cfg = TrainerConfig(
        epochs=4, batch_sessions=128, max_len=32, lr=0.01, show_progress=False, patience=3
    )
    model, stages = two_stage_fit(cfg, 16, memory_min_gain=0.0)
    first = stages["first_order"]["best_valid_log_loss"]
    memory = stages["memory"]["best_valid_log_loss"]
    assert memory < first  # history helps a little even here: the rule has something to refuse
    assert model.latent.memory
    assert mean_log_loss(model, valid_s) == pytest.approx(memory, abs=1e-4)
    model, stages = two_stage_fit(cfg, 16, memory_min_gain=first - memory + 1e-3)
    assert stages["first_order"]["best_valid_log_loss"] == pytest.approx(first)
    assert not model.latent.memory
    assert mean_log_loss(model, valid_s) == pytest.approx(first, abs=1e-4)
    with pytest.raises(ClickstreamError, match="memory_min_gain must be >= 0"):
        LatentTypesConfig.from_dict({"memory_min_gain": -0.1})


def test_a_large_site_trains_on_sampled_terms_and_simulates_candidates() -> None:
    """3,000 pages: the sampled normaliser and the simulator's candidate mode (the paths that
    never score all pages per position; scripts/bench_latent_gru.py measures them at 10,000)."""
    p, groups = 3_000, 12
    rng = np.random.default_rng(0)
    vocab = Vocabulary(
        tuple(f"/p{i}" for i in range(p)),
        tuple(f"g{g}" for g in range(groups)),
        np.arange(p) % groups,
    )
    seqs = SessionSequences.from_lists(
        [list(rng.integers(0, p, rng.integers(1, 6))) for _ in range(400)], p
    )
    torch.manual_seed(0)
    model = LatentGRUModel(vocab, ModelConfig(embedding_dim=8, hidden_size=8), n_types=2)
    cfg = TrainerConfig(
        epochs=1, batch_sessions=64, sampled_softmax=128, show_progress=False, max_len=8
    )
    history = train_in_stages(model, seqs, seqs.select(np.arange(len(seqs)) < 50), cfg)
    assert np.isfinite([h["best_valid_log_loss"] for h in history.values()]).all()
    from envs.dynamics import top_successors

    dyn = LatentGRUDynamics(model, full_logits=False)
    core = SiteCore(
        dyn, MultinomialBoost(1.0), torch.ones(p + 1), 32, candidates=top_successors(seqs, 5)
    )
    core.reset(0)
    for _ in range(4):
        r = core.step(torch.randint(core.n_actions, (32,)))
        assert ((r.landed >= 0) & (r.landed <= p)).all()


@pytest.mark.gpu
def test_on_cuda_the_types_score_and_simulate_as_on_the_cpu() -> None:
    model = small_model()
    seqs = sessions()
    cpu = mean_log_loss(model, seqs)
    model.device = torch.device("cuda")
    model.net.to("cuda")
    assert mean_log_loss(model, seqs) == pytest.approx(cpu, rel=1e-4)
    dyn = LatentGRUDynamics(model).to("cuda")
    pages, state = dyn.start(4096, torch.Generator(device="cuda").manual_seed(0))
    probs = dyn.next_probs(pages, dyn.advance(pages, state))
    torch.testing.assert_close(probs.sum(1), torch.ones(4096, device="cuda"))


def test_restarts_keep_the_start_the_validation_split_prefers() -> None:
    """``restarts: 1`` replays the single-start run exactly; with 3 starts the kept first
    stage is the one of the lowest validation log-loss, and the starts really differ."""
    valid_s, _ = two_type_sessions(500, 1)
    cfg = TrainerConfig(
        epochs=3, batch_sessions=128, max_len=32, lr=0.01, show_progress=False, patience=2
    )
    _, one = two_stage_fit(cfg, 8, restarts=1)
    three_model, three = two_stage_fit(cfg, 8, restarts=3)
    assert one["first_order"]["restarts"] == [one["first_order"]["best_valid_log_loss"]]
    losses = three["first_order"]["restarts"]
    assert len(losses) == 3 and len(set(losses)) == 3  # different random starts
    # start 1 is the single-start run, bit for bit
    assert losses[0] == one["first_order"]["best_valid_log_loss"]
    kept = three["first_order"]["kept_restart"]
    assert losses[kept] == min(losses) == three["first_order"]["best_valid_log_loss"]
    # the memory stage starts from the kept start and the model ends with the better stage
    final = min(three["first_order"]["best_valid_log_loss"], three["memory"]["best_valid_log_loss"])
    assert mean_log_loss(three_model, valid_s) == pytest.approx(final, abs=2e-4)
    # here a later start wins (seeded), so the memory stage is not the single-start run's
    assert kept > 0
    assert three["memory"]["best_valid_log_loss"] != one["memory"]["best_valid_log_loss"]
    with pytest.raises(ClickstreamError, match="restarts"):
        LatentTypesConfig.from_dict({"types": 2, "restarts": 0})


def test_without_page_preferences_types_differ_by_group_moves_only(tmp_path) -> None:
    """``page_preferences: false`` leaves ``type_page`` a zero buffer that training never
    moves, and a saved model keeps the setting (so it reloads with the same parameters)."""
    assert LatentTypesConfig.from_dict({"types": 2}).page_preferences is True
    assert (
        LatentTypesConfig.from_dict({"types": 2, "page_preferences": False}).page_preferences
        is False
    )
    train_s, _ = two_type_sessions(400, 0)
    valid_s, _ = two_type_sessions(200, 1)
    torch.manual_seed(0)
    model = LatentGRUModel(
        vocab(),
        ModelConfig(embedding_dim=8, hidden_size=8, dropout=0.0),
        n_types=2,
        page_preferences=False,
    )
    names = {name for name, _ in model.net.named_parameters()}
    assert "type_page" not in names and "type_move" in names
    before = model.latent.type_move.detach().clone()
    cfg = TrainerConfig(epochs=2, batch_sessions=64, max_len=32, lr=0.01, show_progress=False)
    train_in_stages(model, train_s, valid_s, cfg)
    assert torch.count_nonzero(model.latent.type_page) == 0
    assert not torch.equal(model.latent.type_move, before)  # the group moves did learn
    back = LatentGRUModel.load(model.save(tmp_path / "latent_gru.pt"))
    assert back.page_preferences is False
    assert "type_page" not in {name for name, _ in back.net.named_parameters()}
    assert mean_log_loss(back, valid_s) == pytest.approx(mean_log_loss(model, valid_s), rel=1e-6)


def test_a_counted_trunk_is_the_prior_and_the_memory_stage_starts_from_it() -> None:
    """``trunk: counted``: in the first stage only the types, the entry and the output biases
    train; the logits are the counted first-order prior plus biases, whatever the history;
    the memory stage then starts from exactly that model (zero output weights)."""
    assert LatentTypesConfig.from_dict({"types": 2}).trunk == "learned"
    with pytest.raises(ClickstreamError, match=r"latent_gru\.trunk"):
        LatentTypesConfig.from_dict({"types": 2, "trunk": "frozen"})
    with pytest.raises(ClickstreamError, match=r"latent_gru\.table_lr"):
        LatentTypesConfig.from_dict({"types": 2, "trunk": "counted", "table_lr": 0})
    train_s, _ = two_type_sessions(3000, 0)
    valid_s, _ = two_type_sessions(1000, 1)
    cfg = TrainerConfig(
        epochs=8, batch_sessions=128, max_len=32, lr=0.01, show_progress=False, patience=3
    )

    def fresh() -> LatentGRUModel:
        torch.manual_seed(0)
        config = ModelConfig(embedding_dim=8, hidden_size=16, dropout=0.0)
        model = LatentGRUModel(vocab(), config, n_types=2)
        model.start_entry(train_s)
        return model

    # the first stage alone
    model = fresh()
    gru_before = model.latent.gru.weight_hh_l0.detach().clone()
    model.latent.memory = False
    counted_trunk(model.latent, True)
    trainable = {name for name, p in model.net.named_parameters() if p.requires_grad}
    assert trainable == {"type_logit", "type_move", "entry_page", "entry_type", "type_page", "head.bias", "group_head.bias"}  # fmt: skip
    # a table's learning rate, no weight decay (latent_gru.table_lr, default 0.01)
    history = train(model, train_s, valid_s, dataclasses.replace(cfg, lr=0.01, weight_decay=0.0))
    assert torch.count_nonzero(model.latent.head.weight) == 0
    assert torch.equal(model.latent.gru.weight_hh_l0, gru_before)  # never trained
    _w, after_a = model.next_types([0, 1, 2])
    _w, after_b = model.next_types([4, 1, 2])
    np.testing.assert_allclose(after_a, after_b, atol=1e-6)  # each type's row: the page only
    # it finds the two types, as the latent-class model does
    prior = np.sort(model.latent.log_type_prior().exp().detach().numpy())
    np.testing.assert_allclose(prior, [0.4, 0.6], atol=0.08)

    # both stages: the first replays the above, the memory stage starts where it ended
    model = fresh()
    stages = train_in_stages(model, train_s, valid_s, cfg, trunk="counted")
    first = stages["first_order"]["best_valid_log_loss"]
    assert first == pytest.approx(history["best_valid_log_loss"], rel=1e-9)
    # the model ends with the better stage on validation
    kept = min(first, stages["memory"]["best_valid_log_loss"])
    assert mean_log_loss(model, valid_s) == pytest.approx(kept, rel=1e-6)
    assert all(p.requires_grad for p in model.net.parameters())  # unfrozen after


def test_the_memory_stage_starts_from_the_entry_its_first_stage_fitted(monkeypatch) -> None:
    """Where the types enter by different groups, the first stage fits the shared entry logits
    with the types' entry terms; the memory stage (whose ``train`` counts the trunk's prior
    again) must start from that model exactly, not from the entry frequencies again, which
    would count each type's entry preference twice and blur the types' posterior."""
    train_s, _ = two_type_sessions(3000, 0, b_enters_in_b=0.5)
    valid_s, _ = two_type_sessions(1000, 1, b_enters_in_b=0.5)
    seen: dict[str, Any] = {}

    def spy(model: LatentGRUModel, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if "memory" in kwargs["label"]:
            seen["handed_over"] = model.latent.entry_log_probs().detach().clone()
            model.fit_prior(train_s)  # what train() does first
            seen["entry"] = model.latent.entry_log_probs().detach().clone()
            seen["start"] = mean_log_loss(model, valid_s)
        return train(model, *args, **kwargs)

    monkeypatch.setattr("envs.latent_gru.train", spy)
    cfg = TrainerConfig(epochs=2, batch_sessions=128, max_len=32, show_progress=False)
    stages = train_in_stages(
        counted_model(2), train_s, valid_s, cfg, trunk="counted", table_fit="full_batch"
    )
    entry = seen["entry"].exp().numpy()
    # the types' entries differ (one enters on group b about half the time, the other never)
    assert abs(entry[:, 3:].sum(1)[0] - entry[:, 3:].sum(1)[1]) > 0.3
    assert torch.equal(seen["entry"], seen["handed_over"])
    first = stages["first_order"]["best_valid_log_loss"]
    assert seen["start"] == pytest.approx(first, rel=1e-9)


def counted_model(k: int, seed: int = 0, **options: Any) -> LatentGRUModel:
    """A small model of ``k`` types for the counted first stage, from ``seed``'s weights."""
    torch.manual_seed(seed)
    config = ModelConfig(embedding_dim=8, hidden_size=16, dropout=0.0)
    return LatentGRUModel(vocab(), config, n_types=k, **options)


def test_a_full_batch_counted_stage_reaches_the_likelihood_optimum() -> None:
    """``table_fit: full_batch`` maximises the whole sessions' likelihood to convergence. At
    the optimum the free per-page terms match what was counted: one type's entry distribution
    is the training split's entry frequencies, and the output biases make the expected number
    of moves to each outcome the number made (their gradient is zero there)."""
    train_s, _ = two_type_sessions(3000, 0)
    valid_s, _ = two_type_sessions(1000, 1)
    model = counted_model(1, page_preferences=False)
    history = fit_counted_full_batch(model, train_s, valid_s)
    record = history["epochs"][0]
    assert record["converged"] and history["fit"] == "full_batch"
    assert record["events"] == len(train_s.pages) + len(train_s)  # every step, every entry
    assert history["best_valid_log_loss"] == pytest.approx(mean_log_loss(model, valid_s))
    assert not model.latent.memory and model.net.head.weight.dtype == torch.float32
    p = len(PAGES)
    entries = np.bincount(train_s.pages[train_s.offsets[:-1]], minlength=p) / len(train_s)
    fitted = model.latent.entry_log_probs()[0].exp().detach().numpy()
    np.testing.assert_allclose(fitted, entries, atol=1e-5)
    with torch.no_grad():
        every = torch.arange(p)
        out, _ = model.latent.encode(every[None])
        rows = model.latent.type_rows(out[0], every)[0].exp().double().numpy()  # (P, P + 1)
    expected = rows[train_s.pages].sum(0)
    made = np.bincount(train_s.targets(), minlength=p + 1)
    np.testing.assert_allclose(expected, made, rtol=1e-4, atol=0.05)
    # same seed, same fit
    again = counted_model(1, page_preferences=False)
    fit_counted_full_batch(again, train_s, valid_s)
    for (name, a), (_, b) in zip(
        model.net.named_parameters(), again.net.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), name


def test_full_batch_restarts_find_the_two_types() -> None:
    """In two stages with ``table_fit: full_batch`` every start is fitted to convergence and
    the one the validation split prefers is kept; the types are the store's (40 % / 60 %, the
    b-bound type staying in group b). The setting needs the counted trunk."""
    train_s, _ = two_type_sessions(3000, 0)
    valid_s, _ = two_type_sessions(1000, 1)
    cfg = TrainerConfig(
        epochs=2, batch_sessions=128, max_len=32, lr=0.01, show_progress=False, patience=2
    )
    model = counted_model(2, page_preferences=False)
    stages = train_in_stages(
        model, train_s, valid_s, cfg, trunk="counted", table_fit="full_batch", restarts=2
    )
    first = stages["first_order"]
    assert first["fit"] == "full_batch" and len(first["restarts"]) == 2
    assert first["best_valid_log_loss"] == min(first["restarts"])
    assert first["restarts"][first["kept_restart"]] == first["best_valid_log_loss"]
    kept = min(first["best_valid_log_loss"], stages["memory"]["best_valid_log_loss"])
    assert mean_log_loss(model, valid_s) == pytest.approx(kept, abs=2e-4)
    prior = np.sort(model.latent.log_type_prior().exp().detach().numpy())
    np.testing.assert_allclose(prior, [0.4, 0.6], atol=0.05)
    _weights, rows = model.next_types([0])
    b_type = int(np.argmax(rows[:, 3:6].sum(1)))
    assert rows[b_type, 3:6].sum() > 0.6 and rows[1 - b_type, 3:6].sum() < 0.1

    assert LatentTypesConfig.from_dict({"types": 2}).table_fit == "minibatch"
    with pytest.raises(ClickstreamError, match=r"needs latent_gru\.trunk=counted"):
        LatentTypesConfig.from_dict({"types": 2, "table_fit": "full_batch"})
    with pytest.raises(ClickstreamError, match=r"latent_gru\.table_fit must be one of"):
        LatentTypesConfig.from_dict({"types": 2, "trunk": "counted", "table_fit": "lbfgs"})
    with pytest.raises(ClickstreamError, match=r"needs latent_gru\.trunk=counted"):
        train_in_stages(counted_model(2), train_s, valid_s, cfg, table_fit="full_batch")


def counted_table(seqs: SessionSequences, smoothing: float) -> np.ndarray:
    """``(c(i, j) + k · pop(j)) / (c(i) + k)`` counted on ``seqs``, dense ``(P, P + 1)``, with
    the GRU prior's add-one ``pop`` (``envs.dynamics.first_order_table`` adds one half)."""
    p = len(PAGES)
    src, dst = seqs.pages, seqs.targets()
    counts = np.zeros((p, p + 1))
    np.add.at(counts, (src, dst), 1.0)
    pop = (np.bincount(dst, minlength=p + 1) + 1.0) / (len(dst) + p + 1)
    return (counts + smoothing * pop) / (counts.sum(1, keepdims=True) + smoothing)


def test_without_table_biases_types_reweight_the_counted_table_by_group(monkeypatch) -> None:
    """``table_biases: false`` keeps the output biases at zero in the counted first stage, so
    each type's row is the counted table re-weighted by the group moved to (the latent-class
    model's parametrisation): within a destination group every outcome keeps the counted
    table's proportions. With the biases trained they do not. The minibatch fit keeps them at
    zero too; the memory stage trains them. The setting needs the counted trunk."""
    train_s, _ = two_type_sessions(3000, 0)
    valid_s, _ = two_type_sessions(1000, 1)
    p = len(PAGES)
    dest_group = np.r_[vocab().page_group, 2]  # EXIT: a group of its own

    def spread_within_groups(biases: bool) -> tuple[float, LatentGRUModel, dict[str, Any]]:
        model = counted_model(2, page_preferences=False)
        history = fit_counted_full_batch(model, train_s, valid_s, biases=biases)
        with torch.no_grad():
            every = torch.arange(p)
            net = copy.deepcopy(model.latent).double()  # the rows to 1e-7, not float32's 1e-5
            out, _ = net.encode(every[None])
            rows = net.type_rows(out[0], every).numpy()  # (K, P, P + 1)
        table = counted_table(train_s, model.cfg.prior_smoothing)
        ratio = rows - np.log(table)[None]  # log(row / table): one number per group if bias-free
        spread = max(float(np.ptp(ratio[:, :, dest_group == g], axis=-1).max()) for g in range(3))
        return spread, model, history

    spread, model, history = spread_within_groups(biases=False)
    assert history["epochs"][0]["converged"]
    assert spread < 1e-6
    assert not model.net.head.bias.any() and not model.net.group_head.bias.any()
    assert all(q.requires_grad for q in model.net.parameters())  # unfrozen for the memory stage
    with_biases, _, fitted = spread_within_groups(biases=True)
    assert with_biases > 1e-5  # 2e-4 here: the biases trained
    assert fitted["epochs"][0]["train_loss"] <= history["epochs"][0]["train_loss"] + 1e-9

    # the minibatch fit too: the first stage ends with the biases still at zero
    first_biases = []

    def spy(model: LatentGRUModel, *args: Any, **kwargs: Any) -> dict[str, Any]:
        history = train(model, *args, **kwargs)
        if "first-order" in kwargs["label"]:
            first_biases.append(float(model.net.head.bias.abs().max()))
        return history

    monkeypatch.setattr("envs.latent_gru.train", spy)
    cfg = TrainerConfig(epochs=1, batch_sessions=128, max_len=32, show_progress=False)
    model = counted_model(2, page_preferences=False)
    train_in_stages(model, train_s, valid_s, cfg, trunk="counted", table_biases=False)
    assert first_biases == [0.0]
    assert model.net.head.bias.abs().max() > 0  # the memory stage trains them

    assert LatentTypesConfig.from_dict({"types": 2}).table_biases is True
    with pytest.raises(ClickstreamError, match=r"table_biases=false .*needs latent_gru\.trunk"):
        LatentTypesConfig.from_dict({"types": 2, "table_biases": False})
    with pytest.raises(ClickstreamError, match=r"table_biases=false needs latent_gru\.trunk"):
        train_in_stages(counted_model(2), train_s, valid_s, cfg, table_biases=False)


def test_a_full_batch_fit_too_large_for_dense_rows_is_refused(monkeypatch) -> None:
    """The fit holds each type's rows densely: past the cell limit it is refused, naming the
    size and the way out (``table_fit=minibatch``)."""
    train_s, _ = two_type_sessions(50, 0)
    monkeypatch.setattr("envs.latent_gru.MAX_DENSE_CELLS", 2 * 6 * 7 - 1)
    with pytest.raises(ClickstreamError, match=r"2 x 6 x 7 = 84 cells.*table_fit=minibatch"):
        fit_counted_full_batch(counted_model(2), train_s, train_s)


def test_one_type_trains_in_one_stage_from_zero_type_terms(monkeypatch) -> None:
    """``one_type: one_stage``: a model of one type is trained as the plain GRU is: one stage
    with memory, at the trainer's rate, its type terms starting from zero (they only break the
    symmetry between types), and it ends on its best validation epoch."""
    assert LatentTypesConfig.from_dict({"types": 1}).one_type == "one_stage"
    with pytest.raises(ClickstreamError, match=r"latent_gru\.one_type"):
        LatentTypesConfig.from_dict({"types": 1, "one_type": "three_stages"})
    train_s, _ = two_type_sessions(800, 0)
    valid_s, _ = two_type_sessions(300, 1)
    cfg = TrainerConfig(epochs=4, batch_sessions=64, max_len=32, lr=0.01, show_progress=False)
    seen = {}

    def spy(model, *args, **kwargs):
        net = model.latent
        seen["type_terms"] = float(
            net.type_move.detach().abs().sum() + net.entry_type.detach().abs().sum()
        )
        seen["memory"], seen["lr"] = net.memory, args[2].lr
        seen["frozen"] = [n for n, p in net.named_parameters() if not p.requires_grad]
        return train(model, *args, **kwargs)

    monkeypatch.setattr("envs.latent_gru.train", spy)
    torch.manual_seed(0)
    config = ModelConfig(embedding_dim=8, hidden_size=16, dropout=0.0)
    model = LatentGRUModel(vocab(), config, n_types=1, init_scale=1.0)
    assert float(model.latent.type_move.detach().abs().sum()) > 1.0  # random at construction
    counted_trunk(model.latent, True)  # whatever froze it before, the one stage trains all
    history = train_one_stage(model, train_s, valid_s, cfg)
    assert seen == {"type_terms": 0.0, "memory": True, "lr": 0.01, "frozen": []}
    assert model.train_state["history"] == {"one_stage": history}
    assert model.latent.memory
    assert mean_log_loss(model, valid_s) == pytest.approx(history["best_valid_log_loss"], rel=1e-6)
    with pytest.raises(ClickstreamError, match="one type, the model has 2"):
        train_one_stage(small_model(k=2), train_s, valid_s, cfg)
