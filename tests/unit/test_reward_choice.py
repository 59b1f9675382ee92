"""The reward is decided from the prepared data before anything trains (issue 18, item 3)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from clickstream.errors import ClickstreamError
from clickstream.prepare import (
    REWARDS,
    choose_reward,
    reward_support,
    supported_rewards,
)
from envs.rewards import REWARD_KINDS, RewardTable, check_learnable


def catalog(revenue: float = 0.0, time: float | None = 12.0, value: float | None = None):
    """A two-page catalog: revenue and page value on /a, time on page on both."""
    return pd.DataFrame(
        {
            "page": ["/a", "/b"],
            "pageviews": [10, 5],
            "revenue": [revenue, 0.0],
            "page_value": [revenue / 10 if value is None else value, 0.0],
            "avg_time_on_page_s": [time, np.nan] if time is not None else [np.nan, np.nan],
        }
    )


def test_the_two_reward_lists_agree() -> None:
    assert REWARDS == REWARD_KINDS


@pytest.mark.parametrize(
    ("table", "supported", "default"),
    [
        (catalog(revenue=50.0), ["page_value", "revenue", "engagement", "pageviews"], "page_value"),
        (catalog(), ["engagement", "pageviews"], "engagement"),
        (catalog(time=None), ["pageviews"], "pageviews"),
        (catalog(value=19.99), ["page_value", "engagement", "pageviews"], "page_value"),
    ],
)
def test_reward_support_per_kind_of_site(table, supported, default) -> None:
    support = reward_support(table)
    assert support["supported"] == supported
    assert support["default"] == default
    assert sorted(support["missing"]) == sorted(set(REWARDS) - set(supported))


def test_no_revenue_falls_back_to_engagement_with_one_line() -> None:
    meta = {"dataset": "views", "rewards": reward_support(catalog())}
    reward, note = choose_reward(meta, "page_value")
    assert reward == "engagement"
    assert note is not None and "\n" not in note
    assert note.startswith("reward: views records no revenue and no value column")
    assert "engagement (expected seconds on the landed page) instead of page_value" in note
    assert "set env.reward=<engagement|pageviews>" in note
    # nothing timed either: one page per view
    meta = {"dataset": "msnbc", "rewards": reward_support(catalog(time=None))}
    reward, note = choose_reward(meta, "page_value", key="reward")
    assert reward == "pageviews" and "set reward=<pageviews>" in note


def test_a_supported_reward_is_kept_silently() -> None:
    meta = {"rewards": reward_support(catalog(revenue=50.0))}
    for reward in REWARDS:
        assert choose_reward(meta, reward) == (reward, None)
    assert choose_reward(meta, "auto")[0] == "page_value"


def test_an_explicit_reward_the_data_cannot_pay_names_the_key_the_script_reads() -> None:
    meta = {"dataset": "views", "rewards": reward_support(catalog())}
    with pytest.raises(ClickstreamError) as info:
        choose_reward(meta, "revenue", key="env.reward")
    assert str(info.value) == (
        "env.reward=revenue needs transactions with revenue (data.columns=revenue=<column>), "
        "and views has none: choose env.reward=engagement or pageviews (what this data supports)"
    )
    meta = {"dataset": "msnbc", "rewards": reward_support(catalog(time=None))}
    with pytest.raises(ClickstreamError, match=r"^reward=engagement needs time on page.*reward="):
        choose_reward(meta, "engagement", key="reward")
    with pytest.raises(ClickstreamError, match=r"env.reward must be one of"):
        choose_reward(meta, "money")


def test_old_datasets_are_read_from_their_catalog(tmp_path) -> None:
    catalog(revenue=5.0).to_parquet(tmp_path / "pages.parquet")
    assert supported_rewards({}, tmp_path) == list(REWARDS)
    with pytest.raises(ClickstreamError, match="prepare it again"):
        supported_rewards({})


def test_check_learnable_names_the_key_and_only_other_rewards() -> None:
    zero = RewardTable("engagement", torch.zeros(3))
    # was circular: "choose env.reward=engagement or pageviews" for engagement itself
    with pytest.raises(ClickstreamError) as info:
        check_learnable(zero, "data/x", key="reward")
    assert str(info.value) == (
        "reward 'engagement' is 0 on every page of data/x (no time on page known); "
        "choose reward=pageviews"
    )
    zero = RewardTable("page_value", torch.zeros(3))
    with pytest.raises(ClickstreamError, match=r"choose env.reward=engagement or pageviews$"):
        check_learnable(zero, "data/x", alternatives=["engagement", "pageviews"])
