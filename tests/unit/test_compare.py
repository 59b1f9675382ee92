"""The paired comparison of two policies by training seed (agents/compare.py) and its script."""

from __future__ import annotations

import json
import math

import pytest

from agents.compare import (
    paired_by_seed,
    regularized_beta,
    seed_scores,
    student_t_quantile,
    student_t_two_sided_p,
)
from clickstream.errors import DataError, RunFolderError
from scripts import compare_policies


@pytest.mark.parametrize(
    ("df", "quantile"),
    # tabulated 97.5 % quantiles of Student's t
    [(1, 12.7062047), (2, 4.3026527), (9, 2.2621572), (30, 2.0422725), (1000, 1.9623391)],
)
def test_student_t_quantiles_match_the_tables(df: int, quantile: float) -> None:
    assert student_t_quantile(0.95, df) == pytest.approx(quantile, abs=1e-6)
    assert student_t_two_sided_p(quantile, df) == pytest.approx(0.05, abs=1e-8)


def test_student_t_p_values_have_their_closed_forms() -> None:
    # 1 df is the Cauchy distribution: P(|T| >= t) = 1 - 2 atan(t) / pi
    for t in (0.1, 1.0, 3.0, 40.0):
        assert student_t_two_sided_p(t, 1) == pytest.approx(1 - 2 * math.atan(t) / math.pi)
        # 2 df: P(|T| >= t) = 1 - t / sqrt(t^2 + 2)
        assert student_t_two_sided_p(t, 2) == pytest.approx(1 - t / math.sqrt(t * t + 2))
    assert student_t_two_sided_p(0.0, 7) == 1.0
    assert student_t_two_sided_p(-2.5, 7) == student_t_two_sided_p(2.5, 7)
    # with many degrees of freedom the normal's: P(|Z| >= 1.96) = 0.04999579
    assert student_t_two_sided_p(1.959964, 1e7) == pytest.approx(0.05, abs=1e-6)


def test_regularized_beta_known_values() -> None:
    assert regularized_beta(1.0, 1.0, 0.3) == pytest.approx(0.3)  # uniform
    assert regularized_beta(2.0, 3.0, 0.4) == pytest.approx(0.5248)  # 1 - binomial(4, 0.4) <= 1
    assert regularized_beta(5.0, 0.5, 0.0) == 0.0
    assert regularized_beta(5.0, 0.5, 1.0) == 1.0
    # symmetry I_x(a, b) = 1 - I_{1-x}(b, a), on both branches of the continued fraction
    for x in (0.05, 0.5, 0.95):
        assert regularized_beta(4.5, 0.5, x) == pytest.approx(1 - regularized_beta(0.5, 4.5, 1 - x))


def test_paired_difference_interval_and_p_value() -> None:
    a = {0: 11.0, 1: 22.0, 2: 33.0, 3: 99.0}
    b = {0: 10.0, 1: 20.0, 2: 30.0, 7: 5.0}
    result = paired_by_seed(a, b)
    assert result.seeds == (0, 1, 2)
    assert result.only_a == (3,) and result.only_b == (7,)
    assert result.a == (11.0, 22.0, 33.0) and result.b == (10.0, 20.0, 30.0)
    assert result.mean_a == pytest.approx(22.0) and result.mean_b == pytest.approx(20.0)
    # differences 1, 2, 3: mean 2, sd 1, standard error 1/sqrt(3), t = 2 sqrt(3) on 2 df
    assert result.difference == pytest.approx(2.0) and result.sd == pytest.approx(1.0)
    assert result.half_width == pytest.approx(4.3026527 / math.sqrt(3), abs=1e-6)
    t = 2 * math.sqrt(3)
    assert result.p_value == pytest.approx(1 - t / math.sqrt(t * t + 2))
    assert result.interval == pytest.approx((2 - result.half_width, 2 + result.half_width))
    assert result.ahead == 3
    # sd 1, difference 2: the least n with (t(n - 1) + 0.8416) / sqrt(n) <= 2 is 5
    # (n = 4: (3.182 + 0.842) / 2 = 2.012; n = 5: (2.776 + 0.842) / 2.236 = 1.618)
    assert result.seeds_to_resolve() == 5
    assert result.seeds_to_resolve(power=0.5) == 4  # (3.182 + 0) / 2 = 1.591


def test_non_inferiority_within_a_margin() -> None:
    # differences 1, 2, 3: mean 2, standard error 1/sqrt(3), 2 df; the tabulated 95 % one-sided
    # quantile of t with 2 df is 2.9199856
    result = paired_by_seed({0: 11.0, 1: 22.0, 2: 33.0}, {0: 10.0, 1: 20.0, 2: 30.0})
    assert result.standard_error == pytest.approx(1 / math.sqrt(3))
    assert result.lower_bound == pytest.approx(2 - 2.9199856 / math.sqrt(3), abs=1e-6)
    # margin 1: t = (2 + 1) sqrt(3) on 2 df, one-sided p = (1 - t / sqrt(t^2 + 2)) / 2
    t = 3 * math.sqrt(3)
    assert result.non_inferiority(1.0) == pytest.approx((1 - t / math.sqrt(t * t + 2)) / 2)
    # b against a: differences -1, -2, -3, worse than the margin of 1 on the mean
    reverse = paired_by_seed({0: 10.0, 1: 20.0, 2: 30.0}, {0: 11.0, 1: 22.0, 2: 33.0})
    t = -1 * math.sqrt(3)  # (-2 + 1) sqrt(3)
    assert reverse.non_inferiority(1.0) == pytest.approx(1 - (1 - abs(t) / math.sqrt(5)) / 2)
    assert reverse.lower_bound == pytest.approx(-2 - 2.9199856 / math.sqrt(3), abs=1e-6)
    # at a margin of -lower_bound the test sits exactly on 95 %
    assert reverse.non_inferiority(-reverse.lower_bound) == pytest.approx(0.05, abs=1e-9)
    # sd 1: (t_90(n - 1) + 0.8416) / sqrt(n) is 2.172 at n = 3, 1.597 at n = 4, 1.053 at
    # n = 7 and 0.967 at n = 8 (t_90: the two-sided 90 % quantile, one-sided 95 %)
    assert result.seeds_to_show_non_inferiority(0.0) == 4  # effect 2
    assert result.seeds_to_show_non_inferiority(1.0) == 3  # effect 3
    assert reverse.seeds_to_show_non_inferiority(3.0) == 8  # effect -2 + 3 = 1
    assert reverse.seeds_to_show_non_inferiority(1.0) is None  # -2 + 1 < 0: no seeds would
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
            result.non_inferiority(bad)


def test_a_policy_against_itself_and_a_constant_shift() -> None:
    scores = {s: 100.0 + 3.0 * s for s in range(5)}
    same = paired_by_seed(scores, scores)
    assert same.difference == 0.0 and same.half_width == 0.0 and same.p_value == 1.0
    assert same.ahead == 0 and same.seeds_to_resolve() is None
    shifted = paired_by_seed({s: v + 1.5 for s, v in scores.items()}, scores)
    assert shifted.difference == pytest.approx(1.5) and shifted.p_value == 0.0


def test_fewer_than_two_common_seeds_are_refused() -> None:
    with pytest.raises(ValueError, match=r"at least two training seeds in common; seeds \[0, 1\]"):
        paired_by_seed({0: 1.0, 1: 2.0}, {1: 1.0, 2: 2.0})


def _write_results(path, records) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps({"records": records}), encoding="utf-8")


def _record(policy: str, world: str, seeds: list[int], means: list[float]) -> dict:
    return {"policy": policy, "world": world, "seeds": seeds, "seed_means": means}


def test_seed_scores_reads_one_policy_in_one_world(tmp_path) -> None:
    _write_results(
        tmp_path / "eval",
        [
            _record("ppo", "ground_truth", [0, 1, 2], [170.0, 171.5, 169.0]),
            _record("ppo", "learned", [0, 1, 2], [1.0, 2.0, 3.0]),
            _record("dqn", "ground_truth", [0, 1], [160.0, 161.0]),
        ],
    )
    assert seed_scores(tmp_path / "eval", "ppo") == {0: 170.0, 1: 171.5, 2: 169.0}
    assert seed_scores(tmp_path / "eval" / "results.json", "ppo", "learned") == {
        0: 1.0,
        1: 2.0,
        2: 3.0,
    }
    listed = "dqn in ground_truth, ppo in ground_truth, ppo in learned"
    with pytest.raises(
        DataError, match=f"no record of policy 'a2c' in world 'ground_truth'.*{listed}"
    ):
        seed_scores(tmp_path / "eval", "a2c")


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ({"rows": []}, "has no 'records' list"),
        ([_record("ppo", "ground_truth", [0, 1], [1.0])], "no seeds with one score each"),
        ([_record("ppo", "ground_truth", [0, 0], [1.0, 2.0])], r"lists a seed twice: \[0, 0\]"),
        ([_record("ppo", "ground_truth", [0, "1"], [1.0, 2.0])], "not a number"),
        ([_record("ppo", "ground_truth", [0, 1.5], [1.0, 2.0])], "not a number"),
        ([_record("ppo", "ground_truth", [0, 1], [1.0, None])], "not a number"),
    ],
)
def test_seed_scores_names_a_malformed_file(tmp_path, records, message) -> None:
    folder = tmp_path / "eval"
    folder.mkdir()
    body = records if isinstance(records, dict) else {"records": records}
    (folder / "results.json").write_text(json.dumps(body), encoding="utf-8")
    with pytest.raises(DataError, match=message) as info:
        seed_scores(folder, "ppo")
    assert info.value.file == str(folder / "results.json")


def test_seed_scores_names_a_missing_or_broken_file(tmp_path) -> None:
    with pytest.raises(RunFolderError, match="evaluation results not found"):
        seed_scores(tmp_path, "ppo")
    (tmp_path / "results.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(RunFolderError, match="not valid JSON"):
        seed_scores(tmp_path, "ppo")


def test_the_script_prints_the_paired_comparison(tmp_path, capsys) -> None:
    _write_results(tmp_path / "a", [_record("ppo", "ground_truth", [0, 1, 2], [11.0, 22.0, 33.0])])
    _write_results(tmp_path / "b", [_record("ppo", "ground_truth", [0, 1, 2, 3], [10, 20, 30, 1])])
    assert compare_policies.main([f"{tmp_path / 'a'}:ppo", f"{tmp_path / 'b'}:ppo"]) == 0
    out = capsys.readouterr().out
    assert "paired a - b over 3 seeds: +2.000, 95 % interval [-0.484, +4.484], p = 0.074" in out
    assert "a ahead on 3 of 3" in out
    assert "left out (one side only): a's seeds [], b's seeds [3]" in out
    # unresolved at 95 %: how many seeds would resolve it (sd 1, difference 2: 5 seeds)
    assert "seeds to resolve a difference this size (80 % power): about 5" in out
    _write_results(tmp_path / "c", [_record("ppo", "ground_truth", [0, 1, 2], [11.9, 22, 32.1])])
    assert compare_policies.main([f"{tmp_path / 'c'}:ppo", f"{tmp_path / 'b'}:ppo"]) == 0
    out = capsys.readouterr().out
    assert "[+1.752, +2.248], p = 0.001" in out and "seeds to resolve" not in out


def test_the_script_tests_non_inferiority(tmp_path, capsys) -> None:
    _write_results(tmp_path / "a", [_record("ppo", "ground_truth", [0, 1, 2], [9.0, 18.0, 27.0])])
    _write_results(tmp_path / "b", [_record("ppo", "ground_truth", [0, 1, 2], [10, 20, 30])])
    sides = [f"{tmp_path / 'a'}:ppo", f"{tmp_path / 'b'}:ppo"]
    # differences -1, -2, -3: the lower bound -2 - 2.92/sqrt(3) = -3.686, 18.43 % of b's 20
    assert compare_policies.main(sides) == 0
    out = capsys.readouterr().out
    assert "one-sided 95 % lower bound of a - b: -3.686 (-18.43% of b's mean)" in out
    assert "non-inferior" not in out
    # within 5 (t = 3 sqrt(3)) shown; within 10 % of b's mean (2: t = 0) not, and no number of
    # seeds would show it, since the measured difference sits on the margin
    assert compare_policies.main([*sides, "--margin", "5"]) == 0
    out = capsys.readouterr().out
    assert "a non-inferior to b within 5.000 (25.00% of b's mean): p = 0.018, shown" in out
    assert "seeds to show it" not in out
    assert compare_policies.main([*sides, "--margin", "10%"]) == 0
    out = capsys.readouterr().out
    assert "within 2.000 (10.00% of b's mean): p = 0.500, not shown at 95 %" in out
    assert "seeds to show it: none would" in out
    assert compare_policies.main([*sides, "--margin", "15%"]) == 0  # effect 1, sd 1: 8 seeds
    assert "seeds to show it (80 % power): about 8" in capsys.readouterr().out
    for bad in ("-1", "abc", "inf%", "%"):
        with pytest.raises(SystemExit):
            compare_policies.main([*sides, "--margin", bad])
        assert "expected a margin >= 0" in capsys.readouterr().err
    _write_results(tmp_path / "z", [_record("ppo", "ground_truth", [0, 1, 2], [1.0, 0.0, -1.0])])
    assert compare_policies.main([sides[0], f"{tmp_path / 'z'}:ppo", "--margin", "1%"]) == 1
    assert "b's mean is 0; give the margin as a score" in capsys.readouterr().err


def test_the_script_refuses_bad_arguments(tmp_path, capsys) -> None:
    _write_results(tmp_path / "a", [_record("ppo", "ground_truth", [0, 1], [1.0, 2.0])])
    assert compare_policies.main([f"{tmp_path / 'a'}:dqn", f"{tmp_path / 'a'}:ppo"]) == 1
    assert "no record of policy 'dqn'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare_policies.main(["no-policy-given", f"{tmp_path / 'a'}:ppo"])


def test_the_script_compares_across_worlds(tmp_path, capsys) -> None:
    _write_results(
        tmp_path / "a",
        [
            _record("ppo", "ground_truth", [0, 1, 2], [10.0, 20.0, 30.0]),
            _record("ppo", "learned", [0, 1, 2], [12.0, 21.0, 33.0]),
        ],
    )
    folder = f"{tmp_path / 'a'}:ppo"
    assert (
        compare_policies.main([folder, folder, "--world", "learned", "--world-b", "ground_truth"])
        == 0
    )
    out = capsys.readouterr().out
    assert "a: ppo" in out and "in learned" in out and "in ground_truth" in out
    assert "paired a - b over 3 seeds: +2.000" in out  # differences 2, 1, 3


def test_the_script_warns_of_training_a_time_limit_cut_short(tmp_path, capsys) -> None:
    record = _record("ppo", "ground_truth", [0, 1], [1.0, 2.0])
    _write_results(tmp_path / "a", [{**record, "truncated": True}])
    _write_results(tmp_path / "b", [{**record, "truncated": False}])
    assert compare_policies.main([f"{tmp_path / 'a'}:ppo", f"{tmp_path / 'b'}:ppo"]) == 0
    err = capsys.readouterr().err
    assert f"WARNING: a time limit cut the training of ppo ({tmp_path / 'a'}) short" in err
    assert str(tmp_path / "b") not in err
