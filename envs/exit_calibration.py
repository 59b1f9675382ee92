"""Calibrating when simulated visitors leave: the exit hazard by position in the visit.

A next-page model is fitted one step at a time on real histories; rolled out on its own, small
biases compound. On the GA sample day the GRU leaves the entry page with probability 0.42
where its own training sessions left with 0.48, and once a simulated visitor is in a chain
of quick views (three training sessions hold 100 or more) she rarely leaves: simulated
sessions ran 8.3 pages against 4.2 in the training split (docs/results.md). A user simulator
needs a leave model that reproduces how long real visits are (RecSim's users have a time
budget; KuaiSim has a leave module); here it is a small correction on top of the learned
model, fitted to the data:

    logit P'(EXIT | history) = logit P(EXIT | history) + o[bucket(position)]

with ``position`` the page views so far (1 on the entry page) and one offset ``o_b`` per
bucket of positions (``edges``). The offsets are fitted by simulation: roll out organic
sessions, compare the exit hazard of each bucket (exits / page views at those positions) with
the training split's, move each offset by the difference of their logits, repeat
(:func:`fit_exit_calibration`). Only ``EXIT``'s odds change; the pages keep their ratios, so
where visitors go is the model's, how long they stay is the data's. A recommendation acts
on the calibrated organic distribution (the click model comes after).

Conversion is the other aggregate a page-value reward lives on, and rolled out alone a model
gets it wrong in the same way: on the GA sample day the GRU's simulated visitors reach the
checkout as often as real ones (5.1 % of sessions against 4.9 %) but complete the order 55 % of
the time against 42 % (``scripts/study_conversions.py``), so sessions convert at 0.027 against
0.021. With ``conversion`` on (the default) the fit also moves one offset ``c`` on the odds of
the *converting pages* (catalog ``revenue > 0``):

    logit P'(page | history) = logit P(page | history) + c      for each converting page

so that simulated sessions reach a converting page as often as the training split's did. One
number for the whole site: where visitors go otherwise, and which converting page they reach,
stay the model's. A site without converting pages (MSNBC) fits the exits alone.

The calibration matches the training split's lengths (and conversion) by construction; the
test split checks that this holds out of sample (``scripts/check_simulator.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from clickstream import checks
from clickstream.errors import ConfigError, ModelError, from_options
from envs.dynamics import Chains, Dynamics
from envs.fidelity import SimulatedSessions, sessions_viewing, simulate_organic
from envs.sequences import SessionSequences

KEY = "simulator.exit_calibration"
"""Where :class:`ExitCalibrationConfig` is set: error messages name the key there."""


@dataclass
class ExitCalibrationConfig:
    """How the exit calibration is fitted (``simulator.exit_calibration``).

    Attributes:
        edges: First position of each bucket, increasing from 1; the last bucket is open.
        iterations: Simulate-and-correct rounds.
        sessions: Organic sessions simulated per round.
        visitors: Visitors simulated together.
        max_steps: Simulated sessions are cut here (as in ``check_simulator``).
        seed: Seed of every round's simulation (the same visitors each round).
        conversion: Also fit the offset on the converting pages' odds (module docstring),
            when the site has converting pages.
    """

    edges: tuple[int, ...] = (1, 2, 3, 4, 5, 7, 10, 17, 33)
    iterations: int = 6
    sessions: int = 20_000
    visitors: int = 4096
    max_steps: int = 200
    seed: int = 0
    conversion: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.conversion, bool):
            raise ConfigError(f"{KEY}.conversion must be true or false, got {self.conversion!r}")
        # checked with the other settings before anything trains (scripts/train_simulator.py)
        if isinstance(self.edges, str | bytes) or not isinstance(self.edges, Sequence):
            raise ConfigError(f"{KEY}.edges must be a list of positions, got {self.edges!r}")
        self.edges = tuple(
            checks.whole(f"{KEY}.edges[{i}]", e, floats=False) for i, e in enumerate(self.edges)
        )
        if not self.edges or self.edges[0] != 1 or bool(np.any(np.diff(self.edges) <= 0)):
            raise ConfigError(f"{KEY}.edges must increase from 1, got {list(self.edges)}")
        for key in ("iterations", "sessions", "visitors", "max_steps"):
            setattr(self, key, checks.whole(f"{KEY}.{key}", getattr(self, key), floats=False))
        self.seed = checks.seed(f"{KEY}.seed", self.seed)
        if self.edges[-1] > self.max_steps:
            raise ConfigError(
                f"{KEY}.edges reach {self.edges[-1]}, beyond max_steps "
                f"{self.max_steps}: that bucket is never simulated"
            )

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> ExitCalibrationConfig:
        """Build from a plain mapping (a resolved Hydra node); unknown keys raise."""
        return from_options(cls, cfg, KEY)


def position_hazard(
    lengths: np.ndarray, edges: Sequence[int], truncated: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exits and page views in each bucket of positions.

    Args:
        lengths: Page views per session, ``(S,)``.
        edges: First position of each bucket (from 1); the last bucket is open.
        truncated: Sessions cut short (their last view is not an exit), ``(S,)``.

    Returns:
        ``(exits, views)``, each ``(len(edges),)``.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    top = int(lengths.max()) if len(lengths) else 0
    # views at position t: sessions of length >= t
    at_least = np.bincount(lengths, minlength=top + 2)[::-1].cumsum()[::-1]  # [t]: length >= t
    ended = lengths if truncated is None else lengths[~np.asarray(truncated, dtype=bool)]
    exits_at = np.bincount(ended, minlength=top + 2)
    bucket = np.searchsorted(np.asarray(edges), np.arange(top + 2), side="right") - 1
    pos = np.arange(1, top + 2)
    views = np.bincount(bucket[pos], weights=at_least[pos], minlength=len(edges))
    exits = np.bincount(bucket[pos], weights=exits_at[pos], minlength=len(edges))
    return exits, views


def _logit(exits: np.ndarray, views: np.ndarray) -> np.ndarray:
    h = (exits + 0.5) / (views + 1.0)  # a half count each way: empty buckets stay finite
    return np.log(h) - np.log1p(-h)


class ExitCalibratedDynamics(Dynamics):
    """``inner`` with ``EXIT``'s odds times ``exp(offsets[bucket(position)])`` and, when
    ``converting`` pages are given, their odds times ``exp(conversion_offset)``.

    State: ``inner``'s | the position in the visit (page views so far).
    """

    def __init__(
        self,
        inner: Dynamics,
        edges: Sequence[int],
        offsets: Sequence[float],
        converting: Sequence[int] = (),
        conversion_offset: float = 0.0,
    ) -> None:
        if len(edges) != len(offsets):
            raise ModelError(
                f"exit calibration has {len(edges)} buckets but {len(offsets)} offsets"
            )
        converting = [int(p) for p in converting]
        if any(not 0 <= p < inner.n_pages for p in converting):
            raise ModelError(
                f"exit calibration names converting page ids outside 0..{inner.n_pages - 1}"
            )
        self.inner = inner
        self.n_pages, self.pages = inner.n_pages, inner.pages
        self.state_dim = inner.state_dim + 1
        self.latent_state = inner.latent_state
        # on the CPU until the simulator core moves the dynamics to its device (to()); a
        # position's bucket is the number of bucket starts after the first at or below it
        self._upper = torch.as_tensor([int(e) for e in edges[1:]], dtype=torch.float32)
        self._offsets = torch.as_tensor(np.asarray(offsets, dtype=np.float32))
        self._converting = torch.zeros(inner.n_pages + 1, dtype=torch.bool)
        self._converting[converting] = True
        self._conversion_offset = float(conversion_offset) if converting else 0.0

    def _offset(self, state: torch.Tensor) -> torch.Tensor:
        bucket = torch.bucketize(state[:, -1].contiguous(), self._upper, right=True)
        return self._offsets[bucket]

    def to(self, device: torch.device | str) -> ExitCalibratedDynamics:
        self.inner = self.inner.to(device)
        self._upper, self._offsets = self._upper.to(device), self._offsets.to(device)
        self._converting = self._converting.to(device)
        return self

    def chains(self) -> Chains | None:
        return None  # the exit depends on the position: not a first-order chain

    def intent(self, state: torch.Tensor) -> torch.Tensor:
        return self.inner.intent(state[:, :-1])

    def start(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pages, state = self.inner.start(n, generator)
        return pages, torch.cat([state, state.new_ones(n, 1)], dim=1)

    def advance(self, pages: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        inner = self.inner.advance(pages, state[:, :-1])
        return torch.cat([inner, state[:, -1:] + 1], dim=1)

    def next_probs(self, pages: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        probs = self.inner.next_probs(pages, state[:, :-1])
        odds = self._offset(state).exp().to(probs.dtype)
        p_exit = probs[:, -1]
        total = 1.0 + p_exit * (odds - 1.0)
        conversion_odds = math.exp(self._conversion_offset)
        if self._conversion_offset:
            p_convert = probs[:, self._converting].sum(dim=1)
            total = total + p_convert * (conversion_odds - 1.0)
        scale = 1.0 / total
        out = probs * scale[:, None]
        if self._conversion_offset:
            out[:, self._converting] *= conversion_odds
        out[:, -1] = p_exit * odds * scale
        return out

    def log_scores(
        self, pages: torch.Tensor, state: torch.Tensor, outcomes: torch.Tensor
    ) -> torch.Tensor:
        scores = self.inner.log_scores(pages, state[:, :-1], outcomes)
        is_exit = (outcomes == self.n_pages).to(scores.dtype)
        scores = scores + is_exit * self._offset(state).to(scores.dtype)[:, None]
        if self._conversion_offset:
            scores = scores + self._converting[outcomes].to(scores.dtype) * self._conversion_offset
        return scores


def calibrated(dynamics: Dynamics, calibration: Mapping[str, Any] | None) -> Dynamics:
    """``dynamics`` with a fitted calibration (:func:`fit_exit_calibration`'s ``edges``,
    ``offsets`` and, when fitted, ``converting`` and ``conversion_offset``) applied; unchanged
    when ``calibration`` is ``None``."""
    if not calibration:
        return dynamics
    return ExitCalibratedDynamics(
        dynamics,
        calibration["edges"],
        calibration["offsets"],
        calibration.get("converting", ()),
        calibration.get("conversion_offset", 0.0),
    )


def fit_exit_calibration(
    dynamics: Callable[[], Dynamics],
    target: SessionSequences,
    cfg: ExitCalibrationConfig,
    device: str | torch.device = "cpu",
    converting: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fit the offsets so that simulated organic sessions leave, bucket by bucket, at the
    rate the ``target`` sessions (the training split) left, and (``cfg.conversion``, some
    ``converting`` page, and a target where some but not all sessions convert) reach a
    converting page as often.

    Each round simulates with the current offsets and moves each bucket's offset by the logit
    difference of the target's and the simulation's exit hazard there (a bucket the
    simulation never reached keeps its offset); then, when the conversion is fitted, simulates
    again and moves the conversion offset by the logit difference of the two conversion rates
    (two simulations a round).

    Args:
        dynamics: Makes the model's uncalibrated dynamics (called once).
        target: The sessions whose exit hazards (and conversion) to reproduce.
        cfg: Buckets, rounds and simulation sizes.
        device: Where to simulate (the model's device).
        converting: Which pages convert, boolean ``(P,)`` (:func:`envs.fidelity.converting_pages`);
            ``None`` or none true: the exits alone are fitted.

    Returns:
        Plain data: ``edges`` and ``offsets`` (what :func:`calibrated` needs; with the
        conversion fitted also ``converting``, the page ids, and ``conversion_offset``), the
        target's and the simulation's hazards, pages per session, bounce rate and conversion
        rate before and after, and pages per session (and conversion) after each round.
    """
    inner = dynamics()
    edges = cfg.edges
    t_exits, t_views = position_hazard(target.lengths, edges)
    goal = _logit(t_exits, t_views)
    mask = np.zeros(inner.n_pages, dtype=bool) if converting is None else np.asarray(converting)
    if mask.shape != (inner.n_pages,):
        raise ModelError(
            f"exit calibration: converting pages given for {mask.shape[0]} pages, the model "
            f"has {inner.n_pages}"
        )

    def conversions(seqs: SessionSequences) -> tuple[int, int]:
        return int(sessions_viewing(seqs, mask).sum()), len(seqs)

    t_converted, t_sessions = conversions(target)
    # a target that never (or always) converts gives no rate to match: its smoothed logit
    # (a half count) depends on the number of sessions and drives the offset away from the
    # data round after round (a page with revenue outside the training split); left unfitted
    fit_conversion = bool(cfg.conversion and mask.any() and 0 < t_converted < t_sessions)
    conversion_ids = np.flatnonzero(mask).tolist() if fit_conversion else []
    conversion_goal = _logit(t_converted, t_sessions)

    def simulate(offsets: np.ndarray, conversion_offset: float) -> SimulatedSessions:
        return simulate_organic(
            ExitCalibratedDynamics(inner, edges, offsets, conversion_ids, conversion_offset),
            cfg.sessions,
            max_steps=cfg.max_steps,
            visitors=cfg.visitors,
            seed=cfg.seed,
            device=device,
        )

    offsets, conversion_offset = np.zeros(len(edges)), 0.0
    before = now = simulate(offsets, conversion_offset)
    rounds, conversion_rounds = [], []
    for _ in range(int(cfg.iterations)):
        exits, views = position_hazard(now.lengths, edges, now.truncated)
        offsets = offsets + np.where(views > 0, goal - _logit(exits, views), 0.0)
        now = simulate(offsets, conversion_offset)
        if fit_conversion:
            # in turns: leaving earlier also converts less, so the conversion offset moves
            # after the exits have (moving both at once can overshoot together)
            converted, sessions = conversions(now)
            conversion_offset += float(conversion_goal - _logit(converted, sessions))
            now = simulate(offsets, conversion_offset)
        rounds.append(round(float(now.lengths.mean()), 4))
        conversion_rounds.append(round(conversions(now)[0] / len(now), 5))

    def summary(seqs: SessionSequences, truncated: np.ndarray | None = None) -> dict[str, Any]:
        exits, views = position_hazard(seqs.lengths, edges, truncated)
        converted, sessions = conversions(seqs)
        return {
            "pages_per_session": float(seqs.lengths.mean()),
            "bounce_rate": float(np.mean(seqs.lengths == 1)),
            "conversion_rate": converted / sessions if mask.any() else None,
            "hazard": [float(e / v) if v > 0 else None for e, v in zip(exits, views, strict=True)],
        }

    out: dict[str, Any] = {
        "edges": list(edges),
        "offsets": [round(float(o), 6) for o in offsets],
    }
    if fit_conversion:
        out["converting"] = conversion_ids
        out["conversion_offset"] = round(conversion_offset, 6)
    return out | {
        "target": summary(target),
        "before": summary(before, before.truncated),
        "after": summary(now, now.truncated),
        "pages_per_session_by_round": rounds,
        "conversion_rate_by_round": conversion_rounds if mask.any() else None,
        "config": {
            "iterations": int(cfg.iterations),
            "sessions": int(cfg.sessions),
            "max_steps": int(cfg.max_steps),
            "seed": int(cfg.seed),
            "conversion": fit_conversion,
        },
    }


def calibrated_log_loss(
    model: Any, seqs: SessionSequences, calibration: Mapping[str, Any] | None
) -> float:
    """Mean next-page log-loss (with ``EXIT``) of ``model`` on ``seqs`` with the calibration's
    offsets added to ``EXIT``'s logit (and the converting pages') at each step (``None``: the
    model as trained): what the calibration costs or gains as a predictor of real next steps.

    The offsets act where the simulator applies them (``model.iter_calibrated_log_probs``):
    on the one row of a model without visitor types, and on each type's row of a model with
    types (the latent-type GRU), whose posterior then follows the calibrated rows: the
    log-loss of the world simulated, not of the offsets added to the mixed row.
    """
    targets = seqs.targets()
    offset = np.zeros(len(seqs.pages))
    converting = np.zeros(seqs.exit_id + 1, dtype=bool)
    c = 0.0
    if calibration:
        position = np.arange(len(seqs.pages)) - np.repeat(seqs.offsets[:-1], seqs.lengths) + 1
        edges = np.asarray(calibration["edges"])
        by_position = np.asarray(calibration["offsets"], dtype=np.float64)
        offset = by_position[np.searchsorted(edges, position, side="right") - 1]
        converting[list(calibration.get("converting", ()))] = True
        c = float(calibration.get("conversion_offset", 0.0))
    scored = (
        model.iter_calibrated_log_probs(seqs, offset, converting, c)
        if calibration
        else model.iter_log_probs(seqs)
    )
    total = 0.0
    for idx, logp in scored:
        total += float(np.sum(logp[np.arange(len(idx)), targets[idx]].astype(np.float64)))
    return -total / max(len(seqs.pages), 1)


def calibrate_trained(
    model: Any,
    dynamics: Callable[[], Dynamics],
    splits: Mapping[str, SessionSequences],
    options: Mapping[str, Any] | None,
    converting: np.ndarray | None = None,
) -> dict[str, Any] | None:
    """Fit ``model.exit_calibration`` on the training split when ``options``
    (``simulator.exit_calibration``) is set; ``None`` (and the model unchanged) when not.

    Args:
        model: A trained visitor model (``exit_calibration`` and ``iter_log_probs``).
        dynamics: Makes its uncalibrated simulator dynamics.
        splits: ``train`` (the target), ``valid`` and ``test`` (the log-loss reported).
        options: The settings (:class:`ExitCalibrationConfig`), ``{}`` for the defaults.
        converting: Which pages convert, boolean ``(P,)``; ``None``: none.

    Returns:
        :func:`fit_exit_calibration`'s record, plus the next-page log-loss on the validation
        and test splits without and with the offsets.
    """
    if options is None:
        return None
    cfg = ExitCalibrationConfig.from_dict(options)
    result = fit_exit_calibration(
        dynamics, splits["train"], cfg, device=model.device, converting=converting
    )
    result["log_loss"] = {
        name: {
            "model": calibrated_log_loss(model, splits[name], None),
            "calibrated": calibrated_log_loss(model, splits[name], result),
        }
        for name in ("valid", "test")
        if name in splits and len(splits[name])
    }
    keys = ("edges", "offsets", "converting", "conversion_offset")
    model.exit_calibration = {k: result[k] for k in keys if k in result}
    return result


def describe(result: Mapping[str, Any]) -> str:
    """One line: the pages per session, bounce rate (and conversion rate, when fitted) before
    and after, against the target."""
    b, a, t = result["before"], result["after"], result["target"]
    text = (
        f"exit calibration: pages per session {b['pages_per_session']:.2f} -> "
        f"{a['pages_per_session']:.2f} (training split {t['pages_per_session']:.2f}), bounce "
        f"{b['bounce_rate']:.3f} -> {a['bounce_rate']:.3f} ({t['bounce_rate']:.3f})"
    )
    if "conversion_offset" in result:
        text += (
            f", conversion {b['conversion_rate']:.4f} -> {a['conversion_rate']:.4f} "
            f"({t['conversion_rate']:.4f})"
        )
    valid = result.get("log_loss", {}).get("valid")
    if valid:
        text += f", validation log-loss {valid['model']:.4f} -> {valid['calibrated']:.4f}"
    return text


__all__ = [
    "ExitCalibratedDynamics",
    "ExitCalibrationConfig",
    "calibrate_trained",
    "calibrated",
    "calibrated_log_loss",
    "describe",
    "fit_exit_calibration",
    "position_hazard",
]
