"""Fixes from the RL-plumbing audit: command-line agent settings beat an experiment's,
recommending the current page shows nothing, a cut with the position observed is an end for
SB3, TensorBoard tags, and the Gymnasium front ends' final_info and action masks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from omegaconf import open_dict

# -- 1. the command line beats an experiment's agent_overrides -------------------------------


@pytest.mark.parametrize("experiment", ["synthetic_markov", "synthetic_intent"])
def test_command_line_agent_keys_beat_the_experiments_agent_overrides(experiment):
    from scripts.configs import compose_stage, with_agent_overrides

    cli = [
        f"experiment={experiment}",
        "agent=ppo",
        "agent.total_timesteps=20000",
        "agent.hyperparams.gamma=0.5",
    ]
    agent = with_agent_overrides(compose_stage("train", cli), cli=cli).agent
    assert agent.total_timesteps == 20000
    assert agent.hyperparams.gamma == 0.5
    # the experiment's own settings still apply to the keys the user did not set
    assert agent.n_envs == 64 and agent.policy == "MlpPolicy"
    assert agent.hyperparams.learning_rate == 0.0001 and agent.hyperparams.n_steps == 64
    # without the user's keys, the experiment's values
    agent = with_agent_overrides(compose_stage("train", cli), cli=[]).agent
    assert agent.total_timesteps == 3_000_000 and agent.hyperparams.gamma == 0.99


def test_train_reads_the_users_keys_from_hydra():
    """``scripts/train.py`` passes no ``cli``: the running Hydra app's task overrides are read."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from scripts.configs import CONFIGS, with_agent_overrides

    cli = [
        "experiment=synthetic_markov",
        "agent=dqn",
        "agent.total_timesteps=20000",
        "agent.hyperparams={learning_rate: 0.0003}",
    ]
    saved = HydraConfig.instance().cfg
    try:
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose("train", overrides=cli, return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            with open_dict(cfg):
                cfg.pop("hydra")
            agent = with_agent_overrides(cfg).agent
    finally:
        HydraConfig.instance().cfg = saved
    assert agent.total_timesteps == 20000
    assert agent.hyperparams.learning_rate == 0.0003  # results.md's probe command
    assert agent.hyperparams.gamma == 0.99  # a dict merges into the experiment's
    assert agent.hyperparams.target_update_interval == 50_000


# -- 2. recommending the page the visitor is on shows nothing --------------------------------

RELOADS = np.array(  # organic rows with reloads (a markov world fitted with repeats: keep)
    [[0.3, 0.2, 0.1, 0.4], [0.1, 0.4, 0.2, 0.3], [0.2, 0.2, 0.5, 0.1]]
)
VALUES = np.array([1.0, 5.0, 20.0, 0.0])


def _reload_core(n=3, click="boost", **kw):
    from envs.click_model import build_click_model
    from envs.core import SiteCore
    from envs.dynamics import MarkovDynamics

    dyn = MarkovDynamics(np.array([0.4, 0.4, 0.2]), RELOADS, ("/a", "/b", "/c"))
    params = {"beta": 1.5} if click == "boost" else {}
    core = SiteCore(dyn, build_click_model(click, **params), VALUES, n, max_steps=20, **kw)
    core.reset(seed=0)
    core.page[:] = torch.arange(n)
    return core


@pytest.mark.parametrize("click", ["boost", "follow"])
def test_recommending_the_current_page_gives_the_organic_row_in_the_env(click):
    core = _reload_core(click=click)
    organic = core.next_page_probs()
    own = core.next_page_probs(torch.arange(3))  # action i recommends page i: her own page
    assert torch.equal(own, organic)
    nothing = core.next_page_probs(torch.full((3,), 3))
    assert torch.equal(own, nothing)
    assert not torch.equal(core.next_page_probs(torch.tensor([1, 2, 0])), organic)
    shown = core.shown_mask(torch.arange(3), pages=torch.arange(3))
    assert not bool(shown.any())
    assert bool(core.shown_mask(torch.arange(3))[:, :3].diagonal().all())  # without pages
    # the step: the same draws as "nothing", never followed
    twin = _reload_core(click=click)
    for _ in range(200):
        a = core.page.clone()  # always her own page (a fresh visitor's too)
        mine, ref = core.step(a), twin.step(torch.full((3,), 3))
        assert torch.equal(mine.landed, ref.landed) and not bool(mine.followed.any())
    assert torch.equal(core.page, twin.page)


def test_recommending_the_current_page_in_candidate_mode_and_slates():
    from envs.slate import PositionMNL

    links = np.array([[0, 1], [1, 2], [2, 0]])  # each page's own page among its successors
    core = _reload_core(candidates=links)
    assert torch.equal(core.next_page_probs(torch.arange(3)), core.next_page_probs())
    slates = _reload_core(slate_model=PositionMNL(beta=1.5, examination=(1.0, 0.8)))
    own_first = torch.tensor([[0, 1], [1, 2], [2, 0]])
    nothing_first = torch.tensor([[3, 1], [3, 2], [3, 0]])
    assert torch.equal(slates.slate_probs(own_first), slates.slate_probs(nothing_first))
    assert (slates.slate_pages(own_first, slates.page)[:, 0] == -1).all()
    twin = _reload_core(slate_model=PositionMNL(beta=1.5, examination=(1.0, 0.8)))
    for _ in range(100):
        own = torch.stack([slates.page, slates.page], 1)
        mine, ref = slates.step(own), twin.step(torch.full((3, 2), 3))
        assert torch.equal(mine.landed, ref.landed) and not bool(mine.followed.any())
        assert (mine.position == -1).all()


def _brute_force_values(core, gamma=0.9):
    """The optimal values by enumerating every deterministic table over pages, with the rows
    the env gives (``next_page_probs`` of a visitor on each page)."""
    p, n_actions = core.n_pages, core.n_actions
    rows = torch.stack([core.next_page_probs(torch.full((p,), a)) for a in range(n_actions)], 1)
    rows = rows.double()  # (P, A, P + 1): page s's row under action a
    reward = torch.as_tensor(VALUES, dtype=torch.float64)
    best = torch.full((p,), -torch.inf, dtype=torch.float64)
    for table in itertools.product(range(n_actions), repeat=p):
        r = rows[torch.arange(p), torch.tensor(table)]  # (P, P + 1)
        v = torch.linalg.solve(torch.eye(p, dtype=torch.float64) - gamma * r[:, :p], r @ reward)
        best = torch.maximum(best, v)
    return best


def test_the_tabular_mdp_agrees_with_the_env_on_the_current_page():
    from agents.tabular import SiteMDP, policy_value, value_iteration

    core = _reload_core()
    mdp = SiteMDP.from_core(core)
    rows = mdp.action_rows(0, torch.arange(core.n_actions))  # (P, A, P + 1)
    env_rows = torch.stack(
        [core.next_page_probs(torch.full((3,), a)) for a in range(core.n_actions)], 1
    )
    torch.testing.assert_close(rows, env_rows.double(), rtol=0, atol=1e-6)
    organic = torch.as_tensor(RELOADS)
    for s in range(3):
        torch.testing.assert_close(rows[s, s], organic[s])
    like = mdp.landing_likelihood(torch.arange(3), torch.arange(3), torch.tensor([0, 1, 2]))
    torch.testing.assert_close(like[:, 0], organic.diagonal())
    own = torch.eye(3, 4, dtype=torch.float64)  # every page recommends itself
    nothing = torch.zeros(3, 4, dtype=torch.float64)
    nothing[:, 3] = 1.0
    torch.testing.assert_close(mdp.policy_rows(0, own), mdp.policy_rows(0, nothing))
    assert policy_value(mdp, own)["mean_return"] == pytest.approx(
        policy_value(mdp, nothing)["mean_return"]
    )
    v = torch.zeros(3, dtype=torch.float64) + 7.0
    torch.testing.assert_close(
        mdp._boost_backup(0, mdp.reward + torch.cat([v, v.new_zeros(1)])), mdp.q_backup(0, v)
    )
    result = value_iteration(mdp, gamma=0.9, tol=1e-12)
    torch.testing.assert_close(result.v, _brute_force_values(core), rtol=0, atol=1e-5)
    for s in range(3):
        assert float(result.q[s, s]) == pytest.approx(float(result.q[s, 3]))


@pytest.mark.parametrize("model", ["mnl", "cascade"])
def test_slate_tables_never_show_the_visitors_own_page(model):
    from agents.slate import (
        greedy_top_k,
        slate_one_step_value,
        slate_policy_value,
        slate_value_iteration,
    )
    from agents.tabular import SiteMDP
    from envs.slate import Cascade, PositionMNL

    choice = (
        PositionMNL(beta=3.0, examination=(1.0, 0.8))
        if model == "mnl"
        else Cascade(slate_size=2, alpha=2.0, gamma=1.0, continue_prob=0.8)
    )
    core = _reload_core(slate_model=choice)
    mdp = SiteMDP.from_core(core)
    _, slates, _ = slate_value_iteration(mdp, choice, gamma=0.9)
    pages = torch.arange(3)[:, None]
    assert not bool((slates == pages).any())  # reloads are not boosted: never worth showing
    top = greedy_top_k(mdp, choice)
    assert not bool((top == pages).any())
    # a slate table showing a page's own page is valued as showing nothing there, as the env does
    own = torch.tensor([[0, 1], [1, 2], [2, 0]])
    empty = torch.tensor([[-1, 1], [-1, 2], [-1, 0]])
    assert slate_policy_value(mdp, choice, own)["mean_return"] == pytest.approx(
        slate_policy_value(mdp, choice, empty)["mean_return"], rel=1e-12
    )
    assert slate_one_step_value(mdp, choice, own) == pytest.approx(
        slate_one_step_value(mdp, choice, empty), rel=1e-12
    )


# -- 3. with the position observed, a cut is a real end for SB3 -------------------------------


def _cuts(observe_position):
    from envs.vector_env import SiteSB3VecEnv

    env = SiteSB3VecEnv(16, seed=0, max_steps=3, observe_position=observe_position)
    env.reset()
    rng = np.random.default_rng(0)
    flags, positions = [], []
    for _ in range(40):
        env.step_async(rng.integers(0, env.action_space.n, 16))
        _, _, done, infos = env.step_wait()
        for d, info in zip(done, infos, strict=True):
            if d and info["terminal_observation"][-1] != env.core.n_pages:  # not an exit
                flags.append(info["TimeLimit.truncated"])
                if observe_position:
                    positions.append(int(info["terminal_observation"][0]))
    return flags, positions


def test_a_cut_with_the_position_observed_is_not_bootstrapped():
    flags, positions = _cuts(observe_position=True)
    assert flags and positions and set(positions) == {3}  # cut at max_steps
    assert not any(flags)  # SB3 does not bootstrap from the never-trained position 3
    flags, _ = _cuts(observe_position=False)
    assert flags and all(flags)  # without the position a cut is a time limit


def test_gymnasium_flags_of_a_cut_are_unchanged_with_the_position_observed():
    from envs.site_env import SiteEnv

    env = SiteEnv(max_steps=2, observe_position=True)
    env.reset(seed=0)
    seen = set()
    for _ in range(200):
        _, _, terminated, truncated, _ = env.step(env.action_space.n - 1)
        if terminated or truncated:
            seen.add((terminated, truncated))
            env.reset()
    assert (False, True) in seen


# -- 5. final_info (SAME_STEP) and action masks on the Gymnasium front ends -------------------


def test_vector_env_same_step_infos_have_final_info():
    from envs.vector_env import SiteVectorEnv

    env = SiteVectorEnv(8, max_steps=2)
    env.reset(seed=0)
    for _ in range(10):
        _, _, terminated, truncated, infos = env.step(np.full(8, env.single_action_space.n - 1))
        done = terminated | truncated
        if done.any():
            assert np.array_equal(infos["_final_info"], done)
            assert np.array_equal(infos["final_info"]["_followed"], done)
            assert infos["final_info"]["followed"].shape == (8,)
    masks = env.action_masks()
    assert masks.shape == (8, env.single_action_space.n)
    pages = env.core.page.numpy()
    assert not masks[np.arange(8), pages].any() and masks[:, -1].all()


def test_maskable_ppo_runs_on_the_registered_env():
    import gymnasium as gym
    from sb3_contrib import MaskablePPO

    import envs  # noqa: F401  (registers NextPage/Site-v0)

    env = gym.make("NextPage/Site-v0", max_steps=5)
    env.reset(seed=0)
    mask = env.unwrapped.action_masks()
    assert mask.dtype == bool and mask.shape == (env.action_space.n,)
    model = MaskablePPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0)
    model.learn(64)


# -- 4. TensorBoard: one value per tag and step; the closing evaluation under its own tags ----


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for events in sorted(folder.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    from scripts.train import run
    from tests.hydra_configs import compose_cfg, prepare_synthetic
    from tests.integration.test_agents import TINY

    out = tmp_path_factory.mktemp("tb")
    prepare_synthetic(out / "data", "data.n_sessions=2000", "data.n_pages=60")
    records = {}
    for agent in ("dqn", "ppo"):
        cfg = compose_cfg(
            "train",
            [
                f"agent={agent}",
                f"out_dir={out}",
                "env.dynamics=markov",
                "show_progress=false",
                "held_out_dir=null",
                "eval_sessions=256",
                *TINY[agent],
            ],
        )
        records[agent] = (run(cfg), out / "agents" / agent / "seed_0")
    return records


@pytest.mark.parametrize("agent", ["dqn", "ppo"])
def test_tensorboard_has_one_value_per_tag_and_step(tiny_runs, agent):
    record, folder = tiny_runs[agent]
    scalars = _scalars(folder)
    for tag, points in scalars.items():
        steps = [s for s, _ in points]
        assert len(steps) == len(set(steps)), f"{tag}: {len(steps)} values on {len(set(steps))}"
    periodic = scalars["eval/mean_return"]
    assert len(periodic) == len(record["fit"]["curve"])  # the closing one is not among them
    (closing,) = scalars["final_eval/mean_return"]
    assert closing[1] == pytest.approx(record["eval_learned"]["eval/mean_return"], rel=1e-6)
    assert "time/fps_with_eval" in scalars and "time/fps" in scalars
    assert "rollout/ep_rew_mean" in scalars
