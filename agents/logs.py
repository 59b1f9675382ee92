"""Logged data with propensities: what a deployed recommender writes, and what OPE reads.

The simulator plays a stochastic **logging policy** (a table of action probabilities per
current page; for slates, one such table per position, sampled independently) and records every
decision as a deployed policy would: the page the visitor was on, the slate shown, the
probability the logging policy had of showing it (its **propensity**), the probability of each
shown item at its position, the page landed on, the position of that page in the slate (if it
was shown) and the reward. The same
schema holds a user's own A/B or recommendation logs (``docs/ope.md``).

**Parquet schema** (one row per decision, sessions in ``step`` order):

===================== =============== ==========================================================
column                type            meaning
===================== =============== ==========================================================
``session_id``        string or int   the session
``step``              int             decision index in the session: 0, 1, 2, ... with no gap
``page``              string          the page the visitor was on (a page of the catalog)
``slate``             list<string>    what was shown, top position first: page names (page
                                      groups with ``action_level=group``); null = nothing shown
                                      at that position (a page repeated lower down, too). One
                                      element without slates.
``propensity``        float           probability the logging policy showed this slate, > 0
``position_propensity`` list<float>   optional: probability of each shown item at its
                                      position (slate estimators need it)
``clicked_position``  int             optional: position of the shown page the visitor went
                                      to (``next_page``), whether or not the slate caused it
                                      (a visitor who clicks nothing may still move to a shown
                                      page); -1: ``next_page`` was not shown. With slates it is
                                      determined by ``slate`` and ``next_page``: derived when
                                      absent, refused when it disagrees
``next_page``         string          page landed on, ``EXIT`` when the visitor left
``reward``            float           reward of the step (page value of ``next_page``, ...)
===================== =============== ==========================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from clickstream.errors import DataError
from clickstream.runfolder import read_parquet
from envs.core import SiteCore

REQUIRED = ("session_id", "step", "page", "slate", "propensity", "next_page", "reward")
EXIT = "EXIT"


@dataclass
class Logs:
    """Logged decisions as arrays (``n`` rows, slates of ``k``).

    Attributes:
        session: Session index per row, ``(n,)`` int64, ``0..n_sessions-1``.
        step: Decision index in the session, ``(n,)``.
        state: Current page id, ``(n,)``.
        action: Action indices shown, ``(n, k)`` (the env's actions; ``k = 1`` without slates).
        propensity: Logging probability of the whole action, ``(n,)``.
        position_propensity: Logging probability of each position's action, ``(n, k)``, or None.
        landed_position: Position of the shown page the visitor went to, ``(n,)``, whether
            or not the slate caused the move (the simulator cannot tell a click from an
            organic move to a shown page); -1: the page landed on was not shown (or unknown,
            single recommendations read from a file without ``clicked_position``).
        next_state: Page landed on, ``(n,)`` (``n_pages``: ``EXIT``).
        reward: ``(n,)`` float64.
        n_pages: P; n_actions: A.
        empty_action: The action that shows nothing (None: no such action); a repeat of it in
            a slate is no repeated page.
    """

    session: np.ndarray
    step: np.ndarray
    state: np.ndarray
    action: np.ndarray
    propensity: np.ndarray
    position_propensity: np.ndarray | None
    landed_position: np.ndarray
    next_state: np.ndarray
    reward: np.ndarray
    n_pages: int
    n_actions: int
    empty_action: int | None = None

    @property
    def n_sessions(self) -> int:
        return int(self.session.max()) + 1 if len(self.session) else 0

    def sessions(self, start: int, stop: int) -> Logs:
        """The rows of sessions ``start..stop-1`` (renumbered from 0)."""
        lo, hi = np.searchsorted(self.session, [start, stop])
        sl = slice(lo, hi)
        return Logs(
            self.session[sl] - start,
            self.step[sl],
            self.state[sl],
            self.action[sl],
            self.propensity[sl],
            None if self.position_propensity is None else self.position_propensity[sl],
            self.landed_position[sl],
            self.next_state[sl],
            self.reward[sl],
            self.n_pages,
            self.n_actions,
            self.empty_action,
        )


@torch.no_grad()
def log_policy(
    core: SiteCore,
    logging_probs: torch.Tensor | np.ndarray,
    n_sessions: int,
    seed: int,
    *,
    first_step_only: bool = False,
) -> Logs:
    """Play a logging policy in the core and log every decision with its propensity.

    Args:
        core: The world (its ``B`` visitor slots play sessions side by side).
        logging_probs: Action probabilities per current page, ``(P, A)``; for slates each
            position draws from it (or from its own table, ``(k, P, A)``) independently (a
            factored logging policy, so ``position_propensity`` is exact and the slate's
            propensity is their product; a repeated page shows nothing at its lower
            position, as in the env).
        n_sessions: Sessions to log. Each slot plays ``ceil(n / B)`` sessions from its start
            and the first ``n`` by (slot, index) are kept: a choice that does not depend on
            how long a session is (no length bias).
        seed: Seeds the core and the logging policy's draws.
        first_step_only: Log the first decision of each session only (one-step logs: a
            contextual bandit whose contexts are the entry pages).
    """
    k = core.slate_size
    mu = torch.as_tensor(logging_probs, dtype=torch.float64, device=core.device)
    if mu.ndim == 2:
        mu = mu.expand(k, -1, -1)
    if mu.shape != (k, core.n_pages, core.n_actions) or bool((mu < 0).any()):
        raise DataError(
            f"logging probabilities must be (P, A) or (k, P, A) with k = {k}, P = "
            f"{core.n_pages}, A = {core.n_actions}, all >= 0"
        )
    mu = mu / mu.sum(2, keepdim=True)
    cdf = mu.cumsum(2)
    gen = torch.Generator(device=core.device).manual_seed(int(seed) + 7919)
    n = int(n_sessions)
    if first_step_only:
        core.capacity = min(n, 65_536)
    obs = core.reset(seed)
    b = core.n_visitors
    quota = math.ceil(n / b)
    slot = torch.arange(b, device=core.device)
    count = torch.zeros(b, dtype=torch.long, device=core.device)
    step = torch.zeros(b, dtype=torch.long, device=core.device)
    parts: list[dict[str, torch.Tensor]] = []
    while True:
        s = obs[:, -1]
        u = torch.rand(len(s), k, generator=gen, device=core.device, dtype=torch.float64)
        rows = cdf[:, s].transpose(0, 1).contiguous()  # (B, k, A)
        a = torch.searchsorted(rows, (u[:, :, None] * rows[:, :, -1:]).contiguous(), right=True)
        a = a[:, :, 0].clamp(max=core.n_actions - 1)
        positions = torch.arange(k, device=core.device)[None, :]
        pos_prop = mu[positions, s[:, None], a]  # (B, k)
        r = core.step(a if k > 1 else a[:, 0])
        live = count < quota
        parts.append(
            {
                "session": (slot * quota + count)[live],
                "step": step[live],
                "state": s[live],
                "action": a[live],
                "pos_prop": pos_prop[live],
                "landed_position": (
                    r.position if r.position is not None else r.followed.long() - 1
                )[live],
                "next": r.landed[live],
                "reward": r.reward.double()[live],
            }
        )
        ended = r.terminated | r.truncated
        if first_step_only:
            ended = torch.ones_like(ended)
        count += ended.long()
        step = torch.where(ended, torch.zeros_like(step), step + 1)
        obs = r.obs
        if first_step_only:
            obs = core.reset(None)  # fresh entries: only first decisions are logged
        if not bool((count < quota).any()):
            break
    cat = {key: torch.cat([p[key] for p in parts]).cpu().numpy() for key in parts[0]}
    keep = cat["session"] < n
    order = np.lexsort((cat["step"][keep], cat["session"][keep]))
    pick = {key: v[keep][order] for key, v in cat.items()}
    if k == 1:
        # a single page's "followed" flag: landed on it; -1 otherwise
        pick["landed_position"] = np.where(pick["landed_position"] >= 0, 0, -1)
    empty = np.flatnonzero(core.action_pages.cpu().numpy() < 0)
    return Logs(
        session=pick["session"].astype(np.int64),
        step=pick["step"].astype(np.int64),
        state=pick["state"].astype(np.int64),
        action=pick["action"].astype(np.int64),
        propensity=pick["pos_prop"].prod(axis=1),
        position_propensity=pick["pos_prop"],
        landed_position=pick["landed_position"].astype(np.int64),
        next_state=pick["next"].astype(np.int64),
        reward=pick["reward"],
        n_pages=core.n_pages,
        n_actions=core.n_actions,
        empty_action=int(empty[0]) if len(empty) else None,
    )


# ---- Parquet ----------------------------------------------------------------------------------


def write_logs(logs: Logs, path: str | Path, pages: list[str], actions: list[str | None]) -> Path:
    """Write ``logs`` in the documented schema (atomically: a temp file, then a rename).

    Args:
        pages: Page name of every page id, ``(P,)``.
        actions: Name of what each action shows (a page, or a group), None for "nothing".
    """
    path = Path(path)
    names = np.asarray([*pages, EXIT], dtype=object)
    act = np.asarray(actions, dtype=object)
    slates = act[logs.action]  # (n, k)
    table = pa.table(
        {
            "session_id": pa.array(logs.session),
            "step": pa.array(logs.step),
            "page": pa.array(names[logs.state], type=pa.string()),
            "slate": pa.array(slates.tolist(), type=pa.list_(pa.string())),
            "propensity": pa.array(logs.propensity),
            "position_propensity": pa.array(
                (
                    logs.position_propensity
                    if logs.position_propensity is not None
                    else np.full(logs.action.shape, np.nan)
                ).tolist(),
                type=pa.list_(pa.float64()),
            ),
            "clicked_position": pa.array(logs.landed_position),
            "next_page": pa.array(names[logs.next_state], type=pa.string()),
            "reward": pa.array(logs.reward),
        }
    )
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def read_logs(path: str | Path, pages: list[str], actions: list[str | None]) -> Logs:
    """Read logs in the documented schema, mapping names to the site's page and action ids.

    Raises:
        DataError: A missing column (``propensity`` included: logs without propensities cannot
            be used for OPE, and the message says how to get them), propensities outside
            (0, 1], an unknown page or action, slates of different lengths, a session whose
            steps do not run 0, 1, 2, ... (naming the session), a ``clicked_position`` that is
            not the position of ``next_page`` in the slate; naming the file, the first bad row
            and the column.
    """
    file = str(path)
    df = read_parquet(path)
    for col in REQUIRED:
        if col not in df.columns:
            if col == "propensity":
                raise DataError(
                    "the logs have no propensities: off-policy estimates need, for every "
                    "decision, the probability the logging policy had of showing what it showed. "
                    "Log it when serving (e.g. the sampling probability of a softmax or "
                    "epsilon-greedy recommender) or rerun an A/B test with a randomised policy; "
                    "a deterministic policy's logs cannot be reweighted (docs/ope.md)",
                    file=file,
                    column=col,
                )
            raise DataError(
                f"missing column; the logs schema (docs/ope.md) needs {list(REQUIRED)}",
                file=file,
                column=col,
            )
    prop = df["propensity"].to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~((prop > 0) & (prop <= 1))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"propensity must be in (0, 1], got {prop[row]!r}: a decision the logging policy "
            "could not have made cannot be reweighted",
            file=file,
            row=row,
            column="propensity",
        )
    page_id = {p: i for i, p in enumerate(pages)}
    next_id = {**page_id, EXIT: len(pages)}
    action_id = {a: i for i, a in enumerate(actions)}

    page_actions = {a for a in actions if a is not None} <= set(pages)

    def lookup(values, table: dict, column: str) -> np.ndarray:
        out = np.fromiter((table.get(v, -1) for v in values), dtype=np.int64, count=len(values))
        if (out < 0).any():
            i = int(np.flatnonzero(out < 0)[0])
            row = i // max(len(values) // max(len(df), 1), 1)  # a slate entry: its row
            raise DataError(
                f"unknown value {values[i]!r}: not a {column} of this site "
                f"(logs must use the prepared data's page names){_level_hint(values[i])}",
                file=file,
                row=row,
                column=column,
            )
        return out

    def _level_hint(value: object) -> str:
        """Which env settings a slate entry the env does not know points to."""
        if page_actions and value not in page_id:
            return (
                "; this env recommends pages (action_level=page): logs whose slates name page "
                "groups were made with action_level=group, so pass the --env the logs were "
                "made with (e.g. --env action_level=group history_len=1)"
            )
        if not page_actions and value in page_id:
            return (
                "; it is a page, but this env recommends page groups: pass the --env the logs "
                "were made with (e.g. --env action_level=page)"
            )
        return ""

    slates = df["slate"].tolist()
    lengths = np.fromiter((len(s) if s is not None else -1 for s in slates), dtype=np.int64)
    if (len(lengths) and (lengths != lengths[0]).any()) or (len(lengths) and lengths[0] < 1):
        row = int(np.flatnonzero(lengths != lengths[0])[0]) if (lengths != lengths[0]).any() else 0
        raise DataError(
            "every slate must list the same number of positions (null for an empty one)",
            file=file,
            row=row,
            column="slate",
        )
    k = int(lengths[0]) if len(lengths) else 1
    flat = [x for s in slates for x in s]
    action = lookup(flat, action_id, "slate").reshape(-1, k)
    pos_prop = None
    if "position_propensity" in df.columns:
        pp = np.asarray(
            [
                list(x) if x is not None else [np.nan] * k
                for x in df["position_propensity"].tolist()
            ],
            dtype=np.float64,
        )
        pos_prop = None if np.isnan(pp).any() else pp
    sessions = pd.factorize(df["session_id"])[0].astype(np.int64)
    step = df["step"].to_numpy(dtype=np.int64)
    order = np.lexsort((step, sessions))
    _check_steps(df["session_id"].to_numpy(), sessions, step, order, file)
    next_state = lookup(df["next_page"].tolist(), next_id, "next_page")
    landed = _landed_position(df, slates, k, file)
    logs = Logs(
        session=sessions,
        step=step,
        state=lookup(df["page"].tolist(), page_id, "page"),
        action=action,
        propensity=prop,
        position_propensity=pos_prop,
        landed_position=landed,
        next_state=next_state,
        reward=df["reward"].to_numpy(dtype=np.float64),
        n_pages=len(pages),
        n_actions=len(actions),
        empty_action=action_id.get(None),
    )
    if not (order == np.arange(len(order))).all():  # sort by session, then step
        for name in (
            "session",
            "step",
            "state",
            "action",
            "propensity",
            "landed_position",
            "next_state",
            "reward",
        ):
            setattr(logs, name, getattr(logs, name)[order])
        if logs.position_propensity is not None:
            logs.position_propensity = logs.position_propensity[order]
    return logs


def _check_steps(
    ids: np.ndarray, sessions: np.ndarray, step: np.ndarray, order: np.ndarray, file: str
) -> None:
    """Refuse a session whose steps are not 0, 1, 2, ... (no gap, no repeat), naming it: the
    session estimators index decisions by step."""
    s, t = sessions[order], step[order]
    start = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    first = np.repeat(start, np.diff(np.r_[start, len(s)]))
    bad = t != np.arange(len(s)) - first
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        row = int(order[i])
        mine = np.sort(step[sessions == s[i]])
        sid = ids[row].item() if isinstance(ids[row], np.generic) else ids[row]
        shown = ", ".join(str(x) for x in mine[:8]) + (", ..." if len(mine) > 8 else "")
        raise DataError(
            f"session {sid!r} has steps {shown}: each session's steps must run 0, 1, 2, "
            "... (0-based, no gap, no repeat)",
            file=file,
            row=row,
            column="step",
        )


def _landed_position(df: pd.DataFrame, slates: list, k: int, file: str) -> np.ndarray:
    """``clicked_position`` per row: the position of the shown page the visitor went to. With
    slates (``k > 1``, page actions) it follows from ``slate`` and ``next_page``: derived when
    the column is absent, refused where it disagrees (a position that counted clicks only
    would silently mean something else to ``position_ips``)."""
    given = (
        df["clicked_position"].to_numpy(dtype=np.int64)
        if "clicked_position" in df.columns
        else None
    )
    if given is not None:
        bad = (given < -1) | (given >= k)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"clicked_position must be -1 or a position 0..{k - 1}, got {int(given[row])}",
                file=file,
                row=row,
                column="clicked_position",
            )
    if k == 1:
        return given if given is not None else np.full(len(df), -1, dtype=np.int64)
    shown = np.asarray(slates, dtype=object).reshape(-1, k)
    hit = shown == df["next_page"].to_numpy(dtype=object)[:, None]
    derived = np.where(hit.any(1), hit.argmax(1), -1).astype(np.int64)
    if given is not None and (given != derived).any():
        row = int(np.flatnonzero(given != derived)[0])
        raise DataError(
            f"clicked_position must be the position of the shown page the visitor went to "
            f"(next_page {df['next_page'].iloc[row]!r}), whether or not the slate caused the "
            f"move: {int(derived[row])} here (-1: not shown), got {int(given[row])}; leave the "
            "column out to have it derived from slate and next_page",
            file=file,
            row=row,
            column="clicked_position",
        )
    return derived
