"""Click models: rows stay distributions, and the numbers match the formulas worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clickstream.errors import ClickstreamError, ConfigError
from envs.click_model import (
    NO_RECOMMENDATION,
    MultinomialBoost,
    RelevanceFollow,
    build_click_model,
    click_model_options,
    describe_click_model,
)

MODELS = [
    MultinomialBoost(beta=1.5),
    MultinomialBoost(beta=-2.0),
    RelevanceFollow(alpha=-1.0, gamma=0.5),
    RelevanceFollow(alpha=2.0, gamma=0.0),
]


def _random_batch(seed: int, b: int = 64, p: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """Random next-page distributions ``(B, P + 1)`` (some zeros) and actions in [-1, P)."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(b, p + 1, generator=g, dtype=torch.float64)
    probs[torch.rand(b, p + 1, generator=g) < 0.3] = 0.0  # unreachable pages
    probs[:, -1] += 0.01  # every row can exit, so none is all zeros
    probs /= probs.sum(dim=1, keepdim=True)
    action = torch.randint(NO_RECOMMENDATION, p, (b,), generator=g)
    action[:4] = NO_RECOMMENDATION
    return probs, action


@pytest.mark.parametrize("model", MODELS, ids=repr)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rows_sum_to_one_and_stay_in_range(model, seed: int) -> None:
    probs, action = _random_batch(seed)
    out = model.apply(probs, action)
    assert out.shape == probs.shape and out.dtype == probs.dtype
    torch.testing.assert_close(out.sum(dim=1), torch.ones(len(probs), dtype=torch.float64))
    assert bool((out >= 0).all()) and bool((out <= 1 + 1e-12).all())
    f = model.follow_probability(probs, action)
    assert f.shape == action.shape
    assert bool((f >= 0).all()) and bool((f <= 1).all())
    shown = action >= 0
    p_a = probs[shown].gather(1, action[shown, None])[:, 0]
    new_p_a = out[shown].gather(1, action[shown, None])[:, 0]
    if isinstance(model, MultinomialBoost):  # f is P(next = a), organic visits to a included
        torch.testing.assert_close(f[shown], new_p_a)
    else:  # f is P(follow); a visitor who does not follow may still go to a organically
        torch.testing.assert_close(new_p_a, f[shown] + (1 - f[shown]) * p_a)
    # the other pages keep their relative odds
    others = torch.ones_like(out, dtype=torch.bool)
    others[shown.nonzero()[:, 0], action[shown]] = False
    scale = out[shown].sum(1) - new_p_a
    organic = probs[shown].sum(1) - p_a
    ratio = torch.where(others[shown], out[shown], 0) * organic[:, None]
    torch.testing.assert_close(ratio, torch.where(others[shown], probs[shown], 0) * scale[:, None])


@pytest.mark.parametrize("model", MODELS, ids=repr)
def test_no_recommendation_is_organic(model) -> None:
    probs, _ = _random_batch(3)
    action = torch.full((len(probs),), NO_RECOMMENDATION)
    assert torch.equal(model.apply(probs, action), probs)
    assert torch.equal(model.follow_probability(probs, action), torch.zeros(len(probs)).double())


def test_boost_with_beta_zero_is_organic_exactly() -> None:
    probs, action = _random_batch(4)
    assert torch.equal(MultinomialBoost(beta=0.0).apply(probs, action), probs)


def test_boost_by_hand() -> None:
    # a = 1, e^β = 2: p(1) doubles to 0.6, the row total becomes 1.3
    probs = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64)
    action = torch.tensor([1])
    model = MultinomialBoost(beta=math.log(2.0))
    expected = torch.tensor([[0.5, 0.6, 0.2]], dtype=torch.float64) / 1.3
    torch.testing.assert_close(model.apply(probs, action), expected)
    # follow probability = e^β p(a) / (1 + (e^β - 1) p(a)) = 0.6 / 1.3
    torch.testing.assert_close(
        model.follow_probability(probs, action), torch.tensor([0.6 / 1.3], dtype=torch.float64)
    )


def test_boost_cannot_reach_an_unreachable_page() -> None:
    probs = torch.tensor([[0.7, 0.0, 0.3], [0.0, 0.6, 0.4]], dtype=torch.float64)
    action = torch.tensor([1, 0])
    out = MultinomialBoost(beta=5.0).apply(probs, action)
    assert torch.equal(out, probs)  # p(a) = 0: nothing changes, the row is not even rescaled
    follow = MultinomialBoost(beta=5.0).follow_probability(probs, action)
    assert torch.equal(follow, torch.zeros(2, dtype=torch.float64))


def test_follow_by_hand() -> None:
    # f = σ(α + γ log p(a)); p' = f · onehot(a) + (1 - f) · p
    alpha, gamma = -1.0, 0.5
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.25, 0.25, 0.5]], dtype=torch.float64)
    action = torch.tensor([1, 0])
    f = [1 / (1 + math.exp(-(alpha + gamma * math.log(p)))) for p in (0.3, 0.25)]
    expected = torch.tensor(
        [
            [0.5 * (1 - f[0]), 0.3 * (1 - f[0]) + f[0], 0.2 * (1 - f[0])],
            [0.25 * (1 - f[1]) + f[1], 0.25 * (1 - f[1]), 0.5 * (1 - f[1])],
        ],
        dtype=torch.float64,
    )
    model = RelevanceFollow(alpha=alpha, gamma=gamma)
    torch.testing.assert_close(model.follow_probability(probs, action), torch.tensor(f).double())
    torch.testing.assert_close(model.apply(probs, action), expected)
    # f at p = 0.25: σ(-1 + 0.5 · ln 0.25) = σ(-1 - ln 2) = 1 / (1 + 2e)
    assert f[1] == pytest.approx(1 / (1 + 2 * math.e))


def test_follow_can_reach_an_unreachable_page_through_the_floor() -> None:
    model = RelevanceFollow(alpha=0.0, gamma=0.5, min_prob=1e-4)
    probs = torch.tensor([[0.8, 0.0, 0.2]], dtype=torch.float64)
    out = model.apply(probs, torch.tensor([1]))
    f = 1 / (1 + math.exp(-0.5 * math.log(1e-4)))  # σ(0.5 · ln 1e-4) = 1 / 101
    assert f == pytest.approx(1 / 101)
    torch.testing.assert_close(
        out, torch.tensor([[0.8 * (1 - f), f, 0.2 * (1 - f)]], dtype=torch.float64)
    )


@pytest.mark.parametrize("model", MODELS, ids=repr)
@pytest.mark.parametrize("bad", [2, 3, -2])
def test_exit_and_non_pages_cannot_be_recommended(model, bad: int) -> None:
    probs = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64)  # P = 2, EXIT = index 2
    with pytest.raises(ClickstreamError, match=f"recommendation {bad} is not a page id"):
        model.apply(probs, torch.tensor([bad]))
    with pytest.raises(ClickstreamError, match="is not a page id"):
        model.follow_probability(probs, torch.tensor([bad]))


@pytest.mark.parametrize("model", MODELS, ids=repr)
def test_shape_mismatch_raises(model) -> None:
    probs = torch.full((3, 4), 0.25, dtype=torch.float64)
    with pytest.raises(ClickstreamError, match="probs"):
        model.apply(probs, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ClickstreamError, match="probs"):
        model.apply(probs[0], torch.zeros(1, dtype=torch.long))
    with pytest.raises(ClickstreamError, match="probs"):
        model.apply(probs, torch.zeros(3, 1, dtype=torch.long))


def test_float32_batches_keep_their_dtype() -> None:
    probs, action = _random_batch(5)
    probs = probs.float()
    for model in MODELS:
        out = model.apply(probs, action)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.sum(dim=1), torch.ones(len(probs)))


def test_build_click_model() -> None:
    assert build_click_model("boost", beta=2.0) == MultinomialBoost(beta=2.0)
    assert build_click_model() == MultinomialBoost()
    assert build_click_model("follow", alpha=0.5, gamma=1.0) == RelevanceFollow(0.5, 1.0)
    with pytest.raises(ClickstreamError, match=r"\['boost', 'follow'\].*'cascade'"):
        build_click_model("cascade")


def test_click_models_in_words() -> None:
    # the numbers a person reads are the model's: odds x e^beta, follow rates sigma(...)
    boost = describe_click_model("boost", {"boost": {"beta": 1.0}, "follow": {"alpha": 0.0}})
    assert boost == (
        "a shown page's odds of being chosen are multiplied by e^1 = 2.72: a page a visitor "
        "picks 10% of the time is picked 23% of the time when shown (multinomial boost, beta 1)"
    )
    p = MultinomialBoost(1.0).apply(
        torch.tensor([[0.1, 0.9, 0.0]], dtype=torch.float64), torch.tensor([0])
    )
    assert round(100 * float(p[0, 0])) == 23
    follow = describe_click_model("follow", {"alpha": -1.0, "gamma": 0.5})
    # sigma(-1) = 27 %, sigma(-1 + 0.5 ln 0.1) = 10 %, sigma(-1 + 0.5 ln 0.01) = 4 %
    assert "27% at p = 1, 10% at p = 0.1, 4% at p = 0.01" in follow
    assert follow.endswith("(relevance follow, alpha -1, gamma 0.5)")
    assert "as often as without it" in describe_click_model("boost", {"beta": 0.0})
    with pytest.raises(ClickstreamError, match="beta"):
        describe_click_model("boost", {"beta": 100.0})


def test_a_click_model_rebuilds_from_its_saved_name_and_numbers() -> None:
    for model in (MultinomialBoost(beta=1.7), RelevanceFollow(alpha=-0.5, gamma=0.8)):
        kind, params = click_model_options(model)
        assert build_click_model(kind, **params) == model
    assert click_model_options(MultinomialBoost(2.0)) == ("boost", {"beta": 2.0})


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("boost", {"beta": "x"}, "click model MultinomialBoost beta must be a number, got 'x'"),
        ("boost", {"beta": True}, "click model MultinomialBoost beta must be a number, got True"),
        ("follow", {"gamma": None}, "click model RelevanceFollow gamma must be a number, got None"),
        (
            "follow",
            {"min_prob": "1e-6"},
            "click model RelevanceFollow min_prob must be a number, got '1e-6'",
        ),
    ],
)
def test_a_parameter_that_is_not_a_number_is_named(kind: str, params: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_click_model(kind, **params)
    assert str(err.value) == message
    assert build_click_model(kind, **{k: np.float32(0.5) for k in params}) is not None
