"""The evaluation report: ``results.json``, ``results.md`` and PNG bar charts with error bars.

The Markdown report has one table per world (policies sorted by return, with 95 % confidence
half-widths, uplift over organic, and the exact value of table policies), the share of the
reference optimum each policy reaches where one exists (``true_optimum``, ``intent_oracle``),
and Kendall's tau between the ranking of policies in the learned simulator and in the other
worlds: how far the learned simulator can be trusted to pick the best policy. Beside tau, the
pairs the other world resolves and those of them the learned one swaps: a pair the truth's own
evaluation cannot order says nothing about the simulator.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agents.evaluate import kendall_tau
from clickstream.io import atomic_file

REFERENCES = ("true_optimum", "intent_oracle", "belief_optimum")
"""Reference policies (not deployable) whose return others are measured against."""

LEARNING = ("ppo", "dqn", "q_learning", "value_iteration")
"""Policies learnt from data, each expected to beat ``organic`` and ``random``."""


def beats_baselines(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Does each learning policy beat ``organic`` and ``random`` in each world? A win needs the
    difference of mean returns to exceed its 95 % half-width (independent samples)."""
    out = []
    for world, rows in by_world(records).items():
        found = {r["policy"]: r for r in rows}
        for name in LEARNING:
            if name not in found:
                continue
            for base in ("organic", "random"):
                if base not in found:
                    continue
                a, b = found[name], found[base]
                diff = a["mean_return"] - b["mean_return"]
                half = math.hypot(a["ci95"], b["ci95"])
                out.append(
                    {
                        "world": world,
                        "policy": name,
                        "baseline": base,
                        "difference": diff,
                        "ci95": half,
                        "beats": diff > half,
                    }
                )
    return out


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:,.{digits}f}"


def by_world(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        out.setdefault(r["world"], []).append(r)
    return out


def _deployable_by_world(
    records: Sequence[Mapping[str, Any]],
) -> dict[str, dict[str, Mapping[str, Any]]]:
    """Per world, each deployable policy's record (references left out)."""
    return {
        world: {r["policy"]: r for r in rows if r["policy"] not in REFERENCES}
        for world, rows in by_world(records).items()
    }


def _compared_worlds(worlds: Iterable[str]) -> list[tuple[str, str, str]]:
    """``(key, first, second)`` of each ranking comparison the report makes: the learned
    simulator against every other world, and the held-out simulator against the ground truth
    (key ``held_out vs ground_truth``) where both were evaluated."""
    worlds = list(worlds)
    out = [(w, "learned", w) for w in worlds if w != "learned" and "learned" in worlds]
    if "held_out" in worlds and "ground_truth" in worlds:
        out.append(("held_out vs ground_truth", "held_out", "ground_truth"))
    return out


def rank_agreement(
    records: Sequence[Mapping[str, Any]], *, exact: bool = False
) -> dict[str, float]:
    """Kendall's tau of the policies' mean returns for each comparison of
    :func:`_compared_worlds`: a visitor model trained with another seed should rank as the
    truth does too. Deployable policies present in both worlds; references left out.

    With ``exact``, a policy's exact value stands in for its simulated mean wherever exact
    policy evaluation gave one (:func:`_estimate`, what :func:`resolved_pairs` judges on), and
    only the comparisons where some policy has one are made: the truth's own ranking, without
    its simulation noise, where it is known.
    """
    worlds = _deployable_by_world(records)
    out = {}
    for key, first, second in _compared_worlds(worlds):
        names = sorted(set(worlds[first]) & set(worlds[second]))
        pair = (worlds[first], worlds[second])
        if exact:
            if not any(_has_exact(w[n]) for w in pair for n in names):
                continue
            values = [[_estimate(w[n])[0] for n in names] for w in pair]
        else:
            values = [[w[n]["mean_return"] for n in names] for w in pair]
        out[key] = kendall_tau(*values)
    return out


def _has_exact(record: Mapping[str, Any]) -> bool:
    exact = record.get("exact_return")
    return exact is not None and math.isfinite(exact)


def _estimate(record: Mapping[str, Any]) -> tuple[float, float]:
    """A policy's value in a world and its 95 % half-width: the exact value (no error) where
    exact policy evaluation gave one, else the simulated mean."""
    if _has_exact(record):
        return float(record["exact_return"]), 0.0
    return float(record["mean_return"]), float(record["ci95"])


def resolved_pairs(
    first: Mapping[str, Mapping[str, Any]], second: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Pairs of policies that ``second`` (the reference, e.g. the ground truth) resolves, and
    those of them that ``first`` orders the other way round.

    Kendall's tau counts every pair, also one that the reference's own evaluation cannot order:
    two policies 0.03 apart with half-widths of 0.4 make tau a coin flip. Here a pair counts as
    resolved when its difference exceeds the 95 % half-width of the difference of two
    independent means (``hypot`` of the two half-widths; exact values have none), which errs
    on the side of calling a pair unresolved when the two ran on common random numbers.

    Args:
        first, second: Per policy, its record (``mean_return``, ``ci95``, optional
            ``exact_return``) in each world.

    Returns:
        ``pairs`` (policies in both), ``resolved`` (pairs ``second`` resolves), ``discordant``
        (of those, pairs ``first`` orders the other way or ties) and ``confident_errors`` (of
        those, pairs ``first`` resolves too), each list of pairs as ``"a / b"``, and
        ``unresolved`` (the pairs ``second`` does not resolve).
    """
    names = sorted(set(first) & set(second))
    out: dict[str, Any] = {
        "pairs": 0,
        "resolved": 0,
        "discordant": [],
        "confident_errors": [],
        "unresolved": [],
    }
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            out["pairs"] += 1
            (ref_a, ref_ha), (ref_b, ref_hb) = _estimate(second[a]), _estimate(second[b])
            if abs(ref_a - ref_b) <= math.hypot(ref_ha, ref_hb):
                out["unresolved"].append(f"{a} / {b}")
                continue
            out["resolved"] += 1
            (own_a, own_ha), (own_b, own_hb) = _estimate(first[a]), _estimate(first[b])
            if (own_a - own_b) * (ref_a - ref_b) > 0:
                continue
            out["discordant"].append(f"{a} / {b}")
            if abs(own_a - own_b) > math.hypot(own_ha, own_hb):
                out["confident_errors"].append(f"{a} / {b}")
    return out


def rank_resolution(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """:func:`resolved_pairs` for the comparisons of :func:`rank_agreement` (same keys)."""
    worlds = _deployable_by_world(records)
    return {
        key: resolved_pairs(worlds[first], worlds[second])
        for key, first, second in _compared_worlds(worlds)
    }


def reference_shares(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each policy's return as a share of each reference in the same world."""
    out = []
    for world, rows in by_world(records).items():
        refs = {r["policy"]: r for r in rows if r["policy"] in REFERENCES}
        for ref_name, ref in refs.items():
            for r in rows:
                if r["policy"] == ref_name:
                    continue
                out.append(
                    {
                        "world": world,
                        "policy": r["policy"],
                        "reference": ref_name,
                        "share": r["mean_return"] / ref["mean_return"]
                        if ref["mean_return"]
                        else math.nan,
                    }
                )
    return out


def truncated_policies(records: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Policies whose training a time limit cut short: per name, its truncated training runs
    (``seed``, ``steps`` reached, ``budget_steps``), from the records' ``training`` field."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("truncated") and r["policy"] not in out:
            out[r["policy"]] = [t for t in r.get("training") or [] if t.get("truncated")]
    return out


def _steps(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else "?"


def truncation_warning(records: Sequence[Mapping[str, Any]]) -> str | None:
    """One loud sentence naming every truncated policy and the steps it reached, or None."""
    cut = truncated_policies(records)
    if not cut:
        return None
    parts = []
    for name, runs in cut.items():
        seeds = ", ".join(
            f"seed {t.get('seed')}: {_steps(t.get('steps'))} of {_steps(t.get('budget_steps'))} "
            "steps"
            for t in runs
        )
        parts.append(f"{name} ({seeds})" if seeds else name)
    return (
        f"TRUNCATED: a wall-clock limit (max_minutes) stopped the training of {'; '.join(parts)} "
        "before its budget of steps. These results depend on how busy the machine was: rerun "
        "without the limit before trusting them."
    )


def units_note(
    records: Sequence[Mapping[str, Any]], context: Mapping[str, Any] | None = None
) -> list[str]:
    """What the tables' numbers are: the return's unit and how the ``sessions`` column is
    made of seeds (each seed plays the sessions asked, rounded up to a multiple of the
    visitors simulated together; the column pools them)."""
    reward = (context or {}).get("reward", "the reward")
    lines = [
        f"How to read the tables: one row per policy and world. *Mean return* is the reward "
        f"(`{reward}`) a visitor's whole session earns, averaged over sessions, ± its 95 % "
        "confidence half-width; *exact* is a table policy's value by exact policy evaluation "
        "(worlds with table dynamics); *uplift* compares the mean return with `organic` (nothing "
        "shown) in the same world. *Sessions* counts every simulated session behind a row, "
        "pooled over seeds (a policy trained on several seeds plays each trained instance on "
        "its own seed); each seed plays the sessions asked, rounded up to a whole number per "
        "visitor simulated together. The ± covers those sessions pooled (not the variation "
        "between training seeds); the uplift's takes the policy and organic as independent, "
        "which overstates it for policies that play organic's seeds (the heuristics); organic's "
        "own uplift is 0 ± 0. *Conversion* is reaching a page with revenue in the catalog and "
        "*time on site* sums the catalog's mean time on each page viewed, the last one "
        "included: the simulation's definitions, for comparing policies, not the data's "
        "(GA leaves the last page's time out):",
        "",
    ]
    for world, rows in by_world(records).items():
        shapes = sorted({(len(r.get("seeds") or []), int(r["n_sessions"])) for r in rows})
        parts = [
            f"{k} seed{'s' * (k != 1)} × {n // k:,} = {n:,}" if k else f"{n:,}" for k, n in shapes
        ]
        lines.append(f"- {world}: {' or '.join(parts)} sessions")
    lines.append("")
    return lines


def markdown(
    records: Sequence[Mapping[str, Any]],
    title: str = "Results",
    context: Mapping[str, Any] | None = None,
) -> str:
    """The report as Markdown."""
    lines = [f"# {title}", ""]
    warning = truncation_warning(records)
    if warning:
        lines += [f"> **{warning}**", ""]
    for key, value in (context or {}).items():
        lines.append(f"- {key}: {value}")
    if context:
        lines.append("")
    if records:
        lines += units_note(records, context)
    header = (
        "| policy | mean return ± 95% CI | exact | uplift vs organic % | revenue/session | "
        "conversion % | pages/session | bounce % | time on site s | sessions |"
    )
    rule = "|" + "---|" * (header.count("|") - 1)
    for world, rows in by_world(records).items():
        lines += [f"## World: {world}", "", header, rule]
        for r in sorted(rows, key=lambda r: -r["mean_return"]):
            uplift = (
                "–"
                if r.get("uplift_pct") is None
                else f"{r['uplift_pct']:+.1f} ± {r['uplift_ci95']:.1f}"
            )
            name = f"{r['policy']} **(truncated)**" if r.get("truncated") else r["policy"]
            lines.append(
                f"| {name} | {_fmt(r['mean_return'])} ± {_fmt(r['ci95'])} | "
                f"{_fmt(r.get('exact_return'))} | {uplift} | "
                f"{_fmt(r['revenue_per_session'], 2)} | {100 * r['conversion_rate']:.2f} | "
                f"{_fmt(r['pages_per_session'], 2)} | {100 * r['bounce_rate']:.1f} | "
                f"{_fmt(r['time_on_site_s'], 0)} | {r['n_sessions']:,} |"
            )
        lines.append("")
    shares = reference_shares(records)
    if shares:
        lines += [
            "## Share of the reference",
            "",
            "| world | policy | reference | share |",
            "|---|---|---|---|",
        ]
        for s in sorted(shares, key=lambda s: (s["world"], s["reference"], -s["share"])):
            lines.append(
                f"| {s['world']} | {s['policy']} | {s['reference']} | {_fmt(s['share'], 3)} |"
            )
        lines.append("")
    wins = beats_baselines(records)
    if wins:
        lost = [w for w in wins if not w["beats"]]
        lines += [
            "## Do the learning agents beat organic and random?",
            "",
            "| world | policy | baseline | difference ± 95% CI | beats |",
            "|---|---|---|---|---|",
        ]
        for w in wins:
            lines.append(
                f"| {w['world']} | {w['policy']} | {w['baseline']} | "
                f"{w['difference']:+,.3f} ± {w['ci95']:,.3f} | "
                f"{'yes' if w['beats'] else '**no**'} |"
            )
        lines += [
            "",
            "Every learning agent beats both in every world."
            if not lost
            else f"Not resolved as a win: {', '.join(sorted({w['policy'] + ' vs ' + w['baseline'] + ' (' + w['world'] + ')' for w in lost}))}.",
            "",
        ]
    taus = rank_agreement(records)
    if taus:
        lines += [
            "## Does the learned simulator rank policies right?",
            "",
            "Kendall's tau between the policies' mean returns in the learned simulator "
            "and in each other world, and in the held-out simulator and the ground truth "
            "(1: same order):",
            "",
        ]
        resolution = rank_resolution(records)
        exact_taus = rank_agreement(records, exact=True)
        for world, tau in taus.items():
            exact_tau = exact_taus.get(world, tau)
            on_exact = f", {_fmt(exact_tau)} on the exact values" if exact_tau != tau else ""
            lines.append(
                f"- {world}: tau = {_fmt(tau)}{on_exact}{_resolution_note(resolution[world])}"
            )
        lines += [
            "",
            "Tau is on the simulated means. Where exact policy evaluation gave a policy's "
            "value, the pairs' resolution (and a second tau, where it differs) uses that "
            "instead. A pair is *resolved* when its difference in the second world exceeds the "
            "95 % half-width of a difference of two independent means (exact values have "
            "none); tau also counts the pairs that are not, whose order is a coin flip.",
            "",
        ]
    return "\n".join(lines)


def _resolution_note(r: Mapping[str, Any]) -> str:
    """One clause: how many pairs the second world resolves, which of them the first swaps."""
    note = f"; {r['resolved']} of {r['pairs']} pairs resolved there"
    if r["discordant"]:
        note += f", {len(r['discordant'])} of them in the other order ({', '.join(r['discordant'])}"
        if r["confident_errors"]:
            note += f"; significantly so here: {', '.join(r['confident_errors'])}"
        note += ")"
    else:
        note += ", all in the same order"
    if r["unresolved"]:
        note += f"; unresolved: {', '.join(r['unresolved'])}"
    return note


def bar_charts(records: Sequence[Mapping[str, Any]], out_dir: Path) -> list[Path]:
    """One PNG per metric (return, revenue, conversion, bounce): bars per policy and world,
    95 % error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [
        ("mean_return", "ci95", "mean return per session"),
        ("revenue_per_session", "revenue_ci95", "revenue per session"),
        ("conversion_rate", "conversion_ci95", "conversion rate"),
        ("bounce_rate", "bounce_ci95", "bounce rate"),
    ]
    worlds = by_world(records)
    policies = sorted(
        {r["policy"] for r in records},
        key=lambda p: -max(r["mean_return"] for r in records if r["policy"] == p),
    )
    paths = []
    for key, err, label in metrics:
        fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(policies) * len(worlds)), 4.0))
        width = 0.8 / max(1, len(worlds))
        for w, (world, rows) in enumerate(worlds.items()):
            val = {r["policy"]: r for r in rows}
            xs = [i + w * width for i, p in enumerate(policies) if p in val]
            ys = [val[p][key] for p in policies if p in val]
            es = [val[p][err] for p in policies if p in val]
            ax.bar(xs, ys, width, yerr=es, capsize=2, label=world)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(policies))])
        cut = truncated_policies(records)
        ax.set_xticklabels(
            [f"{p} (truncated)" if p in cut else p for p in policies], rotation=30, ha="right"
        )
        ax.set_ylabel(label)
        ax.set_title(f"{label} (95% CI)")
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"{key}.png"
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(
    records: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    *,
    title: str = "Results",
    context: Mapping[str, Any] | None = None,
    charts: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``results.json`` (``extra`` added to it), ``results.md`` and the charts into
    ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "context": dict(context or {}),
        "records": list(records),
        "rank_agreement": rank_agreement(records),
        "rank_agreement_exact": rank_agreement(records, exact=True),
        "rank_resolution": rank_resolution(records),
        **dict(extra or {}),
    }
    with atomic_file(out / "results.json") as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=2, default=float), encoding="utf-8")
    with atomic_file(out / "results.md") as tmp:
        Path(tmp).write_text(markdown(records, title, context), encoding="utf-8")
    paths = {"results.json": out / "results.json", "results.md": out / "results.md"}
    if charts:
        for p in bar_charts(records, out):
            paths[p.name] = p
    return paths
