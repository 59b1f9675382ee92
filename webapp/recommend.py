"""Recommendations for one visitor: a history of page paths in, the policy's top-k next pages out,
each with its follow probability and expected value under the learned visitor model.

**Pages.** A history is a list of page paths, oldest first. Each is matched (:class:`PageResolver`):

1. exactly, as a page of the run's vocabulary;
2. after the dataset's own normalisation (``meta.json``: lowercase, query and host stripped,
   ids collapsed, rewrite rules), so ``https://shop/Home/?utm=x`` finds ``/home``;
3. with ``unknown="map"`` (the default), by the dataset's page-group rules: to the group's
   folded page ``other:<group>`` when the dataset folded rare pages, else to the group's most
   viewed page; a page whose group is not in the run goes to the ``other`` group when the
   dataset has one;
4. otherwise it is dropped, and the answer says so in ``warnings``. With ``unknown="drop"``
   step 3 is skipped; with ``unknown="error"`` any page not found in 1-2 is a bad request.

A history entry that is not a non-empty string of printable characters (at most
:data:`MAX_PAGE_CHARS`) is malformed: a bad request, whatever ``unknown`` says; a page of the
run's own vocabulary is accepted as it is, whatever its length or characters.

**Recommendations.** The observation is the last ``history_len`` page ids (the env's, padded
with ``P``), after the entry page and the position in the visit when the env observes them,
as in the simulator. The policy scores every action (``action_scores``, higher is
better); "show nothing" and the current page are never recommended, nor are actions the policy
scores ``-inf``. Ties keep the lower action index, as the policy's own ``argmax`` does.

For each recommended page ``a`` (or page group), under the run's visitor model (its
``next_distribution``, :mod:`envs.visitors`: the GRU over the whole history; for a model of
visitor types, such as the latent-class world, the types' posterior given the history, each
type's row boosted apart, as in the simulator; first-order rows when the learned world has no
trained model):

* ``organic_probability``: ``p(a)``, the chance the visitor opens ``a`` next unprompted;
* ``follow_probability``: ``p'(a)``, the chance the next page is ``a`` once it is shown, where
  ``p'`` is the click model applied to ``p`` (the simulator's; a group: the sum over its pages);
  visitors who would have gone there anyway count, as in the simulator's ``followed`` flag;
* ``expected_value``: ``Σ_j p'(j) · r_j``, the expected reward (page value by default) of the
  next page view once ``a`` is shown; ``EXIT`` pays 0.

**Slates** (a run whose env has ``slate_size = k > 1``): the list starts with the policy's own
slate (its ``predict``, top position first; a slate policy's ranking, not only its scores), and
the first ``k`` recommendations are scored *together*, as the simulator shows them:
``slate_follow_probability`` is the chance the visitor follows that position under the slate
choice model (:mod:`envs.slate`: the position-biased MNL or the cascade), and the outcome's
``slate_expected_value`` the expected reward of the next page view with the whole slate shown.

**Path.** :meth:`Recommender.path` plays the policy as the simulator does (its best action,
"show nothing" included) and follows the most likely next page (``EXIT`` aside, whose
probability each step reports) for a few steps: the likeliest path, not the most valuable one.
It stops early at a page already on the path, or after a step where leaving the site is more
likely than the best next page (``exit_likelier``: most visitors end their visit there).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import torch

from agents.base import Policy
from clickstream.errors import DataError
from clickstream.pages import PageConfig, group_of, normalise_path
from clickstream.schema import OTHER_GROUP
from envs.sequences import Vocabulary
from envs.visitors import NextPage
from webapp.artefacts import RunArtefacts

MAX_PAGE_CHARS = 2048
"""Longest page path accepted in a history (URLs included)."""

UnknownMode = Literal["map", "drop", "error"]
UNKNOWN_MODES: tuple[str, ...] = ("map", "drop", "error")

CACHE_BYTES = 64 * 2**20
"""Memory for what is cached per history (its next-page distribution, and with few enough
actions every action's probabilities and value)."""

EVERY_ACTION_CELLS = 2**20
"""Largest ``A × (P + 1)`` table evaluated at once per history (8 MB of float64)."""


@dataclass(frozen=True)
class ResolvedPage:
    """How one history entry was read.

    Attributes:
        input: The entry as sent.
        page_id: The page it stands for, or ``None`` (dropped).
        how: ``exact``, ``normalised``, ``folded`` (to ``other:<group>``), ``group`` (to the
            group's most viewed page), ``other`` (to the ``other`` group) or ``dropped``.
        group: The page group the rules gave an unknown page (``None`` for known pages).
        why: Why a dropped page was dropped, in words (``""`` for the others).
    """

    input: str
    page_id: int | None
    how: str
    group: str | None = None
    why: str = ""


class PageResolver:
    """Maps page paths to the run's page ids (see the module docstring).

    Args:
        vocab: The run's pages and groups.
        top_page: Most viewed page id of each group, ``(G,)``.
        config: The dataset's page rules, or ``None`` (exact matches only).
    """

    def __init__(self, vocab: Vocabulary, top_page: np.ndarray, config: PageConfig | None):
        self.vocab = vocab
        self.index = {p: i for i, p in enumerate(vocab.pages)}
        self.group_index = {g: i for i, g in enumerate(vocab.groups)}
        self.top_page = np.asarray(top_page, dtype=np.int64)
        # titles are not paths: normalising or grouping them by path rules would be nonsense
        self.config = config if config is not None and config.identity == "path" else None
        self._cached = lru_cache(maxsize=65_536)(self._resolve)

    def resolve(self, entry: Any, position: int, unknown: UnknownMode = "map") -> ResolvedPage:
        """Read one history entry.

        Raises:
            ClickstreamError: The entry is malformed, or unknown with ``unknown="error"``.
        """
        if not isinstance(entry, str):
            raise DataError(
                f"history[{position}] must be a page path (a string), got {json_type(entry)}"
            )
        # a page of the run's own vocabulary is answered whatever its length (the app lists
        # it in GET /api/pages, and policies recommend it); the limit is for other entries
        if len(entry) > MAX_PAGE_CHARS and entry not in self.index:
            raise DataError(
                f"history[{position}] is {len(entry)} characters long; at most {MAX_PAGE_CHARS}"
            )
        # before the empty check, which strips: "\x85" is whitespace to str.strip(); a page
        # of the run's own vocabulary is read as it is (a soft hyphen or a no-break space in
        # a page name is the data's, and the app lists it in GET /api/pages)
        if entry not in self.index and not entry.replace(" ", "").isprintable():
            raise DataError(
                f"history[{position}] holds characters that are not printable (control, "
                f"separator, format or unpaired surrogate): {entry!r}"
            )
        if not entry.strip():
            raise DataError(f"history[{position}] is an empty page path")
        resolved = self._cached(entry, unknown)
        if resolved.page_id is None and unknown == "error":
            raise DataError(
                f"history[{position}]: unknown page {entry!r} (unknown='error'; GET /api/pages "
                "lists the pages)"
            )
        return resolved

    def _resolve(self, entry: str, unknown: str) -> ResolvedPage:
        for text in (entry, entry.strip()):
            if text in self.index:
                return ResolvedPage(entry, self.index[text], "exact")
        if self.config is None:
            return ResolvedPage(entry, None, "dropped", why="no rule maps it")
        page = normalise_path(entry, self.config)
        if page in self.index:
            return ResolvedPage(entry, self.index[page], "normalised")
        group = group_of(page, None, self.config)
        if unknown != "map":  # the group may well be in the run: the request chose not to map
            why = f"unknown={unknown!r}: unknown pages are not mapped to their group {group!r}"
            return ResolvedPage(entry, None, "dropped", group, why)
        folded = f"other:{group}"
        if folded in self.index:
            return ResolvedPage(entry, self.index[folded], "folded", group)
        if group in self.group_index:
            return ResolvedPage(entry, int(self.top_page[self.group_index[group]]), "group", group)
        if f"other:{OTHER_GROUP}" in self.index:
            return ResolvedPage(entry, self.index[f"other:{OTHER_GROUP}"], "other", group)
        if OTHER_GROUP in self.group_index:
            top = int(self.top_page[self.group_index[OTHER_GROUP]])
            return ResolvedPage(entry, top, "other", group)
        why = f"its group {group!r} is not in this run"
        return ResolvedPage(entry, None, "dropped", group, why)


def _finite(x: float) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def json_type(value: Any) -> str:
    """A decoded JSON value's type in JSON's words (``a string``, ``null``), for messages."""
    names = {
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


# ---- recommendations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _HistoryStats:
    """What one history costs a model forward for: the visitor model's answer (one row, or
    one per visitor type), its organic distribution ``(P + 1,)`` and, when every action was
    evaluated, their organic and follow probabilities and expected values ``(A,)`` (NaN for
    "show nothing")."""

    next: NextPage
    organic: np.ndarray
    before: np.ndarray | None = None
    follow: np.ndarray | None = None
    value: np.ndarray | None = None


@dataclass(frozen=True)
class Recommendation:
    """One recommended action (see the module docstring for the probabilities)."""

    rank: int
    action: int
    page_id: int | None
    group_id: int
    score: float
    organic_probability: float
    follow_probability: float
    expected_value: float
    slate_follow_probability: float | None = None


@dataclass(frozen=True)
class Outcome:
    """The policy's top-k at one history, and the organic baseline there."""

    recommendations: list[Recommendation]
    prefers_nothing: bool
    organic_expected_value: float
    exit_probability: float
    observation: tuple[int, ...]
    slate_expected_value: float | None = None


@dataclass(frozen=True)
class PathStep:
    """One step of :meth:`Recommender.path`.

    Attributes:
        page_id: The page the visitor is on.
        action: The policy's action there (its best; "show nothing" included).
        recommended_page: The recommended page id (page actions), else ``None``.
        recommended_group: The recommended group id (group actions), else ``None``.
        follow_probability: ``p'`` of the recommendation (0 when nothing is shown).
        next_page_id: The most likely next page (``EXIT`` aside).
        probability: ``p'(next page)``.
        exit_probability: ``p'(EXIT)``.
        expected_value: ``Σ_j p'(j) · r_j``.
        page_value: Reward of the next page (the run's reward, page value by default; the
            name is historical).
        loop: The next page is already on the path (the path stops).
        exit_likelier: Leaving (``EXIT``) is more likely than the next page (the path stops).
    """

    page_id: int
    action: int
    recommended_page: int | None
    recommended_group: int | None
    follow_probability: float
    next_page_id: int
    probability: float
    exit_probability: float
    expected_value: float
    page_value: float
    loop: bool = False
    exit_likelier: bool = False


@dataclass
class Recommender:
    """Recommendations and paths for one run (everything a request needs, built once).

    Args:
        run: The loaded run.
        max_history: Pages of a history the visitor model reads, the most recent (default:
            the env's ``max_steps``, the longest session the simulator plays).
        cache: Keep, per history, the visitor model's distribution and (sites of up to
            :data:`EVERY_ACTION_CELLS` action × outcome cells) every action's probabilities
            and value, and the network policies' scores per observation (bounded LRU
            caches): a repeated history costs no network forward and no click model.
            ``False`` computes every request afresh (the load test's worst case).
    """

    run: RunArtefacts
    max_history: int | None = None
    cache: bool = True
    resolver: PageResolver = field(init=False)

    def __post_init__(self) -> None:
        run = self.run
        core = run.site.template
        if self.max_history is None:
            self.max_history = core.max_steps
        self.template = core  # what actions show (shown_mask), as in the simulator
        self.n_pages = core.n_pages
        self.history_len = core.history_len
        self.action_pages = core.action_pages.cpu().numpy()
        self.click_model = core.click_model
        self.reward = core.reward_per_page.double().cpu().numpy()  # (P + 1,), EXIT 0
        self.page_group = run.vocab.page_group
        self.group_level = core.page_groups is not None
        self.visitors = run.visitor_model
        nothing = np.flatnonzero(self.action_pages < 0)
        self.nothing: int | None = int(nothing[0]) if len(nothing) else None
        self.resolver = PageResolver(run.vocab, run.network.top_page, run.page_config)
        n_actions = len(self.action_pages)
        # with caches on, a history's first request evaluates every action at once (the
        # click model over an (A, P + 1) table), so later requests for it, whatever the
        # policy or k, only index; too big a table (large sites) and each request does its k
        self._every_action = self.cache and n_actions * (self.n_pages + 1) <= EVERY_ACTION_CELLS
        entry = self.n_pages + 1 + (3 * n_actions if self._every_action else 0)
        rows = max(1024, CACHE_BYTES // (8 * entry))
        self._stats = (
            lru_cache(maxsize=rows)(self._stats_uncached) if self.cache else self._stats_uncached
        )
        self._scorers = {
            name: self._scorer(sp.policy, self.cache) for name, sp in run.policies.items()
        }
        # the JSON of every page and group, built once: answers only reference them
        vocab, value = run.vocab, run.catalog["page_value"].to_numpy(np.float64)
        self._page_info = [
            {
                "page": vocab.pages[i],
                "page_id": i,
                "page_group": vocab.groups[int(self.page_group[i])],
                "page_value": _finite(value[i]),
                "reward": float(self.reward[i]),
            }
            for i in range(self.n_pages)
        ]
        self._group_info = [
            {
                "page": None,
                "page_id": None,
                "page_group": name,
                "page_value": _finite(run.network.page_value[g]),
                "reward": None,
            }
            for g, name in enumerate(vocab.groups)
        ]

    @property
    def n_recommendable(self) -> int:
        """Actions that show something (every action but "show nothing")."""
        return int((self.action_pages >= 0).sum())

    def page_info(self, page_id: int) -> dict[str, Any]:
        """A page as the API shows it: name, id, group, GA page value, reward (shared: do
        not modify)."""
        return self._page_info[page_id]

    def group_info(self, group_id: int) -> dict[str, Any]:
        """A page group as the API shows it (shared: do not modify)."""
        return self._group_info[group_id]

    # ---- pieces ------------------------------------------------------------------------------

    def resolve(
        self, history: Sequence[Any], unknown: UnknownMode = "map"
    ) -> tuple[list[ResolvedPage], tuple[int, ...]]:
        """Each entry's reading, and the known page ids in order (the last ``max_history``).

        Raises:
            ClickstreamError: A malformed entry, an unknown one with ``unknown="error"``, or
                no known page at all.
        """
        resolved = [self.resolver.resolve(entry, i, unknown) for i, entry in enumerate(history)]
        ids = tuple(r.page_id for r in resolved if r.page_id is not None)
        if not ids:
            unknown_pages = [r.input for r in resolved][:5]
            raise DataError(
                f"no page of the history is known to run {self.run.name!r} (unknown: "
                f"{unknown_pages}); GET /api/pages lists the pages"
            )
        return resolved, ids[-int(self.max_history) :]

    def observation(self, ids: tuple[int, ...]) -> tuple[int, ...]:
        """The env's observation: the last ``history_len`` ids, left-padded with ``P``, after
        the entry page and the position in the visit when the env observes them
        (:meth:`envs.core.SiteCore.observe_pages`)."""
        return tuple(int(v) for v in self.template.observe_pages(ids))

    def organic(self, ids: tuple[int, ...]) -> np.ndarray:
        """Organic next-page distribution after ``ids``, ``(P + 1,)`` (read-only, cached)."""
        return self._stats(ids).organic

    def _stats_uncached(self, ids: tuple[int, ...]) -> _HistoryStats:
        nxt = self.visitors.next_distribution(ids)
        for a in (nxt.weights, nxt.rows):
            a.setflags(write=False)
        organic = nxt.probs
        organic.setflags(write=False)
        if not self._every_action:
            return _HistoryStats(nxt, organic)
        shown = np.flatnonzero(self.action_pages >= 0)
        before, follow, value = (np.full(len(self.action_pages), np.nan) for _ in range(3))
        before[shown], follow[shown], value[shown] = self.evaluate(nxt, shown)
        for a in (before, follow, value):
            a.setflags(write=False)
        return _HistoryStats(nxt, organic, before, follow, value)

    def evaluate(
        self, nxt: NextPage, actions: Sequence[int] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Organic probability, follow probability and expected value of each action (never
        "show nothing") at a history where the visitor model answers ``nxt``: ``(n,)``
        each."""
        organic = nxt.probs
        dists = self.next_dists(nxt, actions)
        shown = self.shown_mask(actions)
        # sums along rows, not matrix products: the same bits whether one action or all
        # are evaluated (BLAS may order a product's sums by the matrix's size)
        follow = np.where(shown, dists, 0.0).sum(axis=1)
        before = np.where(shown, organic[None, :], 0.0).sum(axis=1)
        value = (dists * self.reward[None, :]).sum(axis=1)
        return before, follow, value

    def scores(self, policy: str, obs: tuple[int, ...]) -> np.ndarray:
        """The policy's action scores at an observation, ``(A,)`` float64 (read-only)."""
        return self._scorers[policy](obs)

    @staticmethod
    def _scorer(policy: Policy, cache: bool) -> Callable[[tuple[int, ...]], np.ndarray]:
        # one call at a time per policy: policies do not promise to be thread-safe, and
        # SB3's are not (get_distribution stores the logits in the policy's one shared
        # distribution object, so concurrent calls can read each other's; the load test
        # caught 4 such answers in 3,000 without this lock)
        lock = threading.Lock()

        def score(obs: tuple[int, ...]) -> np.ndarray:
            with lock:
                raw = policy.action_scores(np.asarray(obs, dtype=np.int64)[None, :])
            s = np.asarray(raw, dtype=np.float64)[0]
            s.setflags(write=False)
            return s

        from agents.base import TablePolicy
        from agents.sb3 import SB3Agent

        if isinstance(policy, TablePolicy):
            # a table over the current page (TablePolicy.action_scores, without its torch
            # round trip per request): rows read-only, row P for "no page"
            table = policy.scores.double().numpy().copy() if policy.scores is not None else None
            if table is not None:
                table.setflags(write=False)
                last = len(table) - 1
                return lambda obs: table[min(obs[-1], last)]
        # a network forward per request is the dearest part of a request: cache it per
        # observation; random draws must not repeat
        if cache and isinstance(policy, SB3Agent):
            return lru_cache(maxsize=65_536)(score)
        return score

    def shown_mask(self, actions: Sequence[int] | np.ndarray) -> np.ndarray:
        """What each action shows, ``(n, P + 1)`` bool: its page, its group's pages, or
        nothing ("show nothing"): the simulator's :meth:`~envs.core.SiteCore.shown_mask`."""
        return self.template.shown_mask(np.asarray(actions, dtype=np.int64)).numpy()

    def next_dists(self, nxt: NextPage, actions: Sequence[int]) -> np.ndarray:
        """Next-page distributions under each action, ``(n, P + 1)`` float64 (click model).

        With visitor types (several rows) the click model acts on each type's row and the
        results are mixed by the types' weights, as in the simulator.
        """
        if nxt.n_types == 1:
            return self._boosted(nxt.rows[0], actions)
        return sum(
            w * self._boosted(row, actions) for w, row in zip(nxt.weights, nxt.rows, strict=True)
        )

    def _boosted(self, organic: np.ndarray, actions: Sequence[int]) -> np.ndarray:
        """The click model applied to one organic distribution ``(P + 1,)`` under each
        action, ``(n, P + 1)`` float64."""
        n = len(actions)
        probs = torch.from_numpy(np.repeat(organic[None, :], n, axis=0))  # a writable copy
        idx = torch.as_tensor(np.asarray(actions, dtype=np.int64))
        if self.group_level:
            shown = torch.from_numpy(self.shown_mask(idx.numpy()))
            return self.click_model.apply_set(probs, shown).numpy()
        recommended = torch.as_tensor(self.action_pages[idx.numpy()], dtype=torch.long)
        return self.click_model.apply(probs, recommended).numpy()

    # ---- answers -----------------------------------------------------------------------------

    def recommend(self, policy: str, ids: tuple[int, ...], k: int) -> Outcome:
        """The policy's top ``k`` at the history ``ids`` (known page ids, oldest first)."""
        obs = self.observation(ids)
        scores = self.scores(policy, obs)
        current = ids[-1]
        valid = np.isfinite(scores) & (self.action_pages >= 0)
        if not self.group_level:
            valid &= self.action_pages != current
        candidates = np.flatnonzero(valid)
        top = candidates[np.argsort(-scores[candidates], kind="stable")[:k]]
        if self.ranks_no_page(scores, candidates):
            top = top[:0]  # organic: any list would be the first page ids, not a choice
        slate_model = self.template.slate_model
        if slate_model is not None:  # the policy's own slate first, then by score
            own = np.asarray(self.run.policies[policy].policy.predict(np.asarray(obs))[0])
            own = [int(a) for a in dict.fromkeys(own.reshape(-1).tolist()) if valid[int(a)]]
            rest = [int(a) for a in candidates[np.argsort(-scores[candidates], kind="stable")]]
            top = np.asarray(list(dict.fromkeys(own + rest))[:k], dtype=np.int64)
        stats = self._stats(ids)
        organic = stats.organic
        recs: list[Recommendation] = []
        if len(top):
            if stats.follow is not None:
                before, follow, value = stats.before[top], stats.follow[top], stats.value[top]
            else:
                before, follow, value = self.evaluate(stats.next, top)
            for rank, a in enumerate(top):
                target = int(self.action_pages[a])
                recs.append(
                    Recommendation(
                        rank=rank + 1,
                        action=int(a),
                        page_id=None if self.group_level else target,
                        group_id=target if self.group_level else int(self.page_group[target]),
                        score=float(scores[a]),
                        organic_probability=float(before[rank]),
                        follow_probability=float(follow[rank]),
                        expected_value=float(value[rank]),
                    )
                )
        slate_value = None
        if slate_model is not None and recs:
            shown = [int(self.action_pages[r.action]) for r in recs[: slate_model.slate_size]]
            slate = torch.full((1, slate_model.slate_size), -1, dtype=torch.long)
            slate[0, : len(shown)] = torch.as_tensor(shown)
            nxt = stats.next
            after = sum(
                w * slate_model.apply(torch.tensor(np.asarray(row, np.float64))[None], slate)[0]
                for w, row in zip(nxt.weights, nxt.rows, strict=True)
            ).numpy()
            slate_value = float(after @ self.reward)
            recs = [
                dataclasses.replace(r, slate_follow_probability=float(after[shown[i]]))
                if i < len(shown)
                else r
                for i, r in enumerate(recs)
            ]
        best = int(np.argmax(scores))
        return Outcome(
            recommendations=recs,
            prefers_nothing=self.nothing is not None and best == self.nothing,
            organic_expected_value=float((organic * self.reward).sum()),
            exit_probability=float(organic[self.n_pages]),
            observation=obs,
            slate_expected_value=slate_value,
        )

    def ranks_no_page(self, scores: np.ndarray, candidates: np.ndarray) -> bool:
        """Whether a policy's ``scores`` prefer showing nothing and rank no recommendable
        page above another (the organic baseline): it has no top-k to show."""
        if self.nothing is None or len(candidates) < 2:  # one page: a list of one, not an order
            return False
        page_scores = scores[candidates]
        return bool(page_scores.min() == page_scores.max() < scores[self.nothing])

    def path(self, policy: str, ids: tuple[int, ...], steps: int) -> list[PathStep]:
        """Follow the most likely next page under the policy for up to ``steps`` steps."""
        ids = tuple(ids)
        on_path = {ids[-1]}
        out: list[PathStep] = []
        for _ in range(steps):
            scores = self.scores(policy, self.observation(ids))
            action = int(np.argmax(scores))  # what the policy plays (Policy.predict)
            stats = self._stats(ids)
            target = int(self.action_pages[action])
            if not self.group_level and target == ids[-1]:
                target = -1  # the page the visitor is on shows nothing, as in the simulator
            dist = stats.organic if target < 0 else self.next_dists(stats.next, [action])[0]
            follow = float(dist[self.shown_mask([action])[0]].sum()) if target >= 0 else 0.0
            nxt = int(np.argmax(dist[: self.n_pages]))
            loop = nxt in on_path
            exit_likelier = bool(dist[self.n_pages] > dist[nxt])
            out.append(
                PathStep(
                    page_id=ids[-1],
                    action=action,
                    recommended_page=target if target >= 0 and not self.group_level else None,
                    recommended_group=target if target >= 0 and self.group_level else None,
                    follow_probability=follow,
                    next_page_id=nxt,
                    probability=float(dist[nxt]),
                    exit_probability=float(dist[self.n_pages]),
                    expected_value=float((dist * self.reward).sum()),
                    page_value=float(self.reward[nxt]),
                    loop=loop,
                    exit_likelier=exit_likelier,
                )
            )
            if loop or exit_likelier:
                break
            on_path.add(nxt)
            ids = (*ids, nxt)[-int(self.max_history) :]
        return out
