"""The evaluation's statistics against known cases, and the heuristics on a hand-made site."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from agents.evaluate import Z95, kendall_tau, mean_ci, ratio_ci
from agents.heuristics import Greedy, HighestValue, MostLikely, Organic, Popular, RandomPolicy
from agents.report import (
    markdown,
    rank_agreement,
    rank_resolution,
    resolved_pairs,
    write_report,
)
from agents.tabular import SiteMDP
from tests.unit.test_tabular import NOTHING, A, B, C, core


def test_mean_ci_of_a_known_sample() -> None:
    mean, half = mean_ci([1, 2, 3, 4, 5])
    assert mean == 3.0
    # sd (ddof 1) = sqrt(2.5); half-width = 1.96 * sqrt(2.5) / sqrt(5)
    assert half == pytest.approx(1.959964 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    assert math.isinf(mean_ci([7.0])[1]) and math.isnan(mean_ci([])[0])


def test_mean_ci_covers_a_bernoulli_mean_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(2000):
        mean, half = mean_ci(rng.random(400) < 0.3)
        covered += abs(mean - 0.3) <= half
    assert 0.93 < covered / 2000 < 0.97


def test_ratio_ci_by_the_delta_method() -> None:
    pct, half = ratio_ci(110.0, 2.2, 100.0, 1.0)
    assert pct == pytest.approx(10.0)
    assert half == pytest.approx(100 * 1.1 * math.hypot(0.02, 0.01))


def test_kendall_tau_known_cases() -> None:
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert math.isnan(kendall_tau([1.0], [2.0]))


def test_z95() -> None:
    assert pytest.approx(1.96, abs=1e-3) == Z95


def fake_site() -> SimpleNamespace:
    """What the heuristics read from a Site, for the hand-made 3-page site."""
    template = core()
    return SimpleNamespace(
        template=template,
        markov=template.dynamics,
        page_traffic=lambda: np.array([5.0, 9.0, 1.0]),
        markov_mdp=lambda: SiteMDP.from_core(template),
        seed=0,
    )


def fitted(policy):
    policy.fit(fake_site())
    return policy


def test_heuristics_on_the_hand_made_site() -> None:
    pages = np.array([[3, A], [3, B], [3, C]])  # histories ending on A, B, C
    assert list(fitted(Organic()).predict(pages)[0]) == [NOTHING] * 3
    # most viewed page other than the current one: B, then A from B
    assert list(fitted(Popular()).predict(pages)[0][:2]) == [B, A]
    # organic most likely next page: from A a tie B/C (first wins), from B: A
    assert list(fitted(MostLikely()).predict(pages)[0][:2]) == [B, A]
    # the paying page C, except on C itself
    assert list(fitted(HighestValue()).predict(pages)[0][:2]) == [C, C]
    # one step ahead: from A recommending C pays 0.4 * 10 = 4 (B: 2, nothing: 2.5)
    greedy = fitted(Greedy())
    scores = greedy.action_scores(pages)
    assert scores[0, C] == pytest.approx(4.0) and scores[0, NOTHING] == pytest.approx(2.5)
    assert greedy.predict(pages)[0][0] == C


def test_random_policy_is_uniform_and_seeded() -> None:
    one, two = fitted(RandomPolicy(seed=3)), fitted(RandomPolicy(seed=3))
    obs = np.full((3000, 2), A)
    a, b = one.predict(obs)[0], two.predict(obs)[0]
    assert np.array_equal(a, b)
    counts = np.bincount(a, minlength=4)
    assert counts[NOTHING] == 0 and counts[:3].min() > 900
    np.testing.assert_allclose(one.table_probs().sum(1).numpy(), 1.0)


def test_table_policies_save_and_load(tmp_path) -> None:
    from agents.base import load_policy

    greedy = fitted(Greedy())
    greedy.save(tmp_path / "g")
    again = load_policy(tmp_path / "g")
    obs = np.array([[3, A], [A, B]])
    np.testing.assert_array_equal(again.action_scores(obs), greedy.action_scores(obs))
    assert again.name == "greedy"


def rec(policy: str, world: str, ret: float, ci: float = 1.0, exact: float | None = None) -> dict:
    """An evaluation record with the given return; the other figures are placeholders."""
    return {
        "policy": policy,
        "world": world,
        "mean_return": ret,
        "ci95": ci,
        "revenue_per_session": 1.0,
        "conversion_rate": 0.1,
        "pages_per_session": 3.0,
        "bounce_rate": 0.3,
        "time_on_site_s": 100.0,
        "n_sessions": 10,
        "uplift_pct": 0.0,
        "uplift_ci95": 1.0,
        "exact_return": exact,
    }


def test_report_tables_and_rank_agreement() -> None:
    records = [
        rec("a", "learned", 3),
        rec("b", "learned", 2),
        rec("c", "learned", 1),
        rec("a", "ground_truth", 1),
        rec("b", "ground_truth", 2),
        rec("c", "ground_truth", 3),
        rec("true_optimum", "ground_truth", 4),
    ]
    assert rank_agreement(records) == {"ground_truth": pytest.approx(-1.0)}
    # a held-out world: against the learned one, and against the truth (one pair of three
    # swapped: tau = (2 - 1) / 3)
    held_out = [rec("a", "held_out", 1), rec("b", "held_out", 3), rec("c", "held_out", 2)]
    assert rank_agreement(records + held_out) == {
        "ground_truth": pytest.approx(-1.0),
        "held_out": pytest.approx(-1 / 3),
        "held_out vs ground_truth": pytest.approx(1 / 3),
    }
    # no learned world evaluated: only the held-out world against the truth
    without = [r for r in records + held_out if r["world"] != "learned"]
    assert rank_agreement(without) == {"held_out vs ground_truth": pytest.approx(1 / 3)}
    text = markdown(records)
    assert "## World: learned" in text and "| a | 3.000 ± 1.000 |" in text
    assert "| ground_truth | c | true_optimum | 0.750 |" in text


def test_resolved_pairs_counts_only_what_the_reference_resolves() -> None:
    def est(mean, ci, exact=None):
        return {"mean_return": mean, "ci95": ci, "exact_return": exact}

    # the reference: a and b 0.2 apart with half-widths 0.5 (unresolved: 0.2 < 0.71); c exact
    # at 12 (its simulated 11 +- 3 alone would leave a / c unresolved); d and e simulated
    reference = {
        "a": est(10.0, 0.5),
        "b": est(10.2, 0.5),
        "c": est(11.0, 3.0, exact=12.0),
        "d": est(5.0, 1.0),
        "e": est(7.0, 0.5),
    }
    world = {
        "a": est(11.0, 0.5),
        "b": est(10.0, 0.5),  # b below a: the reference cannot say, so no error
        "c": est(10.9, 0.5),  # c below a by 0.1: swapped, but not resolved in this world
        "d": est(4.0, 1.0),
        "e": est(12.0, 0.5),  # e on top: swapped against a, b and c, each resolved here too
    }
    r = resolved_pairs(world, reference)
    assert r["pairs"] == 10 and r["resolved"] == 9
    assert r["unresolved"] == ["a / b"]
    assert r["discordant"] == ["a / c", "a / e", "b / e", "c / e"]
    assert r["confident_errors"] == ["a / e", "b / e", "c / e"]
    # the same order everywhere: nothing discordant, whatever the noise
    same = resolved_pairs(reference, reference)
    assert same["discordant"] == [] and same["resolved"] == 9


def test_report_names_the_pairs_the_truth_does_not_resolve(tmp_path) -> None:
    # the learned world swaps dqn and ppo, which the truth has 0.03 apart (+- 0.43 each)
    records = [
        rec("dqn", "learned", 147.1, 1.0),
        rec("ppo", "learned", 145.3, 1.0),
        rec("value_iteration", "learned", 141.6, 1.0),
        rec("dqn", "ground_truth", 149.66, 0.43),
        rec("ppo", "ground_truth", 149.69, 0.43),
        rec("value_iteration", "ground_truth", 140.9, 0.41, exact=141.42),
    ]
    assert rank_agreement(records) == {"ground_truth": pytest.approx(1 / 3)}
    r = rank_resolution(records)["ground_truth"]
    assert (r["pairs"], r["resolved"], r["discordant"]) == (3, 2, [])
    assert r["unresolved"] == ["dqn / ppo"]
    text = markdown(records)
    assert (
        "- ground_truth: tau = 0.333; 2 of 3 pairs resolved there, all in the same order; "
        "unresolved: dqn / ppo" in text
    )
    write_report(records, tmp_path, charts=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rank_resolution"]["ground_truth"]["unresolved"] == ["dqn / ppo"]


def test_rank_agreement_on_the_exact_values_where_the_truth_has_them(tmp_path) -> None:
    """The markov store's case (2026-12-07): the truth's simulation has DQN 1.5 above value
    iteration, its exact evaluation value iteration 0.08 above DQN, as the learned world has
    them. Tau on the simulated means counts the swap; on the exact values it does not, and the
    resolution (judged on the exact values) says the order is the same."""
    records = [
        rec("value_iteration", "learned", 118.9, 1.5),
        rec("dqn", "learned", 118.1, 1.5),
        rec("random", "learned", 32.5, 0.6),
        rec("value_iteration", "held_out", 120.8, 1.5),
        rec("dqn", "held_out", 121.2, 1.5),
        rec("random", "held_out", 32.3, 0.6),
        rec("value_iteration", "ground_truth", 115.66, 1.5, exact=115.92),
        rec("dqn", "ground_truth", 117.12, 1.5, exact=115.84),
        rec("random", "ground_truth", 31.51, 0.5, exact=31.50),
    ]
    assert rank_agreement(records) == {
        "held_out": pytest.approx(1 / 3),
        "ground_truth": pytest.approx(1 / 3),
        "held_out vs ground_truth": pytest.approx(1.0),
    }
    # no exact values in the simulators: only the comparisons with the truth
    assert rank_agreement(records, exact=True) == {
        "ground_truth": pytest.approx(1.0),
        "held_out vs ground_truth": pytest.approx(1 / 3),
    }
    text = markdown(records)
    assert (
        "- ground_truth: tau = 0.333, 1.000 on the exact values; 3 of 3 pairs resolved there, "
        "all in the same order" in text
    )
    assert "- held_out: tau = 0.333; 2 of 3 pairs resolved there" in text
    assert (
        "- held_out vs ground_truth: tau = 1.000, 0.333 on the exact values; 3 of 3 pairs "
        "resolved there, 1 of them in the other order (dqn / value_iteration)" in text
    )
    write_report(records, tmp_path, charts=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rank_agreement_exact"] == {
        "ground_truth": pytest.approx(1.0),
        "held_out vs ground_truth": pytest.approx(1 / 3),
    }


def test_beats_baselines_needs_the_difference_beyond_its_interval() -> None:
    from agents.report import beats_baselines

    def rec(policy, ret, ci):
        return {"policy": policy, "world": "learned", "mean_return": ret, "ci95": ci}

    wins = beats_baselines(
        [
            rec("ppo", 10.0, 0.3),
            rec("dqn", 9.3, 0.3),
            rec("organic", 9.0, 0.4),
            rec("random", 8.0, 0.4),
        ]
    )
    result = {(w["policy"], w["baseline"]): w["beats"] for w in wins}
    # ppo - organic = 1.0 > hypot(0.3, 0.4) = 0.5; dqn - organic = 0.3 < 0.5
    assert result == {
        ("ppo", "organic"): True,
        ("ppo", "random"): True,
        ("dqn", "organic"): False,
        ("dqn", "random"): True,
    }


def test_policy_folders_list_saved_policies_only(tmp_path) -> None:
    from agents.base import MANIFEST, policy_folders

    for folder in ("dqn/seed_0", "dqn/seed_2", "dqn/seed_1.partial", "ppo/seed_0", "ppo/seed_1"):
        (tmp_path / folder).mkdir(parents=True)
    for folder in ("dqn/seed_0", "dqn/seed_2", "dqn/seed_1.partial", "ppo/seed_1"):
        (tmp_path / folder / MANIFEST).write_text("{}")
    # a staging folder (crashed run) and a folder without a manifest are not policies
    assert policy_folders(tmp_path) == {
        "dqn": {0: tmp_path / "dqn/seed_0", 2: tmp_path / "dqn/seed_2"},
        "ppo": {1: tmp_path / "ppo/seed_1"},
    }
    assert list(policy_folders(tmp_path, ["ppo"])) == ["ppo"]
    assert policy_folders(tmp_path / "missing") == {}


def test_report_marks_truncated_policies_and_explains_its_units() -> None:
    def rec(policy, world, truncated=False, training=()):
        return {
            "policy": policy,
            "world": world,
            "mean_return": 2.0 if policy == "ppo" else 1.0,
            "ci95": 0.1,
            "revenue_per_session": 1.0,
            "conversion_rate": 0.1,
            "pages_per_session": 3.0,
            "bounce_rate": 0.3,
            "time_on_site_s": 100.0,
            "n_sessions": 3 * 20_480 if policy == "organic" else 2 * 20_480,
            "seeds": [0, 1, 2] if policy == "organic" else [0, 1],
            "uplift_pct": 0.0,
            "uplift_ci95": 1.0,
            "exact_return": None,
            "truncated": truncated,
            "training": list(training),
        }

    runs = [
        {"seed": 0, "steps": 134_976, "budget_steps": 1_000_000, "truncated": True},
        {"seed": 1, "steps": 1_000_000, "budget_steps": 1_000_000, "truncated": False},
    ]
    records = [rec("organic", w) for w in ("learned", "ground_truth")]
    records += [rec("ppo", w, True, runs) for w in ("learned", "ground_truth")]
    text = markdown(records, context={"reward": "page_value"})
    assert text.splitlines()[2] == (
        "> **TRUNCATED: a wall-clock limit (max_minutes) stopped the training of ppo "
        "(seed 0: 134,976 of 1,000,000 steps) before its budget of steps. These results "
        "depend on how busy the machine was: rerun without the limit before trusting them.**"
    )
    assert text.count("| ppo **(truncated)** | 2.000 ± 0.100 |") == 2
    assert "| organic | 1.000" in text and "organic **(truncated)**" not in text
    # the sessions column pools seeds: said per world, with the arithmetic
    assert "- learned: 2 seeds × 20,480 = 40,960 or 3 seeds × 20,480 = 61,440 sessions" in text
    assert "(`page_value`)" in text
    clean = markdown([rec("organic", "learned")])
    assert "TRUNCATED" not in clean and "truncated" not in clean


def test_organic_uplift_against_itself_is_zero_with_no_interval() -> None:
    from agents.evaluate import _add_uplift

    records = [
        {"policy": "organic", "world": "w", "mean_return": 10.0, "ci95": 1.0},
        {"policy": "greedy", "world": "w", "mean_return": 11.0, "ci95": 1.1},
        {"policy": "greedy", "world": "v", "mean_return": 11.0, "ci95": 1.1},
    ]
    _add_uplift(records)
    organic, greedy, alone = records
    assert (organic["uplift_pct"], organic["uplift_ci95"]) == (0.0, 0.0)
    assert (greedy["uplift_pct"], greedy["uplift_ci95"]) == ratio_ci(11.0, 1.1, 10.0, 1.0)
    assert (alone["uplift_pct"], alone["uplift_ci95"]) == (None, None)  # no organic there
