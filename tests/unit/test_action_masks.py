"""Action masks: the core's mask, the SB3 VecEnv's ``action_masks``, MaskablePPO that never
picks a masked action (training and prediction), and masked agents saved and loaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecMonitor

from agents.base import load_policy
from agents.networks import POLICIES
from agents.sb3 import ActionMaskTable, SB3Agent, ScaleReward, _rebuild
from envs.click_model import MultinomialBoost
from envs.core import SiteCore, action_mask
from envs.dynamics import MarkovDynamics
from envs.vector_env import SiteSB3VecEnv

P = 4
# from each page: the others and EXIT, uniformly (the tests set the pages by hand)
TRANSITIONS = np.full((P, P + 1), 1.0 / P) * (1 - np.eye(P, P + 1))
CANDIDATES = np.array([[1, 2, -1], [0, -1, -1], [2, 3, 0], [-1, -1, -1]])


def small_core(n: int = 4, **kw) -> SiteCore:
    dyn = MarkovDynamics(np.full(P, 1.0 / P), TRANSITIONS, tuple(f"/p{i}" for i in range(P)))
    core = SiteCore(dyn, MultinomialBoost(1.0), np.array([0.0, 1.0, 2.0, 3.0, 0.0]), n, **kw)
    core.reset(0)
    core.page = torch.arange(n) % P  # visitor i on page i
    return core


def rows(mask: torch.Tensor) -> list[list[int]]:
    return [torch.nonzero(r)[:, 0].tolist() for r in mask]


def test_the_current_page_is_masked_and_nothing_stays_valid() -> None:
    core = small_core()
    mask = core.action_mask()
    assert mask.shape == (4, P + 1) and mask.dtype == torch.bool  # 4 pages + "nothing"
    # visitor i on page i: every action but page i; "nothing" (action 4) always
    assert rows(mask) == [[1, 2, 3, 4], [0, 2, 3, 4], [0, 1, 3, 4], [0, 1, 2, 4]]
    assert bool(core.action_mask(exclude_current=False).all())


def test_candidates_limit_the_valid_pages() -> None:
    core = small_core(candidates=CANDIDATES)
    assert rows(core.action_mask()) == [[1, 2, 4], [0, 4], [0, 3, 4], [4]]
    # page 2 lists itself: valid when the current page is not masked
    assert rows(core.action_mask(exclude_current=False)) == [[1, 2, 4], [0, 4], [0, 2, 3, 4], [4]]


def test_a_row_with_no_valid_action_keeps_all_but_the_current_page() -> None:
    core = small_core(candidates=CANDIDATES, allow_no_recommendation=False)
    # page 3 has no candidate and there is no "nothing" action: every other page stays valid
    assert rows(core.action_mask()) == [[1, 2], [0], [0, 3], [0, 1, 2]]


def test_no_page_masks_nothing_and_groups_are_all_valid() -> None:
    pages = torch.tensor([P, 0])  # P: no current page (EXIT, or before the first page)
    mask = action_mask(pages, torch.tensor([0, 1, 2, 3, -1]), P, torch.as_tensor(CANDIDATES))
    assert rows(mask) == [[0, 1, 2, 3, 4], [1, 2, 4]]
    core = small_core(page_groups=np.array([0, 0, 1, 1]))
    assert core.action_mask().shape == (4, 3) and bool(core.action_mask().all())


def test_the_mask_of_many_visitors_matches_a_loop_over_them() -> None:
    rng = np.random.default_rng(0)
    cand = rng.integers(-1, 200, size=(200, 7))
    pages = torch.as_tensor(rng.integers(0, 201, size=500))
    got = action_mask(pages, torch.as_tensor(np.r_[np.arange(200), -1]), 200, torch.as_tensor(cand))
    for b, page in enumerate(pages.tolist()):
        want = np.ones(201, dtype=bool)
        if page < 200:
            want[:200] = np.isin(np.arange(200), cand[page][cand[page] >= 0])
            want[page] = False
        np.testing.assert_array_equal(got[b].numpy(), want)


def test_the_vec_env_exposes_the_mask_once_for_all_visitors() -> None:
    env = SiteSB3VecEnv(8, seed=0)
    wrapped = ScaleReward(VecMonitor(env), 0.01)  # what SB3Agent trains on
    obs = wrapped.reset()
    assert is_masking_supported(wrapped)
    masks = get_action_masks(wrapped)
    assert masks.shape == (8, env.core.n_pages + 1)
    np.testing.assert_array_equal(masks, env.core.action_mask().numpy())
    # the recommendation of the current page (the observation's last entry) is the one masked
    assert (~masks).sum() == 8 and not masks[np.arange(8), obs[:, -1]].any()
    # and an agent's mask table rebuilds it from the observation alone
    np.testing.assert_array_equal(ActionMaskTable.from_core(env.core)(obs).numpy(), masks)


def candidate_env(n: int = 16) -> SiteSB3VecEnv:
    """The default store with a candidate set of 5 pages per page (its first 5 successors)."""
    env = SiteSB3VecEnv(n, seed=0)
    p = env.core.n_pages
    cand = (np.arange(p)[:, None] + np.arange(1, 6)[None, :]) % p
    env.core.candidates = torch.as_tensor(cand)
    return env


class Recorder:
    """Wraps a VecEnv's ``step_async``: the actions of each step and the core's mask at that
    moment (the state the actions were chosen in); counts the ``action_masks`` calls."""

    def __init__(self, env: SiteSB3VecEnv) -> None:
        self.masks: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.asked = 0
        masks, step = env.action_masks, env.step_async

        def count_masks() -> np.ndarray:
            self.asked += 1
            return masks()

        def record_step(actions: np.ndarray) -> None:
            self.masks.append(env.core.action_mask().numpy())
            self.actions.append(np.asarray(actions).reshape(-1))
            step(actions)

        env.action_masks, env.step_async = count_masks, record_step  # type: ignore[method-assign]

    def invalid(self) -> int:
        """Actions taken that the mask of their step forbade."""
        taken = np.stack(self.actions)
        return int((~np.take_along_axis(np.stack(self.masks), taken[..., None], axis=2)).sum())


@pytest.mark.parametrize("policy", ["PagePolicy", "PageScorePolicy"])
def test_maskable_ppo_never_takes_a_masked_action_while_training(policy: str) -> None:
    torch.manual_seed(0)
    env = candidate_env()
    seen = Recorder(env)
    model = MaskablePPO(
        POLICIES["maskable_ppo"][policy], VecMonitor(env), n_steps=16, batch_size=64, seed=0
    )
    model.learn(512)
    assert len(seen.actions) == 32 and seen.asked == 32 and seen.invalid() == 0
    # 6 of 201 actions are valid per step: an unmasked policy's mistakes would show
    assert np.stack(seen.masks).sum(axis=2).max() == 6


def test_unmasked_ppo_does_take_masked_actions() -> None:  # the recorder can fail
    env = candidate_env()
    seen = Recorder(env)
    model = PPO(POLICIES["ppo"]["PagePolicy"], VecMonitor(env), n_steps=4, batch_size=64, seed=0)
    model.learn(64)
    assert len(seen.actions) == 4 and seen.asked == 0
    assert seen.invalid() >= 56  # of 64 (97% of the actions are masked)


def masked_agent(policy: str) -> SB3Agent:
    """A maskable agent on a 200-page site with 5 candidates per page (untrained weights)."""
    env = candidate_env(4)
    env.reset()
    kwargs = {"net_arch": [16], "features_extractor_kwargs": {"embedding_dim": 8}}
    agent = SB3Agent("maskable_ppo", "masked", policy=policy, policy_kwargs=kwargs, verbose=False)
    cls = POLICIES["maskable_ppo"][policy]
    agent.model = _rebuild(MaskablePPO, cls, env.observation_space, env.action_space, kwargs)
    agent.mask = ActionMaskTable.from_core(env.core)
    return agent


@pytest.mark.parametrize("policy", ["PagePolicy", "PageScorePolicy"])
def test_a_masked_agent_never_predicts_a_masked_action(policy: str) -> None:
    agent = masked_agent(policy)
    obs = np.random.default_rng(0).integers(0, 201, size=(300, 4))
    mask = agent.action_masks(obs)
    actions, _ = agent.predict(obs)
    assert actions.shape == (300,) and bool(mask[np.arange(300), actions].all())
    scores = agent.action_scores(obs)
    assert scores.shape == (300, 201) and bool((scores[~mask] < -1e7).all())
    assert bool((scores[mask] > -1e3).all())
    single, _ = agent.predict(obs[0])
    assert single.shape == () and int(single) == int(actions[0])
    # without the mask the same weights pick masked actions (the mask is what keeps them out)
    plain = agent.model.predict(obs, deterministic=True, action_masks=None)[0]
    assert (~mask[np.arange(300), plain]).sum() > 200


@pytest.mark.parametrize("policy", ["PagePolicy", "PageScorePolicy"])
def test_masked_agents_round_trip_with_their_mask(tmp_path: Path, policy: str) -> None:
    agent = masked_agent(policy)
    folder = agent.save(tmp_path / "masked")
    assert sorted(p.name for p in folder.iterdir()) == ["mask.pt", "policy.json", "policy.pt"]
    back = load_policy(folder)
    assert isinstance(back, SB3Agent) and type(back.model) is MaskablePPO
    assert torch.equal(back.mask.candidates, agent.mask.candidates)
    obs = np.random.default_rng(1).integers(0, 201, size=(50, 4))
    np.testing.assert_array_equal(back.action_scores(obs), agent.action_scores(obs))
    np.testing.assert_array_equal(back.predict(obs)[0], agent.predict(obs)[0])
    manifest = json.loads((folder / "policy.json").read_text())
    assert manifest["algo"] == "maskable_ppo" and manifest["mask"]["exclude_current"] is True


def test_a_damaged_mask_table_is_refused(tmp_path: Path) -> None:
    from clickstream.errors import RunFolderError

    folder = masked_agent("PagePolicy").save(tmp_path / "masked")
    torch.save({"action_pages": torch.tensor([0.5, 1.0])}, folder / "mask.pt")
    with pytest.raises(RunFolderError, match="action mask table"):
        load_policy(folder)


def test_mask_tables_are_for_page_actions() -> None:
    from clickstream.errors import ConfigError

    with pytest.raises(ConfigError, match="action_level=page"):
        ActionMaskTable.from_core(small_core(page_groups=np.array([0, 0, 1, 1])))
    obs_space = spaces.MultiDiscrete([P + 1] * 2)
    assert obs_space.shape == (2,)
