"""Off-policy evaluation: a policy's value from the logs of another, with bootstrap intervals.

Implemented here (the Open Bandit Pipeline, the usual library, does not install with this
project's pins: pip resolves only its 2021 release 0.4.1, the 0.5 releases' metadata is
inconsistent; ``docs/ope.md``). Every estimator is vectorised numpy over the logged rows and
returns its *terms*, per-unit quantities whose means it combines, so one bootstrap routine
(:func:`bootstrap`) serves all of them.

Notation: a logged decision has page ``s``, action ``a`` (a slate of ``k`` actions), logging
propensity ``μ(a | s)``, reward ``r``; the target policy is a table ``π`` over current pages
(``(P, A)`` action probabilities, or ``(P, k)`` slates); ``w = π(a | s) / μ(a | s)``.

**One step** (each logged decision is a context, e.g. the first decision of a session):

* ``ips``: ``mean(w r)``; ``snips``: ``Σ w r / Σ w``;
* ``dm``: ``mean(Σ_a π(a|s) q̂(s, a))`` with ``q̂`` the mean logged reward of each (page, action)
  (falling back to the page's mean, then the overall mean, where a cell has no data);
* ``dr``: ``mean(Σ_a π(a|s) q̂(s, a) + w (r - q̂(s, a)))``, cross-fitted: ``q̂`` of the rows
  of even sessions corrects the odd ones and the other way round (with a cell-mean ``q̂``
  fitted on the same rows the correction would vanish exactly and DR would be DM).

**Sessions** (``ρ_t = Π_{u ≤ t} w_u``, horizon ``H``; every estimator uses the decisions
``t < H`` only, so all four estimate the same ``H``-step value. Past the end of the logged
sessions only FQE can extrapolate: :func:`session` warns when sessions stop short of ``H``
without ``EXIT``):

* ``pdis``: per-decision IPS ``mean(Σ_t ρ_t r_t)``; ``pdwis``: per-decision weighted IS
  ``Σ_t Σ_i ρ_it r_it / Σ_i ρ_it`` (a finished session keeps its last ``ρ`` with reward 0);
* ``fqe``: fitted-Q evaluation on the logged transitions; with pages as states this is exact
  dynamic programming on the empirical MDP (counted transitions and mean rewards per
  (page, action)), over the horizon ``H``; the estimate is ``mean(V̂_H(s_0))``;
* ``dr``: sequential doubly robust (Jiang and Li, 2016) with FQE's ``Q̂``:
  ``mean(Σ_t ρ_t (r_t - Q̂_{H-t}(s_t, a_t)) + ρ_{t-1} V̂_{H-t}(s_t))``, cross-fitted like the
  one-step DR (FQE of the even sessions for the odd ones and the other way round).

**Slates** (one step; factored logging policy, a deterministic target slate table):

* ``slate_ips``: whole-slate IPS (``w`` = 1[logged slate = target slate] / propensity);
* ``pseudo_inverse``: Swaminathan et al. (2017) for a factored logging policy,
  ``w = Σ_j π(a_j at j | s) / μ(a_j at j | s) - k + 1``; unbiased when the slate's expected
  reward is a sum of per-position terms of the logged **draws** ``a_j`` and no logged slate
  repeats a page: a repeat shows nothing at its lower position (``envs.slate.dedupe``), so
  what a position shows depends on the positions above it and a reward additive in the shown
  slate is not additive in the draws;
* ``position_ips``: position-based (independent) IPS, ``Σ_j w_j r_j + r_0``: ``r_j`` the
  reward of a step whose visitor went to the page shown at position ``j``
  (``Logs.landed_position``: whether or not the slate caused the move), weighted by that
  position's ratio, ``r_0`` that of a step whose visitor went to a page not shown,
  unweighted; unbiased when the expected reward of going to position ``j``'s page depends only
  on that page and ``j``, that of going elsewhere on nothing in the slate, and no logged slate
  repeats a page. Both slate estimators warn (:class:`OPEWarning`) on logs with repeats.

The MNL and cascade choice models are not additive (a page's click share depends on the rest
of the slate), so the validation (``docs/results.md``) measures these assumptions' bias.

**Diagnostics** (:func:`weight_diagnostics`): the importance weights of an IS-based
estimator (``Terms.weights``: ``w`` per decision, a session's final ``ρ``, a slate's weight)
give Kish's effective sample size ``(Σ w)² / Σ w²`` and the largest weight's share
``max |w| / Σ |w|``. Below :data:`ESS_MIN` effective units the estimate rests on a handful of
units and its bootstrap interval is not to be trusted; a high ESS does not prove the
opposite: weights the logs never drew (a target's rare valuable paths) are not in it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agents.logs import Logs
from clickstream.checks import whole
from clickstream.errors import ConfigError, DataError

ONE_STEP = ("ips", "snips", "dm", "dr")
SESSION = ("pdis", "pdwis", "fqe", "dr")
SLATE = ("slate_ips", "pseudo_inverse", "position_ips")
# effective sample size below which an importance-sampling estimate is flagged
ESS_MIN = 100.0


class OPEWarning(UserWarning):
    """An estimate that may not mean what its label says (logs outside an estimator's
    assumptions)."""


@dataclass
class Terms:
    """An estimator's per-unit terms ``(n, m)`` and how their column means make the estimate."""

    terms: np.ndarray
    combine: Callable[[np.ndarray], np.ndarray]  # (..., m) means -> (...) estimates
    # a model-based estimator: its estimate with the model refitted under unit weights (n,),
    # which the bootstrap calls per replicate instead of reweighting the fixed terms
    refit: Callable[[np.ndarray], float] | None = None
    # an importance-sampling estimator: its weight per unit (n,), for the diagnostics
    weights: np.ndarray | None = None

    def estimate(self) -> float:
        return float(self.combine(self.terms.mean(axis=0)))


def _mean(m: np.ndarray) -> np.ndarray:
    return m[..., 0]


def _ratio(m: np.ndarray) -> np.ndarray:
    return m[..., 0] / np.where(m[..., 1] == 0, np.nan, m[..., 1])


def _check_table(pi: np.ndarray, logs: Logs) -> np.ndarray:
    pi = np.asarray(pi, dtype=np.float64)
    if pi.shape != (logs.n_pages, logs.n_actions):
        raise ConfigError(
            f"target policy must be a (P, A) = ({logs.n_pages}, {logs.n_actions}) table of "
            f"action probabilities, got {pi.shape}"
        )
    return pi


def weights(logs: Logs, pi: np.ndarray) -> np.ndarray:
    """``w = π(a | s) / μ(a | s)`` per logged row, ``(n,)`` (single recommendations)."""
    pi = _check_table(pi, logs)
    return pi[logs.state, logs.action[:, 0]] / logs.propensity


def _folds(logs: Logs) -> tuple[Logs, Logs, np.ndarray]:
    """The rows of even and of odd sessions, and which rows are odd."""
    odd = (logs.session % 2).astype(bool)
    return subset(logs, ~odd), subset(logs, odd), odd


def subset(logs: Logs, mask: np.ndarray) -> Logs:
    """The rows of ``logs`` in ``mask`` ``(n,)`` bool."""
    return Logs(
        logs.session[mask],
        logs.step[mask],
        logs.state[mask],
        logs.action[mask],
        logs.propensity[mask],
        None if logs.position_propensity is None else logs.position_propensity[mask],
        logs.landed_position[mask],
        logs.next_state[mask],
        logs.reward[mask],
        logs.n_pages,
        logs.n_actions,
        logs.empty_action,
    )


def weight_diagnostics(w: np.ndarray) -> tuple[float, float]:
    """Kish's effective sample size ``(Σ w)² / Σ w²`` of importance weights ``w`` ``(n,)``
    and the largest weight's share ``max |w| / Σ |w|`` (NaN, NaN when every weight is 0:
    the target's actions were never logged)."""
    w = np.asarray(w, dtype=np.float64)
    sq, ab = float((w * w).sum()), np.abs(w)
    if sq == 0:
        return float("nan"), float("nan")
    return float(w.sum()) ** 2 / sq, float(ab.max() / ab.sum())


def reward_model(logs: Logs, weights: np.ndarray | None = None) -> np.ndarray:
    """``q̂(s, a)``: mean logged reward per (page, action), ``(P, A)``; empty cells take the
    page's mean over its logged actions, pages without data the overall mean. ``weights``
    ``(n,)``: weighted means (the bootstrap's refits)."""
    p, a = logs.n_pages, logs.n_actions
    w = np.ones(len(logs.reward)) if weights is None else weights
    cell = logs.state * a + logs.action[:, 0]
    n = np.bincount(cell, weights=w, minlength=p * a).reshape(p, a)
    s = np.bincount(cell, weights=w * logs.reward, minlength=p * a).reshape(p, a)
    overall = (w * logs.reward).sum() / w.sum() if len(logs.reward) else 0.0
    page_n, page_s = n.sum(1), s.sum(1)
    page_mean = np.where(page_n > 0, page_s / np.where(page_n > 0, page_n, 1.0), overall)
    return np.where(n > 0, s / np.where(n > 0, n, 1.0), page_mean[:, None])


def one_step(logs: Logs, pi: np.ndarray, estimator: str) -> Terms:
    """A one-step estimator's terms, every logged row a unit (module docstring)."""
    w, r = weights(logs, pi), logs.reward
    if estimator == "ips":
        return Terms((w * r)[:, None], _mean, weights=w)
    if estimator == "snips":
        return Terms(np.stack([w * r, w], axis=1), _ratio, weights=w)
    pi = _check_table(pi, logs)
    if estimator == "dm":
        q = reward_model(logs)

        def refit(u: np.ndarray) -> float:
            v = (reward_model(logs, u) * pi).sum(1)[logs.state]
            return float((u * v).sum() / u.sum())

        return Terms((q * pi).sum(1)[logs.state][:, None], _mean, refit)
    if estimator == "dr":
        even, odd_logs, odd = _folds(logs)
        q_even, q_odd = reward_model(even), reward_model(odd_logs)
        # each row is corrected with the model of the other fold
        q = np.where(odd[:, None], q_even[logs.state], q_odd[logs.state])  # (n, A)
        v = (q * pi[logs.state]).sum(1)
        qa = q[np.arange(len(r)), logs.action[:, 0]]
        return Terms((v + w * (r - qa))[:, None], _mean, weights=w)
    raise ConfigError(f"one-step estimators are {ONE_STEP}, got {estimator!r}")


# ---- sessions ---------------------------------------------------------------------------------


def _grid(logs: Logs, values: np.ndarray, fill: str = "zero") -> np.ndarray:
    """Per-row ``values`` as a (sessions, H) grid; after a session's end 0 or the last value."""
    n, h = logs.n_sessions, int(logs.step.max()) + 1
    out = np.zeros((n, h))
    out[logs.session, logs.step] = values
    if fill == "last":
        length = np.bincount(logs.session, minlength=n)
        t = np.arange(h)[None, :]
        last = out[np.arange(n), length - 1]
        out = np.where(t < length[:, None], out, last[:, None])
    return out


def _rho(logs: Logs, pi: np.ndarray) -> np.ndarray:
    """Cumulative importance ratios per row, ``ρ_t`` ``(n,)`` (rows sorted by session, step)."""
    logw = np.log(np.maximum(weights(logs, pi), 1e-300))
    logw[weights(logs, pi) == 0] = -np.inf
    csum = np.cumsum(np.where(np.isinf(logw), 0.0, logw))
    dead = np.cumsum(np.isinf(logw).astype(np.int64))
    start = np.r_[0, np.flatnonzero(np.diff(logs.session)) + 1]
    first = np.repeat(start, np.diff(np.r_[start, len(logs.session)]))
    before = np.where(first > 0, csum[first - 1], 0.0)
    dead_before = np.where(first > 0, dead[first - 1], 0)
    rho = np.exp(csum - before)
    return np.where(dead - dead_before > 0, 0.0, rho)


@dataclass
class FQE:
    """Fitted-Q evaluation tables: ``q[h]`` ``(P, A)`` and ``v[h]`` ``(P,)`` with ``h`` steps
    to go (``h = 0..H``)."""

    q: np.ndarray
    v: np.ndarray


def fit_fqe(logs: Logs, pi: np.ndarray, horizon: int, weights: np.ndarray | None = None) -> FQE:
    """FQE on the empirical MDP of the logs (module docstring); ``horizon`` = H; ``weights``
    ``(n,)`` per row: the weighted empirical MDP (the bootstrap's refits)."""
    pi = _check_table(pi, logs)
    p, a = logs.n_pages, logs.n_actions
    w = np.ones(len(logs.reward)) if weights is None else weights
    cell = logs.state * a + logs.action[:, 0]
    n = np.bincount(cell, weights=w, minlength=p * a)
    trans = np.bincount(
        cell * (p + 1) + logs.next_state, weights=w, minlength=p * a * (p + 1)
    ).reshape(p * a, p + 1)
    rsum = np.bincount(cell, weights=w * logs.reward, minlength=p * a)
    # unseen (page, action): the page's pooled transitions; unseen pages: leave at once
    page_trans = trans.reshape(p, a, p + 1).sum(1)
    page_n, page_r = n.reshape(p, a).sum(1), rsum.reshape(p, a).sum(1)
    empty = page_n == 0
    page_trans[empty, p] = 1.0
    page_n = np.where(empty, 1.0, page_n)
    trans = trans.reshape(p, a, p + 1)
    rows = np.where((n.reshape(p, a) > 0)[:, :, None], trans, page_trans[:, None, :])
    rows = rows / rows.sum(2, keepdims=True)
    nn = n.reshape(p, a)
    reward = np.where(
        nn > 0, rsum.reshape(p, a) / np.where(nn > 0, nn, 1.0), (page_r / page_n)[:, None]
    )
    q = np.zeros((horizon + 1, p, a))
    v = np.zeros((horizon + 1, p))
    for h in range(1, horizon + 1):
        q[h] = reward + rows[:, :, :p] @ v[h - 1]
        v[h] = (pi * q[h]).sum(1)
    return FQE(q, v)


def _last_rows(logs: Logs) -> np.ndarray:
    """The row of each logged session's last decision (rows are in session order)."""
    if not len(logs.session):
        return np.zeros(0, dtype=np.int64)
    return np.r_[np.flatnonzero(np.diff(logs.session)), len(logs.session) - 1]


def _final(logs: Logs, rho: np.ndarray) -> np.ndarray:
    """Each session's last ``ρ`` ``(sessions,)``: the weight of the whole logged session."""
    return rho[_last_rows(logs)]


def _warn_short(logs: Logs, horizon: int) -> None:
    """Warn when sessions stop before ``horizon`` without ``EXIT`` (cut by the logging)."""
    last = _last_rows(logs)
    short = (logs.step[last] + 1 < horizon) & (logs.next_state[last] != logs.n_pages)
    if short.any():
        warnings.warn(
            f"{int(short.sum())} of {len(last)} logged sessions stop before the horizon "
            f"{horizon} without EXIT (cut by the logging; the longest of them after "
            f"{int(logs.step[last][short].max()) + 1} decisions): pdis, pdwis and dr count "
            "nothing after the cut, fqe extrapolates its model, so their estimates describe "
            "different horizons (use a horizon the logs cover)",
            OPEWarning,
            stacklevel=3,
        )


def session(logs: Logs, pi: np.ndarray, estimator: str, horizon: int) -> Terms:
    """A whole-session estimator's terms, every logged session a unit (module docstring):
    the value of the first ``horizon`` decisions, the logged decisions past it dropped."""
    horizon = whole("horizon", horizon, 1)
    logs = subset(logs, logs.step < horizon)
    _warn_short(logs, horizon)
    if estimator in ("pdis", "pdwis"):
        rho = _rho(logs, pi)
        if estimator == "pdis":
            per = np.bincount(logs.session, weights=rho * logs.reward, minlength=logs.n_sessions)
            return Terms(per[:, None], _mean, weights=_final(logs, rho))
        num = _grid(logs, rho * logs.reward)
        den = _grid(logs, rho, fill="last")
        h = num.shape[1]

        def combine(m: np.ndarray) -> np.ndarray:
            d = m[..., h:]
            return np.where(d > 0, m[..., :h] / np.where(d > 0, d, 1.0), 0.0).sum(-1)

        return Terms(np.concatenate([num, den], axis=1), combine, weights=_final(logs, rho))
    first = logs.step == 0
    if estimator == "fqe":
        fqe = fit_fqe(logs, pi, horizon)
        start = logs.state[first]

        def refit(u: np.ndarray) -> float:  # u: per session
            v0 = fit_fqe(logs, pi, horizon, u[logs.session]).v[horizon][start]
            return float((u * v0).sum() / u.sum())

        return Terms(fqe.v[horizon][start][:, None], _mean, refit)
    if estimator == "dr":
        rho = _rho(logs, pi)
        prev = np.r_[1.0, rho[:-1]]
        prev[first] = 1.0
        togo = np.clip(horizon - logs.step, 0, horizon)
        even, odd_logs, odd = _folds(logs)
        f_even, f_odd = fit_fqe(even, pi, horizon), fit_fqe(odd_logs, pi, horizon)
        act = logs.action[:, 0]
        qsa = np.where(odd, f_even.q[togo, logs.state, act], f_odd.q[togo, logs.state, act])
        vs = np.where(odd, f_even.v[togo, logs.state], f_odd.v[togo, logs.state])
        per_row = rho * (logs.reward - qsa) + prev * vs
        per = np.bincount(logs.session, weights=per_row, minlength=logs.n_sessions)
        return Terms(per[:, None], _mean, weights=_final(logs, rho))
    raise ConfigError(f"session estimators are {SESSION}, got {estimator!r}")


# ---- slates -----------------------------------------------------------------------------------


def repeated_pages(logs: Logs) -> np.ndarray:
    """Which logged slates show a page at two positions, ``(n,)`` bool (the "nothing" action,
    ``Logs.empty_action``, repeated is no repeat)."""
    a = logs.action
    same = a[:, :, None] == a[:, None, :]
    same &= np.triu(np.ones((a.shape[1], a.shape[1]), dtype=bool), 1)[None]
    if logs.empty_action is not None:
        same &= (a != logs.empty_action)[:, :, None]
    return same.any(axis=(1, 2))


def slate(logs: Logs, slates: np.ndarray, estimator: str) -> Terms:
    """A one-step slate estimator's terms for a deterministic target slate table ``(P, k)``.

    Warns (:class:`OPEWarning`) when ``pseudo_inverse`` or ``position_ips`` read logs whose
    slates repeat a page: their unbiasedness needs none (module docstring); the estimate is
    still returned, its bias growing with the share of such slates.
    """
    target = np.asarray(slates, dtype=np.int64)[logs.state]  # (n, k)
    if target.shape != logs.action.shape:
        raise ConfigError(
            f"target slates must be (P, k) with k = {logs.action.shape[1]}, got {slates.shape}"
        )
    r = logs.reward
    if estimator == "slate_ips":
        w = (target == logs.action).all(1) / logs.propensity
        return Terms((w * r)[:, None], _mean, weights=w)
    if estimator not in SLATE:
        raise ConfigError(f"slate estimators are {SLATE}, got {estimator!r}")
    if logs.position_propensity is None:
        raise ConfigError(
            f"{estimator} needs position_propensity (the logging probability of each shown "
            "item at its position) in the logs"
        )
    repeats = repeated_pages(logs)
    if repeats.any():
        warnings.warn(
            f"{estimator}: {int(repeats.sum())} of {len(repeats)} logged slates "
            f"({repeats.mean():.2%}) show a page at two positions; the lower one shows nothing, "
            "so the reward is not additive in the logged draws and the estimate is biased "
            "(log with a policy that never repeats a page)",
            OPEWarning,
            stacklevel=2,
        )
    wj = (target == logs.action) / logs.position_propensity  # (n, k)
    if estimator == "pseudo_inverse":
        w = wj.sum(1) - wj.shape[1] + 1
        return Terms((w * r)[:, None], _mean, weights=w)
    # position_ips: the ratio of the position of the shown page the visitor went to, 1 when
    # she went to a page not shown
    k = logs.action.shape[1]
    went = logs.landed_position
    at = went[:, None] == np.arange(k)[None, :]
    w = np.where(went >= 0, (wj * at).sum(1), 1.0)
    return Terms((w * r)[:, None], _mean, weights=w)


# ---- intervals --------------------------------------------------------------------------------


def bootstrap(
    terms: Terms, n_boot: int = 200, seed: int = 0, level: float = 0.95, chunk: int = 25
) -> tuple[float, float, float]:
    """The estimate and a percentile bootstrap interval (:func:`bootstrap_many`).

    Returns:
        ``(estimate, low, high)``.
    """
    return bootstrap_many([terms], np.random.default_rng(seed), n_boot, level, chunk)[0]


def bootstrap_many(
    terms: list[Terms],
    rng: np.random.Generator,
    n_boot: int = 200,
    level: float = 0.95,
    chunk: int = 25,
    refit_models: bool = True,
) -> list[tuple[float, float, float]]:
    """Estimates and percentile intervals of several estimators on the same units, sharing
    the resampling weights: the Bayesian bootstrap (Rubin, 1981), each unit weighted by an
    Exp(1) draw, which for the means of many units behaves as resampling with replacement and
    costs one matrix product per ``chunk`` replicates (float32 weights and terms; the
    estimates themselves are float64). Model-based estimators (DM, FQE: ``Terms.refit``) are
    refitted on every replicate's weights, so their intervals include the model's own
    uncertainty; ``refit_models=False`` holds the models fixed (faster, far too narrow).

    Returns:
        ``(estimate, low, high)`` per estimator.

    Raises:
        ConfigError: ``n_boot`` or ``chunk`` below 1 (no replicate: no interval).
        DataError: An estimator without units (empty logs): every figure would be NaN.
    """
    n_boot = whole("n_boot", n_boot, 1)
    chunk = whole("chunk", chunk, 1)
    if any(len(t.terms) == 0 for t in terms):
        raise DataError("no logged units to estimate from (the logs hold no sessions)")
    widths = [t.terms.shape[1] for t in terms]
    big = np.concatenate([t.terms for t in terms], axis=1)
    centre = big.mean(axis=0)
    big32 = (big - centre).astype(np.float32)  # centred: float32 sums keep their precision
    reps: list[list[np.ndarray]] = [[] for _ in terms]
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        w = rng.standard_exponential(size=(b, len(big)), dtype=np.float32)
        means = (w @ big32).astype(np.float64) / w.sum(1, dtype=np.float64)[:, None] + centre
        col = 0
        for i, (t, m) in enumerate(zip(terms, widths, strict=True)):
            if (
                refit_models and t.refit is not None
            ):  # a model-based estimator: refit it on the weighted units
                w64 = w.astype(np.float64)
                reps[i].append(np.array([t.refit(w64[j]) for j in range(b)]))
            else:
                reps[i].append(t.combine(means[:, col : col + m]))
            col += m
    alpha = (1 - level) / 2
    out = []
    for t, r in zip(terms, reps, strict=True):
        rep = np.concatenate(r)
        rep = rep[np.isfinite(rep)]
        if len(rep) == 0:
            out.append((t.estimate(), float("nan"), float("nan")))
            continue
        low, high = np.quantile(rep, [alpha, 1 - alpha])
        out.append((t.estimate(), float(low), float(high)))
    return out
