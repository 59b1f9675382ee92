"""The evaluation protocol: policies over many simulated sessions, several seeds, three worlds.

For every (policy, world) pair the batched simulator plays complete sessions with the policy's
greedy action and records, per session: the **return** (sum of rewards: page value by
default), **revenue** (expected transaction revenue of the pages viewed), whether it
**converted** (viewed a page that carries revenue), **pages** viewed (the entry page included),
**bounce** (one page only) and **time on site** (the expected time on each page viewed). These
are the simulation's own definitions, not the prepared data's, so compare policies with one
another, not with the data's summary: the simulator has no transactions, so conversion is
reaching a page whose catalog revenue is positive (on the GA sample day 2.00 % of the real
sessions do, where 1.68 % carry a transaction); and each page viewed adds the catalog's mean
time on it, the last page included, where GA's session duration leaves the last page out (a
bounced visit adds its entry page's mean time here, 0 s in GA; 224 s against 166 s per real
GA-day session). A
record (:data:`RECORD_FIELDS`) gives the means with 95 % confidence half-widths over the pooled
sessions of all seeds; ``uplift_pct`` compares the return with ``organic`` in the same world
(organic's own is 0 ± 0). The half-widths cover the sessions simulated with the instances
evaluated, pooled: the variation between training seeds is not in them, and the uplift's
half-width takes the policy and organic as independent, which overstates it for policies that
play organic's own seeds (the heuristics).
Policies that are tables over pages also get ``exact_return`` in worlds with table dynamics
(first-order or the synthetic truth): their value by exact policy evaluation
(:func:`agents.tabular.policy_value`), which the simulated mean must agree with.

Sessions are counted without bias: each of the ``B`` visitor slots plays a fixed quota of
sessions from its start, so long sessions are not cut off when the count is reached.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from agents.base import Policy
from agents.site import Site
from clickstream import checks
from clickstream.errors import ConfigError
from envs.core import SiteCore

Z95 = 1.959963984540054
"""Two-sided 95 % quantile of the normal distribution (sessions number thousands)."""

# The sessions of training's periodic evaluations, which pick the weights an agent keeps
# (``keep_best``), and those of the closing evaluation of the kept weights. They differ: the best
# of a dozen scores on the same sessions sits above the weights' value (each score's standard
# error on 16,384 sessions is about 2 page value), so a score on the selecting sessions is not
# an estimate of the kept policy.
SELECTION_SEED = 12345
CLOSING_SEED = 67890

RECORD_FIELDS = (
    "policy",
    "world",
    "mean_return",
    "ci95",
    "revenue_per_session",
    "revenue_ci95",
    "conversion_rate",
    "conversion_ci95",
    "pages_per_session",
    "bounce_rate",
    "bounce_ci95",
    "time_on_site_s",
    "time_on_page_s",
    "uplift_pct",
    "uplift_ci95",
    "exact_return",
    "n_sessions",
    "seeds",
    "seed_means",
    "truncated",
    "training",
)
"""Fields of every ``results.json`` record. ``truncated`` (a time limit cut the training of
one of the policy's instances short) and ``training`` (per training seed: ``steps`` reached,
``budget_steps``, ``truncated``) come from each policy's ``run.json`` (``scripts/evaluate.py``
fills them; :func:`evaluate` leaves them ``None``)."""


def mean_ci(x: np.ndarray | Sequence[float]) -> tuple[float, float]:
    """Mean and 95 % confidence half-width ``z · s / √n`` (sample sd ``s``, ddof 1)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan
    if len(x) == 1:
        return float(x[0]), math.inf
    return float(x.mean()), float(Z95 * x.std(ddof=1) / math.sqrt(len(x)))


def ratio_ci(mean_a: float, ci_a: float, mean_b: float, ci_b: float) -> tuple[float, float]:
    """``100 · (a / b - 1)`` and its 95 % half-width by the delta method (independent a, b)."""
    if mean_b == 0:
        return math.nan, math.nan
    ratio = mean_a / mean_b
    rel = math.hypot(ci_a / mean_a if mean_a else 0.0, ci_b / mean_b)
    return 100.0 * (ratio - 1.0), 100.0 * abs(ratio) * rel


@dataclass
class Sessions:
    """Per-session outcomes, arrays of shape ``(n,)``."""

    returns: np.ndarray
    revenue: np.ndarray
    converted: np.ndarray
    pages: np.ndarray
    time_on_site: np.ndarray

    @classmethod
    def concat(cls, parts: Sequence[Sessions]) -> Sessions:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__annotations__))


def check_protocol(
    n_sessions: Any,
    seeds: Any = (0,),
    n_visitors: Any = 1,
    world_sessions: Mapping[str, Any] | None = None,
) -> tuple[int, list[int], int, dict[str, int]]:
    """The evaluation's settings, checked, as ``(n_sessions, seeds, n_visitors,
    world_sessions)``: no session would leave every mean NaN (``results.json`` then not
    strict JSON) and no seed nothing to pool.

    Raises:
        ConfigError: Naming the setting (``n_sessions``, ``seeds``, ``n_visitors``,
            ``world_sessions.<world>``) and its value.
    """
    n = checks.whole("n_sessions", n_sessions, unit=" of sessions")
    listed = (
        list(seeds)
        if isinstance(seeds, Iterable) and not isinstance(seeds, str | bytes | Mapping)
        else []
    )
    if not listed:
        raise ConfigError(
            f"seeds must be a non-empty list of whole numbers in [0, {checks.SEED_MAX}], "
            f"got {seeds!r}"
        )
    chosen = [checks.seed("seeds", s) for s in listed]
    b = checks.whole("n_visitors", n_visitors, unit=" of visitors")
    per_world = {
        str(w): checks.whole(f"world_sessions.{w}", v, unit=" of sessions")
        for w, v in (world_sessions or {}).items()
    }
    return n, chosen, b, per_world


def _act(
    policy: Policy, obs: torch.Tensor, core: SiteCore, state: Any, starts: torch.Tensor
) -> tuple[torch.Tensor, Any]:
    """The policy's actions ``(B,)`` (slates ``(B, k)``) and its new per-visitor state."""
    if policy.needs_latent_state:
        return policy.predict_latent(obs, core), None
    if policy.recurrent:
        actions, state = policy.predict(
            obs.cpu().numpy(), state, starts.cpu().numpy(), deterministic=True
        )
    else:
        actions, state = policy.predict(obs.cpu().numpy(), deterministic=True)
    if core.slate_model is not None:  # slates: (B, k)
        return torch.as_tensor(np.asarray(actions).reshape(len(obs), -1), dtype=torch.long), None
    return torch.as_tensor(np.asarray(actions).reshape(-1), dtype=torch.long), state


@torch.no_grad()
def simulate(
    policy: Policy,
    core: SiteCore,
    n_sessions: int,
    seed: int,
    tables: Mapping[str, torch.Tensor],
    *,
    progress: bool = False,
    desc: str | None = None,
) -> Sessions:
    """Play ``n_sessions`` complete sessions (rounded up to a multiple of the core's B).

    Args:
        policy: The policy (greedy actions).
        core: The world; its B visitor slots each play ``ceil(n_sessions / B)`` sessions.
        n_sessions: Sessions wanted.
        seed: Seed of the core (every draw).
        tables: ``revenue`` and ``time_on_page_s`` per state, ``(P + 1,)``.
        progress: Show a progress bar (labelled ``desc``, default the policy's name).

    Slots that have played their quota leave the core (:meth:`SiteCore.keep`), which
    therefore ends smaller than it started: build a fresh core (or ``reset``) per call.

    Raises:
        ConfigError: ``n_sessions`` below 1.
    """
    n_sessions = checks.whole("n_sessions", n_sessions, unit=" of sessions")
    policy.check_observations(core)
    obs = core.reset(seed)
    b = core.n_visitors
    quota = -(-int(n_sessions) // b)
    dev = core.device
    revenue_of = tables["revenue"].to(dev)
    time_of = tables["time_on_page_s"].to(dev)
    payable = revenue_of > 0
    done = torch.zeros(b, dtype=torch.long, device=dev)
    acc = {
        k: torch.zeros(b, dtype=torch.float64, device=dev)
        for k in ("returns", "revenue", "converted", "pages", "time_on_site")
    }

    def start(mask: torch.Tensor) -> None:
        entry = core.page[mask]
        for k in acc:
            acc[k][mask] = 0.0
        acc["pages"][mask] = 1.0
        acc["revenue"][mask] = revenue_of[entry].double()
        acc["converted"][mask] = payable[entry].double()
        acc["time_on_site"][mask] = time_of[entry].double()

    start(torch.ones(b, dtype=torch.bool, device=dev))
    starts = torch.ones(b, dtype=torch.bool)  # a recurrent policy's visits that just began
    state: Any = None
    out: dict[str, list[np.ndarray]] = {k: [] for k in acc}
    bar = tqdm(total=quota * b, desc=desc or policy.name, disable=not progress, leave=False)
    while True:
        actions, state = _act(policy, obs, core, state, starts)
        r = core.step(actions.to(dev))
        landed, stays = r.landed, ~r.terminated
        acc["returns"] += r.reward.double()
        acc["revenue"] += revenue_of[landed].double()
        acc["converted"] = torch.maximum(acc["converted"], payable[landed].double())
        acc["pages"] += stays.double()
        acc["time_on_site"] += (time_of[landed] * stays).double()
        ended = r.terminated | r.truncated
        if bool(ended.any()):
            record = ended & (done < quota)  # slots past their quota await removal
            for k in acc:
                out[k].append(acc[k][record].cpu().numpy())
            bar.update(int(record.sum()))
            done += ended.long()
            start(ended)
        starts = (r.terminated | r.truncated).cpu()
        obs = r.obs
        active = done < quota
        if not bool(active.any()):
            break
        # slots that played their quota leave the batch (once they are a quarter of it, so
        # the gathers stay rare): no idle visitors stepped while long sessions finish
        if int(active.sum()) <= 3 * len(active) // 4:
            core.keep(active)
            obs, done, starts = obs[active], done[active], starts[active.cpu()]
            if policy.recurrent:
                state = policy.select_state(state, active.cpu().numpy())
            acc = {k: v[active] for k, v in acc.items()}
    bar.close()
    return Sessions(**{k: np.concatenate(v) for k, v in out.items()})


def summarize(per_seed: Mapping[int, Sessions]) -> dict[str, Any]:
    """Means and CIs over the pooled sessions of every seed (:data:`RECORD_FIELDS`)."""
    pooled = Sessions.concat(list(per_seed.values()))
    ret, ret_ci = mean_ci(pooled.returns)
    rev, rev_ci = mean_ci(pooled.revenue)
    conv, conv_ci = mean_ci(pooled.converted)
    bounced = (pooled.pages <= 1).astype(np.float64)
    bounce, bounce_ci = mean_ci(bounced)
    pages = float(pooled.pages.mean())
    tos = float(pooled.time_on_site.mean())
    return {
        "mean_return": ret,
        "ci95": ret_ci,
        "revenue_per_session": rev,
        "revenue_ci95": rev_ci,
        "conversion_rate": conv,
        "conversion_ci95": conv_ci,
        "pages_per_session": pages,
        "bounce_rate": bounce,
        "bounce_ci95": bounce_ci,
        "time_on_site_s": tos,
        "time_on_page_s": tos / pages if pages else math.nan,
        "n_sessions": len(pooled.returns),
        "seeds": sorted(per_seed),
        "seed_means": [float(per_seed[s].returns.mean()) for s in sorted(per_seed)],
    }


def exact_return(policy: Policy, core: SiteCore) -> float | None:
    """The policy's exact mean return in ``core``'s world, when both are tables; else None."""
    if core.slate_model is not None:
        return _exact_slate_return(policy, core)
    probs = policy.table_probs()
    if probs is None or core.dynamics.chains() is None or core.candidates is not None:
        return None
    from agents.tabular import SiteMDP, policy_value

    mdp = SiteMDP.from_core(core)
    if probs.ndim == 3 and probs.shape[0] != mdp.n_intents:
        return None
    return policy_value(mdp, probs)["mean_return"]


def _exact_slate_return(policy: Policy, core: SiteCore) -> float | None:
    """A slate table's exact mean return (``slate_table()``: ``(P, k)`` action indices)."""
    table = getattr(policy, "slate_table", None)
    if table is None or core.dynamics.chains() is None:
        return None
    slates = table()
    if slates is None:
        return None
    from agents.slate import slate_policy_value
    from agents.tabular import SiteMDP

    pages = core.action_pages.cpu()[torch.as_tensor(slates, dtype=torch.long)]
    return slate_policy_value(SiteMDP.from_core(core), core.slate_model, pages)["mean_return"]


def evaluate(
    policies: Mapping[str, Mapping[int, Policy]],
    site: Site,
    *,
    worlds: Sequence[str] | None = None,
    n_sessions: int = 100_000,
    seeds: Sequence[int] = (0, 1, 2),
    n_visitors: int = 8192,
    world_sessions: Mapping[str, int] | None = None,
    progress: bool = True,
    announce: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """One record per (policy, world).

    Args:
        policies: Per policy name, its trained instances by training seed. A policy trained
            with seeds ``s`` is evaluated with each instance on simulation seed ``1000 + s``;
            a policy with one instance (nothing learnt) on each of ``seeds``.
        site: The site and its worlds.
        worlds: Worlds to evaluate in (default: all the site has).
        n_sessions: Sessions per seed.
        n_visitors: Visitors simulated together.
        world_sessions: Per-world override of ``n_sessions`` (e.g. fewer in slow GRU worlds).
        progress: Progress bars.
        announce: Called with one line per (policy, world) done, its figure and time: what a
            worker process without bars shows of a long evaluation.

    Raises:
        ConfigError: A setting out of range (:func:`check_protocol`).
    """
    n_sessions, seeds, n_visitors, world_sessions = check_protocol(
        n_sessions, seeds, n_visitors, world_sessions
    )
    worlds = list(worlds or site.worlds())
    records = []
    for world in worlds:
        core = site.core(n_visitors, world)
        tables = site.side_tables(world)
        n = int((world_sessions or {}).get(world, n_sessions))
        for name, instances in policies.items():
            start = time.perf_counter()
            runs: dict[int, Sessions] = {}
            if len(instances) == 1:
                only = next(iter(instances.values()))
                for s in seeds:
                    runs[int(s)] = simulate(
                        only,
                        core,
                        n,
                        int(s),
                        tables,
                        progress=progress,
                        desc=f"{name} · {world} · seed {s}",
                    )
            else:
                for s, policy in sorted(instances.items()):
                    runs[int(s)] = simulate(
                        policy,
                        core,
                        n,
                        1000 + int(s),
                        tables,
                        progress=progress,
                        desc=f"{name} · {world} · trained seed {s}",
                    )
            record = {"policy": name, "world": world, **summarize(runs)}
            exact = [exact_return(p, core) for p in instances.values()]
            record["exact_return"] = (
                None if any(e is None for e in exact) else float(np.mean(exact))
            )
            records.append(record)
            if announce is not None:
                announce(
                    f"evaluated {name} in {world}: {record['mean_return']:,.3f} ± "
                    f"{record['ci95']:,.3f} over {record['n_sessions']:,} sessions "
                    f"({time.perf_counter() - start:,.0f} s)"
                )
    _add_uplift(records)
    return [{k: r.get(k) for k in RECORD_FIELDS} for r in records]


def _add_uplift(records: list[dict[str, Any]]) -> None:
    """Each record's ``uplift_pct ± uplift_ci95`` against ``organic`` in its world (``None``
    without organic). Organic against itself is exactly 0 ± 0: it is one estimate, not two
    independent ones."""
    organic = {r["world"]: r for r in records if r["policy"] == "organic"}
    for r in records:
        base = organic.get(r["world"])
        if base is None:
            r["uplift_pct"], r["uplift_ci95"] = None, None
        elif r is base:
            r["uplift_pct"], r["uplift_ci95"] = 0.0, 0.0
        else:
            r["uplift_pct"], r["uplift_ci95"] = ratio_ci(
                r["mean_return"], r["ci95"], base["mean_return"], base["ci95"]
            )


def quick_eval(
    policy: Policy,
    site: Site,
    n_sessions: int = 4096,
    world: str = "learned",
    seed: int = SELECTION_SEED,
    truth: bool = False,
    core: SiteCore | None = None,
) -> dict[str, float]:
    """A short evaluation for training curves: ``eval/*`` scalars in one world.

    With ``truth`` on a synthetic site, also ``truth/exact_return``: the policy's exact value in
    the ground truth when it is a table over pages (a diagnostic for studies of training; an
    agent must not select on it, the ground truth is unknown on real data). ``core``: a core
    of ``world`` to reuse (its size sets the visitors simulated together).

    Raises:
        ConfigError: ``n_sessions`` below 1 (the caller's key is ``eval_sessions``).
    """
    n_sessions = checks.whole("eval_sessions", n_sessions, unit=" of sessions")
    if core is None:  # callers that evaluate often pass one core, built once
        core = site.core(min(2048, n_sessions), world)
    s = summarize({seed: simulate(policy, core, n_sessions, seed, site.side_tables(world))})
    out = {
        "eval/mean_return": s["mean_return"],
        "eval/revenue_per_session": s["revenue_per_session"],
        "eval/conversion_rate": s["conversion_rate"],
        "eval/pages_per_session": s["pages_per_session"],
        "eval/bounce_rate": s["bounce_rate"],
    }
    if truth and site.is_synthetic:
        exact = exact_return(policy, site.core(1, "ground_truth", device="cpu"))
        if exact is not None:
            out["truth/exact_return"] = exact
    return out


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b between two scorings of the same items (ties counted as neither)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = len(a)
    if n < 2 or len(b) != n:
        return math.nan
    i, j = np.triu_indices(n, 1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    concordant_minus_discordant = float((da * db).sum())
    pairs_a, pairs_b = float((da != 0).sum()), float((db != 0).sum())
    if pairs_a == 0 or pairs_b == 0:
        return math.nan
    return concordant_minus_discordant / math.sqrt(pairs_a * pairs_b)
