"""The batched simulator core: B visitors of one website, advanced together in torch.

One step for every visitor: the agent recommends a page (or nothing), the click model turns the
visitor's organic next-page distribution into the distribution under that recommendation, the
next page is drawn, the reward of the page landed on is paid, and visitors who left (``EXIT``)
or reached ``max_steps`` are replaced in place by new arrivals. All randomness comes from one
``torch.Generator`` seeded by :meth:`SiteCore.reset`, so a seed fixes every draw; the first reset
without a seed draws one from the operating system (Gymnasium's convention), so unseeded
simulators differ, and :attr:`SiteCore.seed` tells which seed was used.

**Observation** of a visitor: the ids of the last ``history_len`` pages viewed, oldest first,
shape ``(history_len,)`` int64; positions before the session's first page hold ``P`` (no
page). The visitor's current page is the last entry. In a *terminal* observation the visitor
has left, shown by a last entry of ``P`` (``EXIT``) after the pages seen.

Two optional columns (``observe_entry_page``, ``observe_position``) come *before* the pages, so
that the last entry stays the current page for every consumer: the session's entry page (the
first page viewed, which a window of ``K`` pages loses on a long visit) and the position in
the visit (pages viewed so far minus one: 0 on the entry page; ``max_steps`` at the end of a
truncated session), which the window cannot count beyond ``K``. :attr:`SiteCore.extras`
names them in order, :func:`observation_space` gives the space, and
:meth:`SiteCore.observe_pages` builds an observation from a page list (the web app's).

**Action**: an index into ``action_pages`` (the recommendable page ids), or with
``page_groups`` a page group (every page of the group is recommended at once: the click
model's ``apply_set``); with ``allow_no_recommendation`` one more action, the last, shows
nothing. Recommending the page the visitor is on shows nothing too (the organic next page,
never ``followed``; in a slate, that position shows nothing), so that a world with reloads
cannot be farmed by boosting them; the tabular MDP (:mod:`agents.tabular`) agrees. A page group
is recommended as it is, even when it holds the current page: it shows its other pages too.

**Action mask** (:meth:`SiteCore.action_mask`, for masked policies such as sb3-contrib's
``MaskablePPO``): recommending the page the visitor is on is invalid, and on a large site with
``candidates`` so is any page outside the current page's candidate set; "show nothing" and page
groups stay valid.

**Slates** (``slate_model``, ``env.slate_size = k > 1``): an action is ``k`` indices into
``action_pages``, one per position, top first (``(B, k)``); the "nothing" action or a page
already shown at an earlier position shows nothing at its position. The slate choice model
(:mod:`envs.slate`) says which shown page, if any, the visitor follows. Slates need page
actions (no page groups, no ``candidates``). Without ``slate_model`` the single-page code path
below runs unchanged.

The single Gymnasium env, the Gymnasium vector env and the SB3 VecEnv are thin front ends over
this class; a B=1 core replays the single env exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from clickstream import checks
from clickstream.errors import ConfigError, ModelError
from envs.click_model import NO_RECOMMENDATION, ClickModel
from envs.dynamics import Dynamics, sample_categorical
from envs.slate import SlateModel, dedupe

OBSERVATION_EXTRAS = ("entry_page", "position")
"""The optional observation columns, in the order they come before the pages."""


def check_seed(seed: object, key: str = "seed") -> int | None:
    """``seed`` as a Python int, or ``None``; a ``ConfigError`` naming ``key`` otherwise:
    :func:`clickstream.checks.seed` up to :data:`~clickstream.checks.TORCH_SEED_MAX`, what a
    ``torch.Generator`` takes without wrapping round (a whole number in ``[0, 2**64)``)."""
    return checks.seed(key, seed, checks.TORCH_SEED_MAX, optional=True)


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device of ``device`` (``auto``: CUDA when available, else CPU); a
    ``ConfigError`` for a name torch does not know or a CUDA device this machine lacks."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device must be cpu, cuda, cuda:N or auto, got {device!r}") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={device} asked for, but CUDA is not available on this machine: "
                "use device=cpu or device=auto"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device={device} asked for, but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s): use cuda:0 up to "
                f"cuda:{torch.cuda.device_count() - 1}, cpu or auto"
            )
    return resolved


def entropy_seed() -> int:
    """A fresh seed in ``[0, 2**64)`` from the operating system's entropy."""
    return int(np.random.SeedSequence().generate_state(1, dtype=np.uint64)[0])


def own_page_shows_nothing(recommended: torch.Tensor, pages: torch.Tensor) -> torch.Tensor:
    """Recommended page ids with ``NO_RECOMMENDATION`` where one is the visitor's own page
    (broadcast against ``pages``): recommending the page she is on shows nothing. The one rule
    the simulator and the tabular MDP (:mod:`agents.tabular`) share."""
    return torch.where(recommended == pages, NO_RECOMMENDATION, recommended)


def action_mask(
    pages: torch.Tensor,
    action_pages: torch.Tensor,
    n_pages: int,
    candidates: torch.Tensor | None = None,
    exclude_current: bool = True,
) -> torch.Tensor:
    """Valid actions of visitors on ``pages``, ``(B, A)`` bool, without a loop over visitors.

    An action is invalid when it recommends the visitor's current page (``exclude_current``)
    or, with ``candidates``, a page outside the current page's candidate set. The "show
    nothing" action (page id :data:`~envs.click_model.NO_RECOMMENDATION`) is always valid. A
    current page of ``n_pages`` (no page: ``EXIT`` or before the first page) masks nothing. A
    row that would have no valid action (no "nothing" action, no candidate but the current
    page) keeps every action but the current page, and if that is none too, every action:
    a masked policy needs at least one action to choose.

    Args:
        pages: Current page of each visitor, ``(B,)`` (``n_pages``: none).
        action_pages: Page id of each action, ``(A,)`` (``NO_RECOMMENDATION``: shows nothing).
        n_pages: P.
        candidates: The pages each page can lead to, ``(P, k)`` padded with -1, or ``None``.
        exclude_current: Mask the current page.
    """
    pages = pages.to(torch.long)
    b, n_actions = len(pages), len(action_pages)
    on_page = pages < n_pages
    is_page = action_pages >= 0
    # the action index of each page id (n_actions: none, a spare column that is cut off), so
    # that every step below is a scatter of (B,) or (B, k) entries, never a (B, A) comparison
    index = torch.full((n_pages + 1,), n_actions, dtype=torch.long, device=pages.device)
    index[action_pages[is_page]] = torch.nonzero(is_page)[:, 0]
    current = torch.where(on_page, index[pages.clamp(0, n_pages)], n_actions)[:, None]
    if candidates is None:
        valid = torch.ones(b, n_actions + 1, dtype=torch.bool, device=pages.device)
    else:
        cand = candidates[pages.clamp(max=n_pages - 1)]
        cols = torch.where(cand >= 0, index[cand.clamp(min=0)], n_actions)
        valid = torch.zeros(b, n_actions + 1, dtype=torch.bool, device=pages.device)
        valid.scatter_(1, cols, True)
        if not bool(on_page.all()):
            valid[~on_page] = True
    if exclude_current:
        valid.scatter_(1, current, False)
    valid = valid[:, :n_actions]
    nothing = torch.nonzero(~is_page)[:, 0]
    if len(nothing):  # "show nothing" is always valid, so no row is empty
        return valid.index_fill_(1, nothing, True)
    empty = ~valid.any(1)
    if bool(empty.any()):  # all but the current page, or else everything
        rows = torch.ones(int(empty.sum()), n_actions + 1, dtype=torch.bool, device=pages.device)
        rows.scatter_(1, current[empty], False)
        valid[empty] = rows[:, :n_actions]
        valid[~valid.any(1)] = True
    return valid


@dataclass
class StepResult:
    """What :meth:`SiteCore.step` returns, one entry per visitor (all torch, on the device).

    Attributes:
        obs: Observations after the step, ``(B, len(extras) + K)``; for visitors whose
            session ended, the first observation of the visitor who replaced them.
        reward: Reward of the page landed on, ``(B,)`` (0 for ``EXIT``).
        terminated: The visitor left (``EXIT``), ``(B,)``.
        truncated: The visitor reached ``max_steps`` without leaving, ``(B,)``.
        final_obs: Observations at the end of the finished sessions (rows of
            visitors still in session repeat ``obs``).
        landed: Page landed on (``P`` = ``EXIT``), ``(B,)``.
        followed: The visitor landed on the recommended page, ``(B,)``.
        position: Slates only: the position (0 = top) of the page landed on in the slate,
            -1 when it was not shown, ``(B,)``; ``None`` for single recommendations.
    """

    obs: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    final_obs: torch.Tensor
    landed: torch.Tensor
    followed: torch.Tensor
    position: torch.Tensor | None = None


class SiteCore:
    """B simulated visitors of one site.

    Args:
        dynamics: Organic visitor behaviour (GRU, Markov or the true model).
        click_model: How a recommendation changes the next page.
        reward_per_page: Reward of landing on each page, shape ``(P + 1,)`` (``EXIT`` last, 0).
        n_visitors: B.
        action_pages: Recommendable page ids, shape ``(A,)`` (default: every page).
        allow_no_recommendation: Add a last action that shows nothing.
        max_steps: Steps after which a session is truncated.
        history_len: K, pages in an observation.
        page_groups: Recommend page groups instead of pages: the group id of every page,
            shape ``(P,)``; the actions are the groups ``0..G-1`` (``action_pages`` unused).
        candidates: Large sites: the pages each page can lead to, ``(P, k)`` page ids padded
            with -1 (e.g. :func:`envs.dynamics.top_successors`). Each step then scores only
            those ``k`` pages, ``EXIT`` and the recommended page, renormalised among them,
            instead of all ``P + 1`` outcomes: the mass of the other pages is dropped.
        device: Torch device of every tensor.
        slate_model: Show slates of ``slate_model.slate_size`` positions chosen among by this
            model (:mod:`envs.slate`); ``None``: one recommendation per step.
        observe_entry_page: Observations start with the session's entry page.
        observe_position: Observations carry the position in the visit (after the entry page
            when both are on): steps taken so far, ``0..max_steps``.
    """

    def __init__(
        self,
        dynamics: Dynamics,
        click_model: ClickModel,
        reward_per_page: torch.Tensor | np.ndarray,
        n_visitors: int = 1,
        *,
        action_pages: np.ndarray | None = None,
        allow_no_recommendation: bool = True,
        max_steps: int = 50,
        history_len: int = 4,
        page_groups: np.ndarray | None = None,
        candidates: np.ndarray | None = None,
        device: str | torch.device = "cpu",
        slate_model: SlateModel | None = None,
        observe_entry_page: bool = False,
        observe_position: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        self.dynamics = dynamics.to(self.device)
        self.click_model = click_model
        p = dynamics.n_pages
        reward = torch.as_tensor(reward_per_page, dtype=torch.float32, device=self.device)
        if reward.shape != (p + 1,):
            raise ModelError(
                f"reward_per_page must have shape ({p + 1},), got {tuple(reward.shape)}"
            )
        n_visitors = checks.whole("n_visitors", n_visitors, 1, floats=False)
        max_steps = checks.whole("max_steps", max_steps, 1, floats=False)
        history_len = checks.whole("history_len", history_len, 1, floats=False)
        allow_no_recommendation = checks.flag("allow_no_recommendation", allow_no_recommendation)
        observe_entry_page = checks.flag("observe_entry_page", observe_entry_page)
        observe_position = checks.flag("observe_position", observe_position)
        self.page_groups = None
        if page_groups is not None:
            groups = np.asarray(page_groups, dtype=np.int64)
            if groups.shape != (p,) or groups.min() < 0:
                raise ModelError(f"page_groups must be a group id >= 0 per page, shape ({p},)")
            # EXIT belongs to no group
            self.page_groups = torch.as_tensor(np.r_[groups, -2], device=self.device)
            pages = np.arange(int(groups.max()) + 1)
        else:
            pages = (
                np.arange(p) if action_pages is None else np.asarray(action_pages, dtype=np.int64)
            )
            if len(pages) == 0 or pages.min() < 0 or pages.max() >= p:
                raise ModelError(f"action_pages must be page ids in [0, {p})")
        if allow_no_recommendation:
            pages = np.r_[pages, NO_RECOMMENDATION]
        self.reward_per_page = reward.clone()
        self.reward_per_page[p] = 0.0  # leaving never pays
        self.action_pages = torch.as_tensor(pages, dtype=torch.long, device=self.device)
        self.n_pages, self.n_visitors = p, n_visitors
        self.capacity = self.n_visitors  # what reset() restores after keep()
        self.max_steps, self.history_len = max_steps, history_len
        on = {"entry_page": observe_entry_page, "position": observe_position}
        self.extras = tuple(name for name in OBSERVATION_EXTRAS if on[name])
        self.candidates = None
        if candidates is not None:
            cand = np.asarray(candidates, dtype=np.int64)
            if cand.ndim != 2 or cand.shape[0] != p or cand.min() < -1 or cand.max() >= p:
                raise ModelError(f"candidates must be page ids (or -1), shape ({p}, k)")
            self.candidates = torch.as_tensor(cand, device=self.device)
        self._outcome_ids = torch.arange(p + 1, device=self.device)
        self.generator = torch.Generator(device=self.device)
        self.seed: int | None = None  # the last seed given to reset() (or drawn by it)
        self.expected_reward = False
        self._started = False
        self.slate_model = slate_model
        self.slate_size = 1 if slate_model is None else int(slate_model.slate_size)
        if slate_model is not None and (page_groups is not None or candidates is not None):
            raise ConfigError(
                "env.slate_size > 1 needs page actions on all pages: set env.action_level=page "
                "and env.top_k=null"
            )

    @property
    def n_actions(self) -> int:
        return len(self.action_pages)

    @property
    def obs_nvec(self) -> np.ndarray:
        """The number of values of each observation column, ``(len(extras) + K,)``: ``P + 1``
        for the entry page and each page, ``max_steps + 1`` for the position."""
        sizes = {"entry_page": self.n_pages + 1, "position": self.max_steps + 1}
        extras = [sizes[name] for name in self.extras]
        return np.array(extras + [self.n_pages + 1] * self.history_len, dtype=np.int64)

    def _observe(self, history: torch.Tensor) -> torch.Tensor:
        """The observations ``(B, len(extras) + K)`` of visitors with page windows
        ``history`` ``(B, K)``, from their entry pages and step counts now."""
        if not self.extras:
            return history.clone()
        columns = {"entry_page": self.entry, "position": self.steps}
        return torch.cat([torch.stack([columns[n] for n in self.extras], 1), history], dim=1)

    def observe_pages(self, pages: Sequence[int]) -> np.ndarray:
        """The observation ``(len(extras) + K,)`` int64 of a visitor who has viewed the page
        ids ``pages`` so far (entry page first, current page last), as the simulator would
        give it: the last ``K`` pages left-padded with ``P``, and the extras (the position
        capped at ``max_steps``).

        Raises:
            ModelError: No page, or an id outside ``[0, P)``.
        """
        ids = [int(p) for p in pages]
        if not ids or min(ids) < 0 or max(ids) >= self.n_pages:
            raise ModelError(f"an observation needs page ids in [0, {self.n_pages}), got {ids[:5]}")
        window = ids[-self.history_len :]
        values = {"entry_page": ids[0], "position": min(len(ids) - 1, self.max_steps)}
        padded = [self.n_pages] * (self.history_len - len(window)) + window
        return np.array([values[n] for n in self.extras] + padded, dtype=np.int64)

    # ---- state -------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reseed (when ``seed`` is given) and start B new visitors; returns their
        observations ``(B, len(extras) + K)``. The first reset without a seed seeds from the
        operating system's entropy (kept in :attr:`seed`); later ones go on drawing.

        Raises:
            ConfigError: ``seed`` is not an integer in ``[0, 2**64)``.
        """
        seed = check_seed(seed)
        if seed is None and self.seed is None:  # never seeded: a fixed seed would make
            seed = entropy_seed()  # every unseeded simulator replay the same visitors
        if seed is not None:
            self.generator.manual_seed(seed)
            self.seed = seed
        b = self.n_visitors = self.capacity
        self.page = torch.empty(b, dtype=torch.long, device=self.device)
        self.history = torch.full(
            (b, self.history_len), self.n_pages, dtype=torch.long, device=self.device
        )
        self.steps = torch.zeros(b, dtype=torch.long, device=self.device)
        self.state = torch.zeros(b, self.dynamics.state_dim, device=self.device)
        self.entry = torch.empty(b, dtype=torch.long, device=self.device)
        self._arrive(torch.ones(b, dtype=torch.bool, device=self.device))
        self._started = True
        return self._observe(self.history)

    def keep(self, mask: torch.Tensor) -> None:
        """Drop the visitors not in ``mask`` ``(B,)``: B shrinks to ``mask.sum()`` (at least
        one is kept). Lets an evaluation stop simulating visitor slots that have played their
        share of sessions instead of stepping them idle until the last slot is done."""
        if not self._started:
            raise ModelError("call reset() before keep()")
        idx = mask.nonzero()[:, 0]
        if len(idx) == 0:
            raise ModelError("keep() needs at least one visitor")
        self.page, self.history = self.page[idx], self.history[idx]
        self.steps, self.state = self.steps[idx], self.state[idx]
        self.entry = self.entry[idx]
        self.n_visitors = len(idx)

    def _arrive(self, mask: torch.Tensor) -> None:
        """Replace the visitors in ``mask`` ``(B,)`` by new arrivals."""
        n = int(mask.sum())
        if n == 0:
            return
        pages, state = self.dynamics.start(n, self.generator)
        idx = mask.nonzero()[:, 0]
        self.page[idx] = pages
        self.state[idx] = state.to(self.state.dtype)
        self.steps[idx] = 0
        self.history[idx] = self.n_pages
        self.history[idx, -1] = pages
        self.entry[idx] = pages

    def action_mask(self, exclude_current: bool = True) -> torch.Tensor:
        """Valid actions of the current visitors, ``(B, A)`` bool (:func:`action_mask`): not
        the page a visitor is on, within its candidate set on a large site (``candidates``);
        "show nothing" always. Page groups (``page_groups``) are all valid.

        Raises:
            ModelError: Before :meth:`reset`, or with slates (a slate has one mask per
                position, which this does not give).
        """
        if not self._started:
            raise ModelError("call reset() before action_mask()")
        if self.slate_model is not None:
            raise ModelError("action masks are for single recommendations (env.slate_size=1)")
        if self.page_groups is not None:
            return torch.ones(self.n_visitors, self.n_actions, dtype=torch.bool, device=self.device)
        return action_mask(
            self.page, self.action_pages, self.n_pages, self.candidates, exclude_current
        )

    # ---- dynamics ----------------------------------------------------------------------

    def shown_mask(
        self,
        actions: torch.Tensor | np.ndarray | list[int],
        pages: torch.Tensor | np.ndarray | list[int] | None = None,
    ) -> torch.Tensor:
        """The pages each action shows, ``(n, P + 1)`` bool for actions ``(n,)``: its page, the
        pages of its group (group actions), or none ("show nothing"); ``EXIT`` never. With
        ``pages`` ``(n,)``, the visitors' current pages: a page action recommending its row's
        own page shows nothing (as in :meth:`step`).

        The one definition of "shown" that the click model, the ``followed`` flag, the
        tabular MDP, the heuristics and the web app share.
        """
        a = torch.as_tensor(actions, dtype=torch.long, device=self.device).reshape(-1)
        if pages is None:
            return self._shown(self.action_pages[a])
        pages = torch.as_tensor(pages, dtype=torch.long, device=self.device).reshape(-1)
        return self._shown(self._recommended(a, pages))

    def _recommended(self, a: torch.Tensor, pages: torch.Tensor | None = None) -> torch.Tensor:
        """What actions ``a`` ``(B,)`` recommend to visitors on ``pages`` (default: the current
        visitors'): the action's page, or ``NO_RECOMMENDATION`` where that is the visitor's own
        page (it shows nothing); group ids as they are (a group shows its other pages too)."""
        recommended = self.action_pages[a]
        if self.page_groups is not None:
            return recommended
        return own_page_shows_nothing(recommended, self.page if pages is None else pages)

    def _shown(self, targets: torch.Tensor, outcomes: torch.Tensor | None = None) -> torch.Tensor:
        """Whether outcomes are shown by the recommendations ``targets`` ``(B,)`` (page or group
        ids, -1: nothing). ``outcomes``: ``None`` for all ``P + 1`` outcomes (``(B, P + 1)``
        out), ids ``(B, M)`` with -1 as padding (``(B, M)`` out), or one valid id per visitor
        ``(B,)`` (``(B,)`` out)."""
        if outcomes is None:  # broadcast against every outcome: no (B, P + 1) gather
            labels = self.page_groups if self.page_groups is not None else self._outcome_ids
            return (labels[None, :] == targets[:, None]) & (targets >= 0)[:, None]
        if outcomes.ndim == 1:
            labels = outcomes if self.page_groups is None else self.page_groups[outcomes]
            return (labels == targets) & (targets >= 0)
        if self.page_groups is None:  # a padding -1 only equals "nothing", excluded below
            hit = outcomes == targets[:, None]
        else:
            hit = (self.page_groups[outcomes.clamp(min=0)] == targets[:, None]) & (outcomes >= 0)
        return hit & (targets >= 0)[:, None]

    def _followed(self, landed: torch.Tensor, recommended: torch.Tensor) -> torch.Tensor:
        """The visitor landed on the recommended page (or a page of the recommended group)."""
        return self._shown(recommended, landed)

    def next_page_probs(self, actions: torch.Tensor | None = None) -> torch.Tensor:
        """Next-page distributions ``(B, P + 1)`` of the current visitors under ``actions``."""
        if actions is None:
            recommended = torch.full_like(self.page, NO_RECOMMENDATION)
        else:
            recommended = self._recommended(self._actions(actions))
        ids, probs = self._outcome_probs(recommended)
        if ids is None:
            return probs
        dense = torch.zeros(len(ids), self.n_pages + 1, device=self.device, dtype=probs.dtype)
        return dense.scatter_add_(1, ids.clamp(min=0), probs * (ids >= 0))

    def _outcome_probs(self, recommended: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Outcome ids ``(B, M)`` (``None``: all pages) and their probabilities ``(B, M)``."""
        if self.page_groups is not None:
            return self._group_outcome_probs(recommended)
        if self.candidates is None:
            organic = self.dynamics.next_probs(self.page, self.state)
            return None, self.click_model.apply(organic, recommended)
        # candidate mode: the page's k successors, the recommended page, EXIT (last)
        cand = self.candidates[self.page]
        k = cand.shape[1]
        shown = recommended >= 0
        in_cand = (cand == recommended[:, None]) & shown[:, None]
        listed = in_cand.any(1)
        rec_col = torch.where(shown & ~listed, recommended, -1)
        exit_col = torch.full_like(recommended, self.n_pages)
        ids = torch.cat([cand, rec_col[:, None], exit_col[:, None]], dim=1)
        rec_pos = torch.where(listed, in_cand.long().argmax(1), torch.where(shown, k, -1))
        logits = self.dynamics.log_scores(self.page, self.state, ids.clamp(min=0))
        organic = torch.softmax(logits.masked_fill(ids < 0, float("-inf")), dim=1)
        return ids, self.click_model.apply(organic, rec_pos)

    def _group_outcome_probs(self, group: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Like :meth:`_outcome_probs` when a whole page group is recommended."""
        if self.candidates is None:
            ids = None
            organic = self.dynamics.next_probs(self.page, self.state)
        else:  # the page's successors and EXIT; group pages beyond them stay out of reach
            cand = self.candidates[self.page]
            ids = torch.cat([cand, torch.full_like(cand[:, :1], self.n_pages)], dim=1)
            logits = self.dynamics.log_scores(self.page, self.state, ids.clamp(min=0))
            organic = torch.softmax(logits.masked_fill(ids < 0, float("-inf")), dim=1)
        return ids, self.click_model.apply_set(organic, self._shown(group, ids))

    def _actions(self, actions: torch.Tensor | np.ndarray | int) -> torch.Tensor:
        a = torch.as_tensor(actions, dtype=torch.long, device=self.device).reshape(-1)
        if a.shape[0] != self.n_visitors:
            raise ModelError(f"expected {self.n_visitors} actions, got {a.shape[0]}")
        if bool(((a < 0) | (a >= self.n_actions)).any()):
            raise ModelError(f"actions must lie in [0, {self.n_actions})")
        return a

    def step(self, actions: torch.Tensor | np.ndarray | int) -> StepResult:
        """Advance every visitor by one page view under the recommendations ``actions`` ``(B,)``
        (slates: ``(B, k)``)."""
        if not self._started:
            raise ModelError("call reset() before step()")
        if self.slate_model is not None:
            return self._slate_step(actions)
        a = self._actions(actions)
        recommended = self._recommended(a)  # the current page: nothing
        ids, probs = self._outcome_probs(recommended)
        landed = sample_categorical(probs, self.generator)
        if ids is not None:
            landed = ids.gather(1, landed[:, None])[:, 0]
        if self.expected_reward:  # E[reward | visitor, action]: same mean, less noise
            if ids is None:
                reward = probs @ self.reward_per_page.to(probs.dtype)
            else:
                values = self.reward_per_page[ids.clamp(min=0)] * (ids >= 0)
                reward = (probs * values).sum(dim=1)
            reward = reward.to(self.reward_per_page.dtype)
        else:
            reward = self.reward_per_page[landed]
        terminated, truncated, final_obs = self._move(landed)
        return StepResult(
            obs=self._observe(self.history),
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            final_obs=final_obs,
            landed=landed,
            followed=self._followed(landed, recommended),
        )

    def _move(self, landed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every visitor moves to the page she landed on ``(B,)``; those who left or reached
        ``max_steps`` are replaced by new arrivals. Returns ``terminated``, ``truncated`` and
        the observations before the replacement (``final_obs``)."""
        terminated = landed == self.n_pages
        self.steps += 1
        truncated = ~terminated & (self.steps >= self.max_steps)
        # everyone's history moves on (EXIT shows as P at the end of a terminal observation)
        self.history = torch.cat([self.history[:, 1:], landed[:, None]], dim=1)
        final_obs = self._observe(self.history)
        # everyone advances, without gathering the rows still in session: a visitor who
        # left stays on her page for this (wasted, harmless) update and is replaced below
        self.page = torch.where(terminated, self.page, landed)
        self.state = self.dynamics.advance(self.page, self.state)
        self._arrive(terminated | truncated)
        return terminated, truncated, final_obs

    # ---- slates ------------------------------------------------------------------------

    def slate_pages(
        self, actions: torch.Tensor | np.ndarray, pages: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The pages slates of action indices ``(n, k)`` show, ``(n, k)`` page ids, -1 where
        a position shows nothing ("nothing" action, a page shown higher up, or with ``pages``
        ``(n,)`` the page the visitor is on)."""
        a = torch.as_tensor(actions, dtype=torch.long, device=self.device)
        if a.ndim != 2 or a.shape[1] != self.slate_size:
            raise ModelError(f"slates must have shape (n, {self.slate_size}), got {tuple(a.shape)}")
        if bool(((a < 0) | (a >= self.n_actions)).any()):
            raise ModelError(f"slate actions must lie in [0, {self.n_actions})")
        return dedupe(self.action_pages[a], pages)

    def slate_probs(self, actions: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Next-page distributions ``(B, P + 1)`` of the current visitors under slates
        ``(B, k)``."""
        assert self.slate_model is not None
        organic = self.dynamics.next_probs(self.page, self.state)
        return self.slate_model.apply(organic, self.slate_pages(actions, self.page))

    def _slate_step(self, actions: torch.Tensor | np.ndarray | int) -> StepResult:
        a = torch.as_tensor(actions, dtype=torch.long, device=self.device)
        a = a.reshape(self.n_visitors, -1)
        if a.shape[1] == 1:  # one action per visitor (a single-page policy): shown at the top
            a = a.expand(-1, self.slate_size)  # the repeats below it show nothing
        slate = self.slate_pages(a, self.page)  # the visitor's own page shows nothing
        assert self.slate_model is not None
        organic = self.dynamics.next_probs(self.page, self.state)
        probs = self.slate_model.apply(organic, slate)
        landed = sample_categorical(probs, self.generator)
        if self.expected_reward:
            reward = (probs @ self.reward_per_page.to(probs.dtype)).to(self.reward_per_page.dtype)
        else:
            reward = self.reward_per_page[landed]
        terminated, truncated, final_obs = self._move(landed)
        hit = slate == landed[:, None]
        position = torch.where(hit.any(1), hit.long().argmax(1), torch.full_like(landed, -1))
        return StepResult(
            obs=self._observe(self.history),
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            final_obs=final_obs,
            landed=landed,
            followed=position >= 0,
            position=position,
        )
