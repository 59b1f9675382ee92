"""The impact page's numbers: each policy against ``organic`` (no recommendation), from the run's
``eval/results.json`` (``agents/evaluate.py``), as table rows and bar-chart geometry.

Every figure comes from the evaluation as recorded; the only ones computed here are differences
with organic in the same world: for the return (the run's reward per session, labelled by that
reward: :func:`metrics_for`) the evaluation's own ``uplift_pct ± uplift_ci95``; for revenue per
session the relative uplift by the same delta method (:func:`agents.evaluate.ratio_ci`); for
bounce and conversion rates the difference in percentage points with the half-width
``√(ci_a² + ci_b²)``. Both take the two estimates as independent, which overstates the width when
the evaluation shares seeds between policies (the heuristics play organic's seeds); every
interval covers the sessions simulated with the instances evaluated, pooled (a trained policy's
instances, one per training seed: the variation between training runs is not in it). Time on
page has no confidence interval in the results, so its difference has none either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from agents.evaluate import ratio_ci

WORLD_NOTES = {
    "ground_truth": "the synthetic store's true visitor model (the real answer)",
    "held_out": "a visitor model the policies never trained against (another seed)",
    "learned": "the visitor model the policies trained in (optimistic: they may exploit it)",
}


@dataclass(frozen=True)
class Metric:
    """One metric of a record: its field, its CI field (or ``None``), label and display."""

    key: str
    ci_key: str | None
    label: str
    unit: str  # "" (a number), "%" (a rate shown in percent) or "s"
    relative: bool = False  # its difference with organic is a relative uplift in percent

    def show(self, value: float | None, ci: float | None = None, signed: bool = False) -> str:
        """Text of a value (and ± CI) in this metric's display unit."""
        if value is None or not math.isfinite(value):
            return "–"
        scale = 100.0 if self.unit == "%" else 1.0
        digits = 1 if self.unit in ("%", "s") else 2
        sign = "+" if signed else ""
        shown = round(value * scale, digits) + 0.0  # + 0.0: no "-0.0"
        text = f"{shown:{sign}.{digits}f}"
        if ci is not None and math.isfinite(ci):
            text += f" ± {ci * scale:.{digits}f}"
        return text + {"%": " %", "s": " s", "": ""}[self.unit]


RETURN_LABELS = {
    "page_value": ("Return: page value per session", ""),
    "revenue": ("Return: transaction revenue per session", ""),
    "engagement": ("Return: expected seconds per session", "s"),
    "pageviews": ("Return: page views per session (after the first)", ""),
}
"""The mean return's label and unit by the run's reward (``envs/rewards.py``)."""

REWARD_NOTES = {
    "page_value": "the sum of the GA page values of the pages viewed: it credits a sale to "
    "every page before it, so it is a shaping signal, not money earned",
    "revenue": "the transaction revenue of the pages viewed after the entry page",
    "engagement": "the expected seconds on the pages viewed after the entry page",
    "pageviews": "1 for every page viewed after the entry page",
}
"""What the return sums, in words, by reward."""


def metrics_for(reward: str | None) -> tuple[Metric, ...]:
    """The impact page's metrics for a run whose reward is ``reward``: the return labelled by
    it, the money (revenue per session) next to conversion, then bounce and time on page."""
    label, unit = RETURN_LABELS.get(
        str(reward), (f"Return ({reward}) per session" if reward else "Return per session", "")
    )
    return (
        Metric("mean_return", "ci95", label, unit, relative=True),
        Metric("revenue_per_session", "revenue_ci95", "Revenue per session", "", relative=True),
        Metric("conversion_rate", "conversion_ci95", "Conversion rate", "%"),
        Metric("bounce_rate", "bounce_ci95", "Bounce rate", "%"),
        Metric("time_on_page_s", None, "Time on page", "s"),
    )


METRICS = metrics_for("page_value")
"""The metrics of a run with the default reward (``page_value``)."""


def sessions_per_seed(records: list[dict[str, Any]]) -> list[int]:
    """The sessions each seed played (``n_sessions`` over the seeds pooled), the distinct
    values among ``records`` in increasing order: what the evaluation played, which is the
    configured count rounded up per simulated visitor, or a world's own count."""
    out = set()
    for r in records:
        n, seeds = r.get("n_sessions"), r.get("seeds") or []
        if isinstance(n, int) and seeds:
            out.add(n // len(seeds))
    return sorted(out)


def records_for(results: dict[str, Any] | None, world: str) -> list[dict[str, Any]]:
    """The records of one world, organic first, then by page value per session (best first)."""
    if not results:
        return []
    rows = [r for r in results.get("records", []) if r.get("world") == world]
    return sorted(
        rows,
        key=lambda r: (r.get("policy") != "organic", -_finite(r.get("mean_return"), -math.inf)),
    )


def impact_rows(
    records: list[dict[str, Any]], metrics: tuple[Metric, ...] = METRICS
) -> list[dict[str, Any]]:
    """Table rows: each metric's value (± CI) and its difference with organic (± CI)."""
    organic = next((r for r in records if r.get("policy") == "organic"), None)
    rows = []
    for r in records:
        cells = []
        for m in metrics:
            value, ci = r.get(m.key), r.get(m.ci_key) if m.ci_key else None
            delta, delta_ci = _versus(m, r, organic)
            cells.append(
                {
                    "metric": m.key,
                    "value": value,
                    "ci": ci,
                    "text": m.show(value, ci),
                    "delta": delta,
                    "delta_ci": delta_ci,
                    "delta_text": _delta_text(m, delta, delta_ci),
                }
            )
        rows.append(
            {
                "policy": r.get("policy"),
                "organic": r.get("policy") == "organic",
                "n_sessions": r.get("n_sessions"),
                "cells": cells,
            }
        )
    return rows


def _versus(
    m: Metric, r: dict[str, Any], organic: dict[str, Any] | None
) -> tuple[float | None, float | None]:
    if organic is None or r is organic:
        return None, None
    if m.key == "mean_return":  # the evaluation's own relative uplift and its CI
        return r.get("uplift_pct"), r.get("uplift_ci95")
    a, b = r.get(m.key), organic.get(m.key)
    if a is None or b is None:
        return None, None
    if m.relative:  # in percent of organic, by the evaluation's own delta method
        ci_a, ci_b = (r.get(m.ci_key), organic.get(m.ci_key)) if m.ci_key else (None, None)
        if ci_a is None or ci_b is None or not b:
            return None, None
        return ratio_ci(a, ci_a, b, ci_b)
    if m.ci_key is None:
        return a - b, None
    ci_a, ci_b = r.get(m.ci_key), organic.get(m.ci_key)
    ci = math.hypot(ci_a, ci_b) if ci_a is not None and ci_b is not None else None
    return a - b, ci


def _delta_text(m: Metric, delta: float | None, ci: float | None) -> str:
    if delta is None or not math.isfinite(delta):
        return ""
    if m.relative:  # uplift in percent of organic
        text = f"{delta:+.1f} %"
        return text + (f" ± {ci:.1f}" if ci is not None and math.isfinite(ci) else "")
    if m.unit == "%":  # percentage points
        text = f"{100 * delta:+.1f} pp"
        return text + (f" ± {100 * ci:.1f}" if ci is not None and math.isfinite(ci) else "")
    return m.show(delta, ci, signed=True)


# ---- charts ------------------------------------------------------------------------------------

CHART_WIDTH = 560
LABEL_WIDTH = 130
VALUE_WIDTH = 120
BAR_HEIGHT = 18
BAR_GAP = 6
TOP = 8
AXIS_HEIGHT = 22


def bar_chart(records: list[dict[str, Any]], m: Metric) -> dict[str, Any]:
    """Geometry of a horizontal bar chart of one metric with 95 % CI whiskers (SVG units).

    Bars start at 0; the axis spans 0 and every whisker. A dashed line marks organic.
    """
    values = [
        (
            r.get("policy"),
            _finite(r.get(m.key), None),
            _finite(r.get(m.ci_key), 0.0) if m.ci_key else 0.0,
        )
        for r in records
    ]
    values = [(p, v, c) for p, v, c in values if v is not None]
    plot = CHART_WIDTH - LABEL_WIDTH - VALUE_WIDTH
    lo = min([0.0] + [v - c for _, v, c in values])
    hi = max([0.0] + [v + c for _, v, c in values])
    if hi == lo:
        hi = lo + 1.0

    def x(value: float) -> float:
        return LABEL_WIDTH + plot * (value - lo) / (hi - lo)

    bars = []
    organic_x = None
    for i, (policy, v, c) in enumerate(values):
        y = TOP + i * (BAR_HEIGHT + BAR_GAP)
        x0, x1 = sorted((x(0.0), x(v)))
        bars.append(
            {
                "label": policy,
                "y": y,
                "x": x0,
                "w": max(x1 - x0, 0.5),
                "lo_x": x(v - c),
                "hi_x": x(v + c),
                "mid_y": y + BAR_HEIGHT / 2,
                "text_x": CHART_WIDTH - VALUE_WIDTH + 6,
                "text": m.show(v, c if m.ci_key else None),
                "organic": policy == "organic",
            }
        )
        if policy == "organic":
            organic_x = x(v)
    height = TOP + len(values) * (BAR_HEIGHT + BAR_GAP) + AXIS_HEIGHT
    scale = 100.0 if m.unit == "%" else 1.0
    ticks = [{"x": x(t), "label": f"{t * scale:g}"} for t in _ticks(lo, hi)]
    return {
        "title": m.label,
        "key": m.key,
        "width": CHART_WIDTH,
        "height": height,
        "bars": bars,
        "ticks": ticks,
        "axis_y": height - AXIS_HEIGHT + 2,
        "plot_left": LABEL_WIDTH,
        "plot_right": LABEL_WIDTH + plot,
        "organic_x": organic_x,
        "has_ci": m.ci_key is not None,
    }


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About ``n`` round tick values within ``[lo, hi]``."""
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _finite(value: Any, default: float | None) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) else default
