"""The env front ends check what they are given instead of coercing it: seeds (and unseeded
envs drawing their own), vector actions, ``build_core`` options, the device and slate
parameters."""

from __future__ import annotations

import re
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401  (registers NextPage/Site-v0)
from clickstream.errors import ConfigError, ModelError
from envs.core import resolve_device
from envs.site_env import SiteEnv, build_core
from envs.slate import PositionMNL, build_slate_model
from envs.vector_env import SiteSB3VecEnv, SiteVectorEnv, vector_seed

ENV_ID = "envs:NextPage/Site-v0"
NOTHING = 200  # the "show nothing" action of the default 200-page store


def current_pages(env: SiteEnv, steps: int, seed: int | None = None) -> list[int]:
    """The current page after each step of "show nothing", reset at the end of a visit."""
    obs, _ = env.reset(seed=seed)
    pages = [int(obs[-1])]
    for _ in range(steps):
        obs, _, terminated, truncated, _ = env.step(NOTHING)
        pages.append(int(obs[-1]))
        if terminated or truncated:
            obs, _ = env.reset()
            pages.append(int(obs[-1]))
    return pages


def vector_pages(env: SiteVectorEnv, steps: int, seed: Any = None) -> list[list[int]]:
    obs, _ = env.reset(seed=seed)
    rows = [obs[:, -1].tolist()]
    for _ in range(steps):
        obs, *_ = env.step(np.full(env.num_envs, NOTHING))
        rows.append(obs[:, -1].tolist())
    return rows


# ---- 1. unseeded envs draw their own seed; a seed replays exactly as before ---------------


def test_unseeded_envs_simulate_different_visitors() -> None:
    a, b = SiteEnv(), SiteEnv()
    assert current_pages(a, 100) != current_pages(b, 100)
    assert a.core.seed != b.core.seed  # each drew its own from the OS


def test_unseeded_sub_envs_of_a_sync_vector_env_differ() -> None:
    vec = gym.make_vec(ENV_ID, num_envs=4, vectorization_mode="sync")
    obs, _ = vec.reset()
    rows = [obs]
    for _ in range(20):
        obs, *_ = vec.step(np.full(4, NOTHING))
        rows.append(obs)
    pages = np.stack(rows)  # (T, 4, K)
    assert not all((pages[:, i] == pages[:, 0]).all() for i in range(1, 4))


def test_an_unseeded_run_replays_from_the_seed_it_drew() -> None:
    env = SiteEnv()
    unseeded = current_pages(env, 60)
    drawn = env.core.seed
    assert drawn is not None and 0 <= drawn < 2**64
    assert current_pages(SiteEnv(), 60, seed=drawn) == unseeded
    assert env.core.seed == drawn  # later unseeded resets go on drawing, they do not reseed


def test_seeded_resets_replay_the_visitors_they_always_did() -> None:
    # the values the simulator gave for seed 0 before unseeded envs drew their own seeds
    assert current_pages(SiteEnv(), 8, seed=0) == [
        40,
        21,
        22,
        123,
        200,
        104,
        200,
        0,
        200,
        0,
        54,
        200,
        42,
    ]
    assert vector_pages(SiteVectorEnv(4), 5, seed=0) == [
        [0, 29, 19, 104],
        [0, 154, 102, 28],
        [115, 156, 19, 143],
        [0, 158, 103, 0],
        [2, 0, 19, 47],
        [3, 0, 0, 0],
    ]


# ---- 2. seeds: integers in [0, 2**64) only, one per vector env ----------------------------

BAD_SEEDS = ["42", "abc", 1.5, -1, 2**64, True, np.float64(3.0)]


def seed_message(value: Any) -> str:
    return re.escape(f"seed must be a whole number in [0, 2**64) or None, got {value!r}")


@pytest.mark.parametrize("seed", BAD_SEEDS, ids=repr)
def test_bad_seeds_are_refused_alike_by_every_front_end(seed: Any) -> None:
    with pytest.raises(ConfigError, match=f"^{seed_message(seed)}$"):
        gym.make(ENV_ID).reset(seed=seed)
    with pytest.raises(ConfigError, match=f"^{seed_message(seed)}$"):
        SiteVectorEnv(4).reset(seed=seed)
    with pytest.raises(ConfigError, match=f"^{seed_message(seed)}$"):
        SiteSB3VecEnv(4, seed=seed)
    with pytest.raises(ConfigError, match=f"^{seed_message(seed)}$"):
        SiteSB3VecEnv(4).seed(seed)


def test_numpy_integer_seeds_are_the_same_seed() -> None:
    assert current_pages(SiteEnv(), 20, seed=np.int64(5)) == current_pages(SiteEnv(), 20, seed=5)
    assert vector_pages(SiteVectorEnv(4), 5, seed=np.uint32(5)) == vector_pages(
        SiteVectorEnv(4), 5, seed=5
    )


def test_a_seed_list_that_one_seed_stands_for_is_that_seed() -> None:
    runs = [vector_pages(SiteVectorEnv(4), 10, seed=s) for s in (7, [7, 8, 9, 10], (7, 8, 9, 10))]
    assert runs[0] == runs[1] == runs[2]
    assert vector_seed(np.arange(7, 11), 4) == 7
    assert vector_seed([None] * 4, 4) is None


@pytest.mark.parametrize(
    "seeds", [[1, 9, 9, 9], [1, 2], [5, None, None, None], [], [1, 2, 3, 4, 5]], ids=repr
)
def test_other_seed_lists_are_refused_not_cut_to_their_first_seed(seeds: list[Any]) -> None:
    message = (
        f"seed {seeds!r}: the 4 visitors of this vector env are drawn from one generator, so it "
        "takes one seed: pass seed=s (or [s, s + 1, ..., s + 3], the list Gymnasium derives "
        "from it) or None"
    )
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        SiteVectorEnv(4).reset(seed=seeds)


def test_a_bad_seed_in_a_list_is_named_by_its_index() -> None:
    with pytest.raises(
        ConfigError, match=re.escape("seed[1] must be a whole number in [0, 2**64)")
    ):
        SiteVectorEnv(2).reset(seed=[3, 4.0])


# ---- 3. vector actions: what the action space contains, nothing coerced -------------------


def vector_envs(n: int, **kwargs: Any) -> list[Any]:
    """A Gymnasium vector env's ``step`` and an SB3 VecEnv's ``step``, both reset."""
    gym_vec = SiteVectorEnv(n, **kwargs)
    gym_vec.reset(seed=0)
    sb3_vec = SiteSB3VecEnv(n, seed=0, **kwargs)
    sb3_vec.reset()
    return [gym_vec.step, sb3_vec.step]


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        (
            np.array([0.5, 1.9, 2.2, 3.99]),
            "action 0.5 of env 0 is not in Discrete(201): actions must be integers in "
            "[0, 201), got dtype float64",
        ),
        (
            np.array([True, False, True, True]),
            "action True of env 0 is not in Discrete(201): actions must be integers in "
            "[0, 201), got dtype bool",
        ),
        (
            np.array(["1", "2", "3", "4"]),
            "action '1' of env 0 is not in Discrete(201): actions must be integers in "
            "[0, 201), got dtype <U1",
        ),
        (
            np.array([[1, 2], [3, 4]]),
            "actions must have shape (4,), one Discrete(201) action per env, got shape (2, 2)",
        ),
        (
            np.array([1, 2, 3]),
            "actions must have shape (4,), one Discrete(201) action per env, got shape (3,)",
        ),
        (
            np.array([1, 2, 201, -1]),
            "action 201 of env 2 is not in Discrete(201): actions must lie in [0, 201)",
        ),
        (
            np.array([1, 2, 3, -1], dtype=np.int8),
            "action -1 of env 3 is not in Discrete(201): actions must lie in [0, 201)",
        ),
    ],
    ids=["float", "bool", "str", "2x2", "too-few", "out-of-range", "negative-int8"],
)
def test_bad_vector_actions_are_refused(actions: np.ndarray, message: str) -> None:
    for step in vector_envs(4):
        with pytest.raises(ModelError, match=f"^{re.escape(message)}$"):
            step(actions)


def test_bad_slate_actions_name_the_env_and_its_slate() -> None:
    for step in vector_envs(2, slate_size=3):
        with pytest.raises(ModelError, match=re.escape("must have shape (2, 3)")):
            step(np.array([1, 2]))  # one page per env: not a MultiDiscrete([201 201 201]) action
        with pytest.raises(
            ModelError,
            match=re.escape(
                "action [4, 5, 300] of env 1 is not in MultiDiscrete([201 201 201]): actions "
                "must lie in [0, 201)"
            ),
        ):
            step(np.array([[1, 2, 3], [4, 5, 300]]))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint64])
def test_integer_actions_of_any_dtype_step_as_int64(dtype: type) -> None:
    actions = np.array([1, 2, 3, 4])

    def run(a: np.ndarray) -> list[list[float]]:
        env = SiteVectorEnv(4)
        env.reset(seed=3)
        return [env.step(a)[1].tolist() for _ in range(10)]

    # uint64 too, though Gymnasium's contains() refuses it: its values are checked, not cast
    assert run(actions.astype(dtype)) == run(actions)


# ---- 4. build_core options: checked, not coerced ----------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_steps": 2.7}, "max_steps must be a whole number >= 1, got 2.7"),
        ({"max_steps": True}, "max_steps must be a whole number >= 1, got True"),
        ({"max_steps": "10"}, "max_steps must be a whole number >= 1, got '10'"),
        ({"max_steps": 0}, "max_steps must be a whole number >= 1, got 0"),
        ({"history_len": 2.5}, "history_len must be a whole number >= 1, got 2.5"),
        ({"slate_size": 2.5}, "slate_size must be a whole number >= 1, got 2.5"),
        ({"slate_size": 0}, "slate_size must be a whole number >= 1, got 0"),
        ({"top_k": 3.0}, "top_k must be a whole number >= 1, got 3.0"),
        ({"observe_position": "false"}, "observe_position must be true or false, got 'false'"),
        ({"observe_entry_page": 1}, "observe_entry_page must be true or false, got 1"),
        (
            {"allow_no_recommendation": "no"},
            "allow_no_recommendation must be true or false, got 'no'",
        ),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else "",
)
def test_bad_options_are_refused_by_name(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        build_core(1, **options)


def test_bad_numbers_of_visitors_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"^n_visitors must be a whole number >= 1, got 2\.5$"):
        build_core(2.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^num_envs must be a whole number >= 1, got 2\.5$"):
        SiteVectorEnv(2.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^num_envs must be a whole number >= 1, got 0$"):
        SiteSB3VecEnv(0)


def test_numpy_integers_and_bools_are_real_options() -> None:
    core = build_core(
        np.int64(2),
        max_steps=np.int32(7),
        history_len=np.int64(3),
        observe_position=np.bool_(True),
        allow_no_recommendation=np.False_,
    )
    assert (core.n_visitors, core.max_steps, core.history_len) == (2, 7, 3)
    assert type(core.max_steps) is int and core.extras == ("position",)
    assert core.n_actions == 200  # no "show nothing" action


# ---- 5. the device ---------------------------------------------------------------------


def test_cuda_without_cuda_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = (
        "device=cuda asked for, but CUDA is not available on this machine: use device=cpu "
        "or device=auto"
    )
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        gym.make(ENV_ID, device="cuda")
    assert build_core(1, device="auto").device == torch.device("cpu")


def test_unknown_devices_are_config_errors() -> None:
    message = "device must be cpu, cuda, cuda:N or auto, got 'gpu0'"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        build_core(1, device="gpu0")


def test_a_cuda_index_beyond_the_machine_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    message = (
        "device=cuda:3 asked for, but this machine has 1 CUDA device(s): use cuda:0 up to "
        "cuda:0, cpu or auto"
    )
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        resolve_device("cuda:3")


# ---- 6. slate parameters are named by the key the user set -----------------------------


@pytest.mark.parametrize("decay", [-1, 0, 1.5, float("nan"), "0.5", True], ids=repr)
def test_a_bad_examination_decay_is_named(decay: Any) -> None:
    message = (
        "env.slate_params.examination_decay must be a number in (0, 1] (the examination of "
        f"position i is examination_decay ** i), got {decay!r}"
    )
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        build_core(1, slate_size=3, slate_params={"examination_decay": decay})


def test_a_good_examination_decay_sets_the_examination_per_position() -> None:
    model = build_slate_model("boost", {"beta": 1.0}, 3, {"examination_decay": 0.5})
    assert model == PositionMNL(1.0, (1.0, 0.5, 0.25))


def test_a_zero_dimensional_seed_and_a_ragged_action_list_are_named() -> None:
    from envs.vector_env import SiteVectorEnv

    env = SiteVectorEnv(4)
    obs, _ = env.reset(seed=np.array(3))
    again, _ = SiteVectorEnv(4).reset(seed=3)
    np.testing.assert_array_equal(obs, again)  # np.array(3) is the seed 3
    with pytest.raises(ModelError, match=r"actions must be an array of shape \(4,\), got a ragged"):
        env.step([0, [1, 2], 3, 4])
