"""Compare two trained policies by training seed (agents/compare.py): per-seed scores, the mean
paired difference with its Student-t 95 % interval and p-value, and how far below b the seeds
allow a to be (non-inferiority).

    python scripts/compare_policies.py RESULTS:POLICY RESULTS:POLICY [--world ground_truth] [--margin M]

Each side is an evaluation's ``results.json`` (or the ``eval_dir`` holding it) and a policy in
it, e.g. PPO trained in two worlds and evaluated in the truth:

    python scripts/compare_policies.py runs/a/eval:ppo runs/b/eval:ppo

``--margin`` asks whether a is non-inferior to b within a margin: an absolute score (``2.5``) or
a share of b's mean (``1.5%``); it prints the one-sided p-value and, while not shown, about how
many seeds would show it. Without it, the one-sided 95 % lower bound of ``a - b`` says the
least margin the seeds support.

Seeds only one side has are named and left out, and a policy whose training a time limit cut
short is named in a warning. It writes nothing; the exit status is 1 on a bad argument or file
(the message names it).
"""

from __future__ import annotations

import argparse
import math
import sys

from agents.compare import find_record, paired_by_seed, record_scores


def _side(text: str) -> tuple[str, str]:
    path, sep, policy = text.rpartition(":")
    if not sep or not path or not policy:
        raise argparse.ArgumentTypeError(f"expected RESULTS:POLICY, got {text!r}")
    return path, policy


def _margin(text: str) -> tuple[float, bool]:
    """``"2.5"`` -> ``(2.5, False)``, an absolute margin; ``"1.5%"`` -> ``(1.5, True)``, a
    percentage of b's mean."""
    relative = text.endswith("%")
    try:
        value = float(text[:-1] if relative else text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(
            f"expected a margin >= 0, a score (2.5) or a share of b's mean (1.5%), got {text!r}"
        )
    return value, relative


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", type=_side, help="RESULTS:POLICY, the policy compared")
    parser.add_argument("b", type=_side, help="RESULTS:POLICY, the one it is compared against")
    parser.add_argument("--world", default="ground_truth", help="the world both were scored in")
    parser.add_argument("--world-b", default=None, help="b's world, when it differs from a's")
    parser.add_argument(
        "--margin",
        type=_margin,
        default=None,
        help="test a's non-inferiority to b within this margin: a score (2.5) or a share of "
        "b's mean (1.5%%)",
    )
    args = parser.parse_args(argv)

    (path_a, policy_a), (path_b, policy_b) = args.a, args.b
    world_b = args.world_b or args.world
    try:
        record_a, file_a = find_record(path_a, policy_a, args.world)
        record_b, file_b = find_record(path_b, policy_b, world_b)
        result = paired_by_seed(record_scores(record_a, file_a), record_scores(record_b, file_b))
    except ValueError as exc:  # a ClickstreamError is one: a file or record that is wrong
        print(f"compare_policies: {exc}", file=sys.stderr)
        return 1
    # the record's "truncated": a time limit cut the training of one of its seeds short
    cut_short = [
        f"{policy} ({path})"
        for path, policy, record in ((path_a, policy_a, record_a), (path_b, policy_b, record_b))
        if record.get("truncated")
    ]

    name_a, name_b = f"{policy_a} ({path_a})", f"{policy_b} ({path_b})"
    print(f"a: {name_a}, in {args.world}")
    print(f"b: {name_b}, in {world_b}")
    print(f"\n{'seed':>6} {'a':>10} {'b':>10} {'a - b':>9}")
    for seed, x, y in zip(result.seeds, result.a, result.b, strict=True):
        print(f"{seed:>6} {x:>10.3f} {y:>10.3f} {x - y:>+9.3f}")
    print(f"{'mean':>6} {result.mean_a:>10.3f} {result.mean_b:>10.3f} {result.difference:>+9.3f}")
    lo, hi = result.interval
    n = len(result.seeds)
    print(
        f"\npaired a - b over {n} seeds: {result.difference:+.3f}, 95 % interval "
        f"[{lo:+.3f}, {hi:+.3f}], p = {result.p_value:.3f}, a ahead on {result.ahead} of {n}"
    )
    needed = result.seeds_to_resolve()
    if needed is not None and result.p_value >= 0.05:  # unresolved at 95 %
        print(f"seeds to resolve a difference this size (80 % power): about {needed}")
    scale = abs(result.mean_b)

    def share(x: float, sign: str = "") -> str:  # of b's mean, when b's mean is not zero
        return f" ({x / scale:{sign}.2%} of b's mean)" if scale > 0 else ""

    bound = result.lower_bound
    print(f"one-sided 95 % lower bound of a - b: {bound:+.3f}{share(bound, '+')}")
    if args.margin is not None:
        value, relative = args.margin
        if relative and scale == 0:
            print("compare_policies: b's mean is 0; give the margin as a score", file=sys.stderr)
            return 1
        margin = value / 100 * scale if relative else value
        p = result.non_inferiority(margin)
        verdict = "shown" if p < 0.05 else "not shown"
        print(
            f"a non-inferior to b within {margin:.3f}{share(margin)}: p = {p:.3f}, "
            f"{verdict} at 95 %"
        )
        if p >= 0.05:
            needed = result.seeds_to_show_non_inferiority(margin)
            print(
                f"seeds to show it (80 % power): about {needed}"
                if needed is not None
                else "seeds to show it: none would (a - b is measured at -margin or below)"
            )
    if result.only_a or result.only_b:
        print(
            f"left out (one side only): a's seeds {list(result.only_a)}, "
            f"b's seeds {list(result.only_b)}"
        )
    for name in cut_short:  # a comparison of budgets that were not spent is not like for like
        print(
            f"WARNING: a time limit cut the training of {name} short on some seed "
            f"(its results.json record: 'truncated', 'training')",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
