"""The simulator: click model inside the core, seeding, and the Gymnasium / SB3 front ends."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.utils.env_match import check_environments_match
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs  # noqa: F401  (registers NextPage/Site-v0)
from clickstream.errors import ClickstreamError
from clickstream.synthetic import build_store
from envs.click_model import MultinomialBoost
from envs.core import SiteCore
from envs.dynamics import MarkovDynamics, TrueDynamics
from envs.site_env import SiteEnv
from envs.vector_env import SiteSB3VecEnv, SiteVectorEnv

ENV_ID = "NextPage/Site-v0"

# a toy site: 3 pages; from page 0: 0.5 -> page 1, 0.3 -> page 2, 0.2 -> EXIT
TOY = np.array(
    [
        [0.0, 0.5, 0.3, 0.2],
        [0.2, 0.0, 0.4, 0.4],
        [0.1, 0.1, 0.0, 0.8],
    ]
)


def toy_core(n: int, beta: float = 1.0, **kw) -> SiteCore:
    dyn = MarkovDynamics(np.array([1.0, 0.0, 0.0]), TOY, ("/a", "/b", "/c"))
    return SiteCore(dyn, MultinomialBoost(beta), np.array([0.0, 1.0, 10.0, 0.0]), n, **kw)


def test_gymnasium_and_sb3_checkers_pass_without_warnings() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = gym.make(ENV_ID)
        gym_check_env(env.unwrapped)
        sb3_check_env(SiteEnv(), warn=True)
    assert [str(w.message) for w in caught] == []
    assert env.observation_space.shape == (4,)
    assert env.action_space.n == 201  # 200 pages and "show nothing"


def test_two_envs_with_the_same_seed_match() -> None:
    check_environments_match(SiteEnv(), SiteEnv(), num_steps=300, seed=7, skip_render=True)


def test_one_step_distribution_matches_the_click_model_formula() -> None:
    core = toy_core(1, beta=np.log(3.0))
    core.reset(seed=0)
    # visitor on page 0, recommendation = page 2: p'(j) ∝ p(j)·3^[j=2]
    expected = np.array([0.0, 0.5, 0.9, 0.2]) / 1.6
    got = core.next_page_probs(torch.tensor([2])).numpy()[0]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # and the sampler follows it: 40,000 visitors, one step each
    many = toy_core(40_000, beta=np.log(3.0), allow_no_recommendation=False)
    many.reset(seed=1)
    r = many.step(torch.full((40_000,), 2))
    freq = np.bincount(r.landed.numpy(), minlength=4) / 40_000
    np.testing.assert_allclose(freq, expected, atol=0.01)
    assert freq[0] == 0  # an outcome of probability 0 is never drawn
    # rewards are paid for the page landed on, EXIT pays 0
    assert torch.equal(r.reward, torch.tensor([0.0, 1.0, 10.0, 0.0])[r.landed])


def test_beta_zero_and_no_recommendation_are_organic() -> None:
    core = toy_core(1, beta=0.0)
    core.reset(seed=0)
    organic = core.next_page_probs().numpy()[0]
    np.testing.assert_allclose(organic, TOY[0])
    for action in range(core.n_actions):
        np.testing.assert_allclose(core.next_page_probs(torch.tensor([action])).numpy()[0], TOY[0])
    shown_nothing = toy_core(1, beta=2.0)
    shown_nothing.reset(seed=0)
    last = shown_nothing.n_actions - 1  # the "show nothing" action
    np.testing.assert_allclose(
        shown_nothing.next_page_probs(torch.tensor([last])).numpy()[0], TOY[0]
    )


def test_batched_core_slice_replays_the_single_env() -> None:
    env = SiteEnv()
    core = SiteCore(
        TrueDynamics(build_store()),
        MultinomialBoost(build_store().beta),
        env.core.reward_per_page,
        1,
    )
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=3)
    core_obs = core.reset(seed=3)[0].numpy()
    np.testing.assert_array_equal(obs, core_obs)
    for _ in range(500):
        a = int(rng.integers(env.action_space.n))
        obs, reward, terminated, truncated, _ = env.step(a)
        r = core.step(torch.tensor([a]))
        expected_obs = r.final_obs[0] if (terminated or truncated) else r.obs[0]
        np.testing.assert_array_equal(obs, expected_obs.numpy())
        assert reward == pytest.approx(float(r.reward[0]))
        assert (terminated, truncated) == (bool(r.terminated[0]), bool(r.truncated[0]))
        if terminated or truncated:
            obs, _ = env.reset()
            np.testing.assert_array_equal(obs, r.obs[0].numpy())


def test_same_seed_same_trajectories_on_the_batched_core() -> None:
    def run() -> list[np.ndarray]:
        core = toy_core(64)
        core.reset(seed=11)
        out = []
        for t in range(30):
            out.append(core.step(torch.full((64,), t % core.n_actions)).landed.numpy())
        return out

    for a, b in zip(run(), run(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sessions_end_and_restart_in_place() -> None:
    core = toy_core(2000, max_steps=3)
    obs = core.reset(seed=0)
    assert (obs[:, -1] == 0).all() and (obs[:, :-1] == 3).all()  # entry page 0, then "none"
    in_session = torch.zeros(2000, dtype=torch.long)  # steps taken by each current visitor
    for _ in range(10):
        r = core.step(torch.zeros(2000, dtype=torch.long))
        in_session += 1
        # truncated exactly when a visitor still in session takes its third step
        assert torch.equal(r.truncated, ~r.terminated & (in_session == 3))
        done = r.terminated | r.truncated
        in_session[done] = 0
        assert (r.obs[done, -1] == 0).all()  # new arrivals on the entry page
        assert (r.final_obs[r.terminated, -1] == 3).all()  # left: EXIT shown as P
        assert torch.equal(core.steps, in_session)
    assert int(r.truncated.sum()) > 0


def test_vector_envs() -> None:
    vec = gym.make_vec(ENV_ID, num_envs=32, vectorization_mode="vector_entry_point")
    assert isinstance(vec.unwrapped, SiteVectorEnv)
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (32, 4)
    saw_final = False
    for _ in range(60):
        obs, reward, terminated, truncated, infos = vec.step(vec.action_space.sample())
        assert reward.shape == (32,)
        if (terminated | truncated).any():
            saw_final = True
            assert infos["_final_obs"].tolist() == (terminated | truncated).tolist()
            assert (infos["final_obs"][terminated][:, -1] == 200).all()
    assert saw_final

    sb3 = SiteSB3VecEnv(num_envs=16, seed=0)
    obs = sb3.reset()
    assert obs.shape == (16, 4)
    for _ in range(60):
        obs, reward, done, infos = sb3.step(np.zeros(16, dtype=np.int64))
        for i in np.flatnonzero(done):
            assert "terminal_observation" in infos[i]


def test_bad_actions_and_options_are_refused() -> None:
    core = toy_core(2)
    with pytest.raises(ClickstreamError, match="reset"):
        core.step(torch.zeros(2, dtype=torch.long))
    core.reset(seed=0)
    with pytest.raises(ClickstreamError, match=r"actions must lie in \[0, 4\)"):
        core.step(torch.tensor([0, 4]))
    with pytest.raises(ClickstreamError, match="expected 2 actions"):
        core.step(torch.tensor([0]))
    with pytest.raises(ClickstreamError, match="needs a prepared data_dir"):
        SiteEnv(dynamics="gru")


def test_env_configs_build_cores(tmp_path) -> None:
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from clickstream.prepare import prepare
    from envs.site_env import build_core

    store = build_store(n_pages=60, seed=0)
    prepare(store.sample_sessions(600, seed=1), tmp_path / "syn")
    configs = Path(__file__).resolve().parents[2] / "configs"
    for name, dynamics in (("follow", "markov"), ("ground_truth", "true")):
        # the env group as a script composes it (its typed schema included)
        with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
            cfg = OmegaConf.to_container(compose("train", [f"env={name}"]).env, resolve=True)
        cfg["dynamics"] = dynamics if name != "ground_truth" else cfg["dynamics"]
        core = build_core(8, data_dir=tmp_path / "syn", **cfg)
        core.reset(seed=0)
        probs = core.next_page_probs(torch.zeros(8, dtype=torch.long))
        torch.testing.assert_close(probs.sum(1), torch.ones(8))
        assert core.n_actions == core.n_pages + 1


def test_gru_dynamics_drive_the_core(tmp_path) -> None:
    from clickstream.errors import RunFolderError
    from clickstream.prepare import prepare
    from clickstream.runfolder import seal
    from envs.sequences import load_prepared
    from envs.site_env import build_core
    from envs.visitor_model import ModelConfig, VisitorModel

    store = build_store(n_pages=60, seed=0)
    prepare(store.sample_sessions(600, seed=1), tmp_path / "syn")
    data = load_prepared(tmp_path / "syn")
    model = VisitorModel(data.vocab, ModelConfig(hidden_size=16, embedding_dim=8))
    model.fit_prior(data.splits["train"])
    model.save(tmp_path / "syn" / "simulator" / "model.pt")
    # a model saved by hand is not a published simulator folder until it has a manifest
    with pytest.raises(RunFolderError, match=r"simulator: not a published run folder"):
        build_core(16, data_dir=tmp_path / "syn", dynamics="gru")
    seal(tmp_path / "syn" / "simulator", "train_simulator", inputs={"data": data.manifest.digest})
    core = build_core(16, data_dir=tmp_path / "syn", dynamics="gru")
    core.reset(seed=0)
    # the core's organic distribution is the model's own after the entry page
    logp = model.log_prob_next(core.page[:, None])[:, 0]
    torch.testing.assert_close(core.next_page_probs(), logp.exp(), atol=1e-5, rtol=1e-4)
    for _ in range(20):
        r = core.step(torch.full((16,), core.n_actions - 1))
        torch.testing.assert_close(core.next_page_probs().sum(1), torch.ones(16))
    assert r.obs.shape == (16, 4)


def test_top_successors_table() -> None:
    from envs.dynamics import top_successors
    from envs.sequences import SessionSequences

    seqs = SessionSequences.from_lists([[0, 1, 2], [0, 1], [0, 2], [1, 2], [2]], exit_id=3)
    # successors: 0 -> 1 (twice), 2 (once); 1 -> 2 (twice); 2 -> none (only EXIT)
    np.testing.assert_array_equal(top_successors(seqs, 2), np.array([[1, 2], [2, -1], [-1, -1]]))
    np.testing.assert_array_equal(top_successors(seqs, 1), np.array([[1], [2], [-1]]))


def test_top_successors_filled_from_the_group_then_the_site() -> None:
    """Short rows are completed by the group's successors, then the site's most frequent next
    pages: each page once, never the page itself, the observed successors first."""
    from clickstream.errors import ConfigError
    from envs.dynamics import top_successors
    from envs.sequences import SessionSequences

    # pages 0, 1, 2 are products (group 0), 3 the basket, 4 a policy page (group 1)
    seqs = SessionSequences.from_lists(
        [[0, 3], [0, 3], [1, 4], [1, 4], [1, 4], [2, 0], [3, 4], [3, 4], [4, 3]], exit_id=5
    )
    groups = np.array([0, 0, 0, 1, 1])
    # group 0 leads to 4 (3 times), 3 (twice), 0 (once), group 1 to 4, 3; the site to 4, 3, 0;
    # page 0 has only the site left after its group, and that adds nothing new
    filled = top_successors(seqs, 3, "group", groups)
    np.testing.assert_array_equal(
        filled,
        np.array([[3, 4, -1], [4, 3, 0], [0, 4, 3], [4, 0, -1], [3, 0, -1]]),
    )
    np.testing.assert_array_equal(top_successors(seqs, 3), top_successors(seqs, 3, "none"))
    assert (top_successors(seqs, 3)[:, 1] == -1).all()  # one observed successor per page
    with pytest.raises(ConfigError, match="candidate_fill"):
        top_successors(seqs, 3, "popular", groups)
    with pytest.raises(ConfigError, match="page group"):
        top_successors(seqs, 3, "group")
    from envs.site_env import build_core

    with pytest.raises(ConfigError, match="candidate_fill"):  # named even without top_k
        build_core(1, candidate_fill="popular")


@pytest.mark.parametrize("kind", ["boost", "follow"])
def test_candidate_mode_matches_the_full_model_when_it_covers_every_link(kind: str) -> None:
    from envs.click_model import build_click_model

    dyn = MarkovDynamics(np.array([0.5, 0.5, 0.0]), TOY, ("/a", "/b", "/c"))
    click = build_click_model(kind)
    links = np.array([[1, 2], [0, 2], [0, 1]])  # every page's successors in TOY
    full = SiteCore(dyn, click, np.zeros(4), 6)
    cand = SiteCore(dyn, click, np.zeros(4), 6, candidates=links)
    full.reset(seed=0)
    cand.reset(seed=0)
    for action in range(full.n_actions):
        a = torch.full((6,), action)
        torch.testing.assert_close(cand.next_page_probs(a), full.next_page_probs(a))
    # with fewer candidates the dropped pages get nothing and the rest is renormalised
    narrow = SiteCore(dyn, build_click_model(kind), np.zeros(4), 1, candidates=links[:, :1])
    narrow.reset(seed=0)
    page = int(narrow.page[0])
    kept = [int(links[page, 0]), 3]
    expected = np.zeros(4)
    expected[kept] = TOY[page, kept] / TOY[page, kept].sum()
    np.testing.assert_allclose(narrow.next_page_probs().numpy()[0], expected, rtol=1e-6)
    r = narrow.step(torch.tensor([narrow.n_actions - 1]))
    assert int(r.landed[0]) in kept


def test_gru_candidate_scoring_equals_the_full_head() -> None:
    from envs.sequences import Vocabulary
    from envs.visitor_model import ModelConfig, VisitorModel

    vocab = Vocabulary(
        pages=tuple(f"/p{i}" for i in range(7)),
        groups=("a", "b"),
        page_group=np.array([0, 0, 1, 1, 0, 1, 0]),
    )
    torch.manual_seed(0)
    model = VisitorModel(vocab, ModelConfig(hidden_size=8, embedding_dim=4, markov_prior=False))
    page = torch.tensor([0, 3, 5])
    hidden = torch.randn(3, 8)
    logits, new_hidden = model.step(page, hidden)
    out, same_hidden = model.step_hidden(page, hidden)
    torch.testing.assert_close(same_hidden, new_hidden)
    ids = torch.tensor([[1, 2, 7], [0, 6, 7], [4, 4, 7]])
    torch.testing.assert_close(model.score_outcomes(out, page, ids), logits.gather(1, ids))


@pytest.mark.parametrize("kind", ["boost", "follow"])
def test_recommending_a_page_group(kind: str) -> None:
    from envs.click_model import build_click_model

    dyn = MarkovDynamics(np.array([1.0, 0.0, 0.0]), TOY, ("/a", "/b", "/c"))
    click = build_click_model(kind)
    groups = np.array([0, 1, 1])  # /b and /c form group 1
    core = SiteCore(dyn, click, np.zeros(4), 1, page_groups=groups)
    core.reset(seed=0)  # on page 0: p = [0, 0.5, 0.3, 0.2]
    assert core.n_actions == 3  # two groups and "show nothing"
    got = core.next_page_probs(torch.tensor([1])).numpy()[0]
    p = TOY[0]
    if kind == "boost":  # p'(j) ∝ p(j)·e^β on the group's pages, β = 1
        w = np.array([1.0, np.e, np.e, 1.0])
        expected = p * w / (p * w).sum()
    else:  # f = σ(-1 + 0.5·log 0.8), landing inside the group ∝ p
        f = 1 / (1 + np.exp(-(-1 + 0.5 * np.log(0.8))))
        expected = (1 - f) * p + f * np.array([0.0, 0.5, 0.3, 0.0]) / 0.8
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(core.next_page_probs(torch.tensor([2])).numpy()[0], p)  # nothing
    links = np.array([[1, 2], [0, 2], [0, 1]])  # candidate mode covering every link agrees
    cand = SiteCore(dyn, click, np.zeros(4), 1, page_groups=groups, candidates=links)
    cand.reset(seed=0)
    np.testing.assert_allclose(
        cand.next_page_probs(torch.tensor([1])).numpy()[0], expected, rtol=1e-6
    )
    r = core.step(torch.tensor([1]))
    assert bool(r.followed[0]) == (int(r.landed[0]) in (1, 2))
    env = SiteEnv(action_level="group")
    assert env.action_space.n == len(set(build_store().page_groups)) + 1


def test_expected_reward_is_the_mean_of_the_sampled_reward_under_the_click_model() -> None:
    # page 0, recommendation = page 2 at beta = ln 3: p' = (0, 0.5, 0.9, 0.2) / 1.6, so the
    # expected reward of the step is (0.5 * 1 + 0.9 * 10) / 1.6 = 5.9375
    core = toy_core(20_000, beta=np.log(3.0))
    core.expected_reward = True
    core.reset(seed=0)
    r = core.step(torch.full((20_000,), 2))
    assert torch.allclose(r.reward, torch.full((20_000,), 5.9375))
    sampled = toy_core(20_000, beta=np.log(3.0))
    sampled.reset(seed=0)
    s = sampled.step(torch.full((20_000,), 2))
    assert abs(float(s.reward.mean()) - 5.9375) < 0.1  # sd 4.6 / sqrt(20,000) = 0.03
    # the draws are the same either way: only the reward paid changes
    assert torch.equal(r.landed, s.landed)
