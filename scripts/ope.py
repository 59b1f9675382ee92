"""Off-policy evaluation: what a policy would earn, estimated from logs of another policy.

    # logs as a deployed policy writes them: ε-greedy `popular` in the store's true model
    python scripts/ope.py log --data-dir data/synthetic_markov --logging popular --epsilon 0.5 \\
        --sessions 100000 --out logs.parquet --env action_level=group history_len=1
    # a policy's value from those logs (or from a user's logs in the same schema)
    python scripts/ope.py estimate --data-dir data/synthetic_markov --logs logs.parquet \\
        --policy value_iteration --env action_level=group history_len=1

``--policy`` is a saved policy folder (``scripts/train.py``'s ``agents/<name>/seed_<s>``) or
the kind of a policy built from the data (``value_iteration``, ``greedy``, ``popular``,
``most_likely``, ``highest_value``, ``organic``, ``random``; with ``--env slate_size=k``:
``slate_value_iteration``, ``slate_greedy``). ``--env key=value`` sets the simulator options of
``configs/env/site.yaml`` the policy was built with (its actions: ``action_level``,
``slate_size``, ``allow_no_recommendation``; ``history_len``).

The logs' schema is in ``docs/ope.md`` (:mod:`agents.logs`); logs without a ``propensity``
column are refused with what to do. The estimate of every estimator is printed with a 95 %
bootstrap interval: one-step estimators on the first decision of each session, session
estimators on whole sessions (their first ``--horizon`` decisions), slate estimators when
slates are logged. Beside each importance-sampling estimate: the effective sample size of its
weights, ``(Σ w)² / Σ w²``, out of the units, and the largest weight's share of ``Σ |w|``
(:func:`agents.ope.weight_diagnostics`); an ESS below ``agents.ope.ESS_MIN`` (100) and logs
outside an estimator's assumptions are printed as warnings, and kept per row in ``--out``'s
JSON (``ess``, ``units``, ``max_weight_share``, ``warnings``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from agents.base import Policy, load_policy, policy_class
from agents.logs import Logs, log_policy, read_logs, write_logs
from agents.ope import (
    ESS_MIN,
    ONE_STEP,
    SESSION,
    SLATE,
    OPEWarning,
    Terms,
    bootstrap,
    one_step,
    session,
    slate,
    subset,
    weight_diagnostics,
)
from agents.site import Site
from clickstream.checks import unit_interval, whole
from clickstream.errors import ClickstreamError, ConfigError, DataError

BUILT = (
    "value_iteration",
    "greedy",
    "popular",
    "most_likely",
    "highest_value",
    "organic",
    "random",
    "slate_value_iteration",
    "slate_greedy",
)


def parse_env(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs (values read as YAML) as env options."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--env takes key=value pairs, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def get_policy(spec: str, site: Site) -> Policy:
    """A saved policy folder, or a policy of kind ``spec`` built from the site's data."""
    if Path(spec).is_dir():
        return load_policy(spec)
    if spec not in BUILT:
        raise ConfigError(
            f"--policy {spec!r} is neither a saved policy folder nor one of {list(BUILT)}"
        )
    policy = policy_class(spec)()
    policy.fit(site)
    return policy


def action_names(site: Site) -> list[str | None]:
    """What each of the site's actions shows: a page or a page group; None: nothing."""
    core = site.template
    names = site.data.vocab.groups if core.page_groups is not None else site.data.vocab.pages
    return [names[int(a)] if int(a) >= 0 else None for a in core.action_pages.cpu()]


def target_table(policy: Policy, logs: Logs, site: Site) -> tuple[np.ndarray, str]:
    """The target as a table over current pages, ``(P, A)`` (or slates ``(P, k)``), and a
    note when it was approximated."""
    slates = getattr(policy, "slate_table", None)
    if slates is not None and slates() is not None:
        return np.asarray(slates(), dtype=np.int64), ""
    probs = policy.table_probs()
    if probs is not None and probs.ndim == 2:
        return probs.double().numpy(), ""
    # a policy of the history: its action at every logged row, pooled per current page
    k = site.template.history_len
    p = logs.n_pages
    obs = np.full((len(logs.state), k), p, dtype=np.int64)
    for lag in range(k):
        shifted = np.r_[np.full(lag, p), logs.state[: len(logs.state) - lag]]
        same = np.r_[
            np.zeros(lag, bool), logs.session[lag:] == logs.session[: len(logs.session) - lag]
        ]
        obs[:, k - 1 - lag] = np.where(same, shifted, p)
    actions = np.asarray(policy.predict(obs, deterministic=True)[0]).reshape(-1)
    table = np.zeros((p, logs.n_actions))
    np.add.at(table, (logs.state, actions), 1.0)
    seen = table.sum(1) > 0
    table[seen] /= table[seen].sum(1, keepdims=True)
    table[~seen] = 1.0 / logs.n_actions
    note = (
        "the policy depends on more than the current page: its logged actions were pooled "
        "per page, so the estimates are those of that table (exact with history_len=1)"
    )
    return table, note


def check_out(out: Path | None) -> None:
    """Make ``--out``'s folder (or refuse it) before any work: a missing folder would
    otherwise fail the final write, after all the computing, with a bare ``FileNotFoundError``.
    """
    if out is None:
        return
    if out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a folder: give a file path")
    folder = out.parent
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {str(out)!r}: {str(folder)!r} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"--out {str(out)!r}: cannot create its folder {str(folder)!r} ({exc.strerror})"
        ) from None
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"--out {str(out)!r}: its folder {str(folder)!r} is not writable")


def check_args(args: argparse.Namespace) -> None:
    """The numbers of the command line, each refused naming its flag, before any work."""
    if args.command == "log":
        # outside [0, 1] the mixture is not a distribution; the logger would say so but not
        # which flag made it
        args.epsilon = unit_interval("--epsilon", args.epsilon)
        args.sessions = whole("--sessions", args.sessions, 1)
    else:
        # 0 replicates give no interval (the bootstrap would fail on an empty list)
        args.n_boot = whole("--n-boot", args.n_boot, 1)
        if args.horizon is not None:  # None: the env's max_steps; 0 would estimate nothing
            args.horizon = whole("--horizon", args.horizon, 1)
    check_out(args.out)


def cmd_log(args: argparse.Namespace) -> dict[str, Any]:
    site = Site(data_dir=args.data_dir, env=parse_env(args.env), seed=args.seed)
    logging = get_policy(args.logging, site)
    probs = logging.table_probs()
    if probs is None or probs.ndim != 2:
        raise ConfigError("the logging policy must be a table over pages (--logging)")
    mu = (1 - args.epsilon) * probs.double() + args.epsilon / probs.shape[1]
    core = site.core(min(args.sessions, 16_384), args.world)
    logs = log_policy(core, mu, args.sessions, args.seed)
    write_logs(logs, args.out, list(site.data.vocab.pages), action_names(site))
    print(f"{len(logs.state):,} decisions of {logs.n_sessions:,} sessions written to {args.out}")
    return {"rows": len(logs.state), "sessions": logs.n_sessions}


def cmd_estimate(args: argparse.Namespace) -> dict[str, Any]:
    site = Site(data_dir=args.data_dir, env=parse_env(args.env), seed=args.seed)
    logs = read_logs(args.logs, list(site.data.vocab.pages), action_names(site))
    if logs.n_sessions == 0:  # every estimate would be NaN, printed as if it were a result
        raise DataError(
            "the logs file holds no logged sessions: nothing to estimate from", file=str(args.logs)
        )
    policy = get_policy(args.policy, site)
    table, note = target_table(policy, logs, site)
    horizon = site.template.max_steps if args.horizon is None else args.horizon
    rows: list[dict[str, Any]] = []

    def add(kind: str, name: str, make: Callable[[], Terms]) -> None:
        terms, said = _caught(make)
        est, low, high = bootstrap(terms, n_boot=args.n_boot, seed=args.seed)
        rows.append(
            {
                "kind": kind,
                "estimator": name,
                "estimate": est,
                "low": low,
                "high": high,
                **_diagnostics(terms, name, said),
            }
        )

    if logs.action.shape[1] > 1:
        first = _first(logs)
        for name in SLATE:
            try:
                add("one step (slates)", name, lambda n=name: slate(first, table, n))
            except ConfigError as exc:
                print(f"  {name}: skipped ({exc})")
    else:
        first = _first(logs)
        for name in ONE_STEP:
            add("one step", name, lambda n=name: one_step(first, table, n))
        if (logs.step > 0).any():
            for name in SESSION:
                add("session", name, lambda n=name: session(logs, table, n, horizon))
    print(
        f"{args.policy} from {args.logs} ({len(logs.state):,} decisions, {logs.n_sessions:,} "
        f"sessions); 95 % bootstrap intervals ({args.n_boot} replicates); session horizon "
        f"{horizon}; ESS: effective sample size of the importance weights"
    )
    if note:
        print(f"note: {note}")
    for r in rows:
        ess = (
            f"ESS {r['ess']:,.0f} of {r['units']:,}, max weight {r['max_weight_share']:.2%}"
            if r["ess"] is not None
            else ("ESS - (every weight is 0)" if r["units"] is not None else "")
        )
        print(
            f"  {r['kind']:<18} {r['estimator']:<15} {r['estimate']:12.4f}   "
            f"[{r['low']:.4f}, {r['high']:.4f}]   {ess}"
        )
    for message in dict.fromkeys(m for r in rows for m in r["warnings"]):
        print(f"warning: {message}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return {"estimates": rows, "note": note}


def _first(logs: Logs) -> Logs:
    return subset(logs, logs.step == 0)


def _caught(make: Callable[[], Terms]) -> tuple[Terms, list[str]]:
    """``make()`` and the :class:`~agents.ope.OPEWarning` messages it gave (other warnings
    pass on as usual)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        terms = make()
    said = []
    for w in caught:
        if issubclass(w.category, OPEWarning):
            said.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return terms, said


def _diagnostics(terms: Terms, name: str, said: list[str]) -> dict[str, Any]:
    """An estimate's weight diagnostics and warnings (an ESS below ``ESS_MIN`` among them);
    None for a model-based estimator (no weights)."""
    if terms.weights is None:
        return {"ess": None, "units": None, "max_weight_share": None, "warnings": said}
    ess, share = weight_diagnostics(terms.weights)
    units = len(terms.weights)
    if math.isnan(ess):
        said = [*said, f"{name}: every importance weight is 0 (the target's actions were never "
                       "logged): the estimate is 0 by construction, not a value"]  # fmt: skip
        return {"ess": None, "units": units, "max_weight_share": None, "warnings": said}
    if ess < ESS_MIN:
        said = [
            *said,
            f"{name}: effective sample size {ess:.1f} of {units:,} units is below {ESS_MIN:.0f} "
            f"(largest weight {share:.1%} of the total): the estimate rests on a few units "
            "and its interval is not to be trusted",
        ]
    return {"ess": ess, "units": units, "max_weight_share": share, "warnings": said}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("log", "estimate"):
        p = sub.add_parser(name)
        p.add_argument("--data-dir", type=Path, required=True, help="a prepared dataset")
        p.add_argument("--env", nargs="*", default=[], help="env options key=value")
        p.add_argument("--seed", type=int, default=0)
        if name == "log":
            p.add_argument("--logging", default="popular", help="logging policy (as --policy)")
            p.add_argument("--epsilon", type=float, default=0.5, help="share of random actions")
            p.add_argument("--sessions", type=int, default=100_000)
            p.add_argument("--world", default="ground_truth", help="learned or ground_truth")
            p.add_argument("--out", type=Path, required=True)
        else:
            p.add_argument("--logs", type=Path, required=True)
            p.add_argument("--policy", required=True)
            p.add_argument("--horizon", type=int, default=None)
            p.add_argument("--n-boot", type=int, default=200)
            p.add_argument("--out", type=Path, default=None, help="write the estimates (JSON)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        check_args(args)
        (cmd_log if args.command == "log" else cmd_estimate)(args)
    except ClickstreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
