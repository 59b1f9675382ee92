"""Observation extras (``env.observe_entry_page``, ``env.observe_position``): columns before the
page window that a window of ``K`` pages loses on a long visit. They change what an agent sees,
never what the visitors do, and the last column stays the current page."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env

from agents.networks import (
    PageActorCriticPolicy,
    PageHistoryExtractor,
    PageSequenceExtractor,
)
from agents.sb3 import SB3Agent, _rebuild, _with_extras
from clickstream.errors import ConfigError, ModelError
from envs.site_env import SiteEnv, build_core
from webapp.artefacts import _env_mismatch

P, K, STEPS = 200, 3, 50  # the default synthetic store's pages; max_steps of the env


def _core(entry: bool, position: bool, n: int = 64):
    return build_core(
        n, history_len=K, observe_entry_page=entry, observe_position=position, max_steps=STEPS
    )


def test_the_layout_and_space_put_the_extras_before_the_pages() -> None:
    core = _core(True, True)
    assert core.extras == ("entry_page", "position")
    assert core.obs_nvec.tolist() == [P + 1, STEPS + 1] + [P + 1] * K
    assert _core(False, True).obs_nvec.tolist() == [STEPS + 1] + [P + 1] * K
    assert _core(False, False).obs_nvec.tolist() == [P + 1] * K  # the old observation
    env = SiteEnv(history_len=K, observe_entry_page=True, observe_position=True)
    assert env.observation_space == spaces.MultiDiscrete([P + 1, STEPS + 1] + [P + 1] * K)
    check_env(env)  # SB3's checks: every observation lies in the space


def test_extras_follow_each_visit_and_leave_the_dynamics_alone() -> None:
    plain, extra = _core(False, False), _core(True, True)
    obs0, obs1 = plain.reset(7), extra.reset(7)
    assert torch.equal(obs1[:, 2:], obs0)  # the same arrivals
    assert torch.equal(obs1[:, 0], obs0[:, -1]) and int(obs1[:, 1].abs().sum()) == 0
    entry, seen, sessions = obs1[:, 0].clone(), torch.zeros(64, dtype=torch.long), 0
    actions = torch.full((64,), plain.n_actions - 1)  # show nothing
    for _ in range(120):
        a, b = plain.step(actions), extra.step(actions)
        assert torch.equal(a.landed, b.landed) and torch.equal(a.reward, b.reward)
        assert torch.equal(b.obs[:, 2:], a.obs) and torch.equal(b.final_obs[:, 2:], a.final_obs)
        assert torch.equal(b.obs[:, -1], a.obs[:, -1])  # the current page stays last
        done = b.terminated | b.truncated
        seen += 1
        # the finished session's last observation: its own entry page and its length
        assert torch.equal(b.final_obs[done, 0], entry[done])
        assert torch.equal(b.final_obs[done, 1], seen[done])
        assert bool((b.final_obs[b.truncated, 1] == STEPS).all())
        # the next observation: a newcomer at position 0 on her entry page, or one step on
        assert torch.equal(b.obs[~done, 0], entry[~done])
        assert torch.equal(b.obs[~done, 1], seen[~done])
        assert bool((b.obs[done, 1] == 0).all()) and torch.equal(b.obs[done, 0], b.obs[done, -1])
        sessions += int(done.sum())
        entry = torch.where(done, b.obs[:, 0], entry)
        seen = torch.where(done, 0, seen)
    assert sessions > 100  # the checks above saw many visits end


def test_observe_pages_is_the_simulators_observation() -> None:
    core = _core(True, True, n=1)
    obs, pages = core.reset(3)[0], []
    pages.append(int(obs[-1]))
    nothing = torch.tensor([core.n_actions - 1])
    for _ in range(30):
        assert core.observe_pages(pages).tolist() == obs.tolist()
        r = core.step(nothing)
        if bool(r.terminated[0] | r.truncated[0]):
            pages = []
        obs = r.obs[0]
        pages.append(int(obs[-1]))
    assert core.observe_pages([5]).tolist() == [5, 0, P, P, 5]
    assert core.observe_pages(list(range(60))).tolist() == [0, STEPS, 57, 58, 59]  # capped
    with pytest.raises(ModelError, match="page ids"):
        core.observe_pages([P])


def test_the_extractors_read_entry_page_and_position() -> None:
    space = spaces.MultiDiscrete([P + 1, STEPS + 1] + [P + 1] * K)
    flat = PageHistoryExtractor(space, embedding_dim=8, extras=["entry_page", "position"])
    gru = PageSequenceExtractor(
        space, embedding_dim=8, hidden_size=16, extras=["entry_page", "position"]
    )
    assert flat.features_dim == (K + 2) * 8 and gru.features_dim == 16 + 2 * 8
    obs = torch.tensor([[4, 0, P, P, 4], [4, 9, 1, 2, 4], [7, 9, 1, 2, 4]])
    for extractor in (flat, gru):
        out = extractor(obs)
        assert out.shape == (3, extractor.features_dim)
        assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])
    # the entry page is read with the page table: its features are that page's embedding
    assert torch.equal(flat(obs)[:, :8], flat.embedding(obs[:, 0]))
    # current_page: the last page's embedding beside the GRU's state, after the extras
    direct = PageSequenceExtractor(
        space, embedding_dim=8, hidden_size=16, extras=["entry_page", "position"], current_page=True
    )
    assert direct.features_dim == 16 + 3 * 8
    assert torch.equal(direct(obs)[:, -8:], direct.embedding(obs[:, -1]))
    alone = PageSequenceExtractor(spaces.MultiDiscrete([P + 1] * K), 8, 16, current_page=True)
    torch.testing.assert_close(alone(obs[:, 2:])[:, -8:], alone.embedding(obs[:, -1]))
    with pytest.raises(ModelError, match="extras among"):
        PageHistoryExtractor(space, extras=["time_on_page", "position"])
    with pytest.raises(ModelError, match="MultiDiscrete"):  # the extras not declared
        PageHistoryExtractor(space)


def test_a_saved_policy_names_its_extras_and_refuses_another_layout(tmp_path) -> None:
    from agents.base import load_policy
    from agents.evaluate import simulate

    core = _core(True, True, n=8)
    kwargs = _with_extras({"net_arch": [16]}, list(core.extras))
    with pytest.raises(ConfigError, match="drop the setting"):
        _with_extras(kwargs, ["position"])
    agent = SB3Agent("ppo", "ppo_extras", policy="PagePolicy", policy_kwargs=kwargs)
    agent.model = _rebuild(
        PPO,
        PageActorCriticPolicy,
        spaces.MultiDiscrete(core.obs_nvec),
        spaces.Discrete(core.n_actions),
        kwargs,
    )
    back = load_policy(agent.save(tmp_path / "agent"))
    obs = core.reset(0).numpy()
    np.testing.assert_array_equal(back.action_scores(obs), agent.action_scores(obs))
    tables = {"revenue": torch.zeros(P + 1), "time_on_page_s": torch.zeros(P + 1)}
    assert len(simulate(back, core, 16, 0, tables).returns) == 16
    with pytest.raises(ConfigError, match=r"env\.observe_entry_page"):
        simulate(back, _core(False, True, n=8), 16, 0, tables)


def test_the_web_app_serves_a_policy_only_with_its_own_extras() -> None:
    run = {"history_len": 4, "observe_entry_page": False, "observe_position": True}
    assert _env_mismatch(run, {**run}) is None
    assert "observe_position=False" in _env_mismatch(run, {**run, "observe_position": False})
    # a record from before the options existed observed neither
    assert "observe_position=False" in _env_mismatch(run, {"history_len": 4})
    assert _env_mismatch({**run, "observe_position": False}, {"history_len": 4}) is None


def test_belief_policies_refuse_extras_they_would_read_as_pages() -> None:
    from types import SimpleNamespace

    from agents.belief import refuse_observation_extras

    refuse_observation_extras(SimpleNamespace(env={"observe_position": False}), "belief")
    with pytest.raises(ConfigError, match=r"env\.observe_entry_page=false"):
        refuse_observation_extras(SimpleNamespace(env={"observe_entry_page": True}), "belief")
