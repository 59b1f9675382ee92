"""Sampling sessions from a synthetic store's true visitor model.

:meth:`Sampling.simulate` draws sessions as page indices, vectorised over sessions;
:meth:`Sampling.sample_sessions` turns them into raw hits (session starts, time on page,
revenue, visitor ids) in the canonical schema. Mixed into
:class:`clickstream.synthetic.truth.SyntheticStore`, whose arrays it reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from clickstream.errors import ConfigError
from clickstream.schema import LoadResult, coerce_raw_hits


@dataclass
class SimulatedSessions:
    """Sessions as page indices, before they become hits.

    Attributes:
        pages: Page index of every page view, sessions one after another, shape ``(N,)``.
        offsets: Start of each session in ``pages``, shape ``(S + 1,)`` (``offsets[-1] == N``).
        intents: Latent intent index of each session (0 in ``markov`` mode), shape ``(S,)``.
        truncated: Sessions cut at ``max_steps``, shape ``(S,)``.
    """

    pages: np.ndarray
    offsets: np.ndarray
    intents: np.ndarray
    truncated: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        """Page views per session, shape ``(S,)``."""
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def session(self, i: int) -> np.ndarray:
        """Page indices of session ``i``, shape ``(L_i,)``."""
        return self.pages[self.offsets[i] : self.offsets[i + 1]]

    def to_list(self) -> list[np.ndarray]:
        """Every session as its own page-index array."""
        return np.split(self.pages, self.offsets[1:-1])


class Sampling:
    """Sampling methods of :class:`clickstream.synthetic.truth.SyntheticStore`."""

    def simulate(self, n_sessions: int, seed: int) -> SimulatedSessions:
        """Sample ``n_sessions`` sessions as page indices (vectorised over sessions).

        All running sessions take one step at a time: a uniform draw per session is located in
        the cumulative probabilities of its row (inverse CDF by ``searchsorted``).
        """
        if n_sessions < 1:
            raise ConfigError(f"n_sessions must be >= 1, got {n_sessions}")
        rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
        p = self.n_pages
        intents = np.searchsorted(
            np.cumsum(self.prior)[:-1], rng.random(n_sessions), side="right"
        ).astype(np.int64)
        e_pos = np.searchsorted(self._entry_keys, intents + rng.random(n_sessions), "right")
        cur = (e_pos - intents * p).astype(np.int64)
        alive = np.arange(n_sessions, dtype=np.int64)
        steps: list[tuple[np.ndarray, np.ndarray]] = [(alive, cur)]
        keys, indices = self._cum_keys, self.indices
        for _ in range(1, self.config.max_steps):
            rows = intents[alive] * p + cur
            nxt = indices[np.searchsorted(keys, rows + rng.random(len(alive)), "right")]
            go_on = nxt != p
            alive, cur = alive[go_on], nxt[go_on].astype(np.int64)
            if len(alive) == 0:
                break
            steps.append((alive, cur))
        lengths = np.zeros(n_sessions, dtype=np.int64)
        for a, _ in steps:
            lengths[a] += 1
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        flat = np.empty(int(offsets[-1]), dtype=np.int64)
        for t, (a, c) in enumerate(steps):
            flat[offsets[a] + t] = c
        truncated = np.zeros(n_sessions, dtype=bool)
        if len(steps) == self.config.max_steps:
            truncated[steps[-1][0]] = True
        return SimulatedSessions(flat, offsets, intents, truncated)

    def sample_sessions(self, n_sessions: int, seed: int, *, first_session: int = 1) -> LoadResult:
        """Sample sessions as raw hits (:data:`clickstream.schema.RAW_COLUMNS`).

        Same store and seed give byte-identical hits. Page paths come from :meth:`simulate`
        with the same seed, so ``simulate(n, seed)`` gives these sessions' page indices.

        Args:
            n_sessions: Number of sessions S.
            seed: Sampling seed.
            first_session: Number of the first session id (``syn-0000001`` by default).

        Returns:
            ``LoadResult(source="synthetic")``; ``info`` holds the store (``store``), the true
            intent of every session (``session_intents``: a DataFrame ``session_id``,
            ``intent``), and plain facts (mode, sizes, seeds, truncated sessions, intent
            counts).
        """
        cfg = self.config
        sim = self.simulate(n_sessions, seed)
        rng_arrival, rng_time, rng_revenue, rng_visitor = (
            np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)[1:]
        )
        lengths = sim.lengths
        n_views = len(sim.pages)
        session_of_view = np.repeat(np.arange(n_sessions), lengths)
        first = np.zeros(n_views, dtype=bool)
        first[sim.offsets[:-1]] = True
        last = np.zeros(n_views, dtype=bool)
        last[sim.offsets[1:] - 1] = True

        # session starts: exponential gaps in ms, so starts increase over simulated days
        gaps_ms = rng_arrival.exponential(86_400_000.0 / cfg.sessions_per_day, n_sessions)
        start_ms = np.cumsum(np.maximum(np.round(gaps_ms), 1).astype(np.int64))
        origin = pd.Timestamp(cfg.start_date, tz="UTC")

        # time on page in whole ms; the last page's time is unknown, as in GA
        z = rng_time.standard_normal(n_views)
        top_ms = np.round(
            np.exp(self.time_mu[sim.pages] + self.time_sigma[sim.pages] * z) * 1000.0
        ).astype(np.int64)
        top_ms[last] = 0
        csum = np.cumsum(top_ms)
        before = csum - top_ms  # time on site before this view, across sessions
        offset_ms = before - before[sim.offsets[:-1]][session_of_view]
        hit_ms = start_ms[session_of_view] + offset_ms
        time_on_page = np.where(last, np.nan, top_ms / 1000.0)

        is_tx = self.expected_revenue[sim.pages] > 0  # the order page (none in items mode)
        revenue = np.zeros(n_views)
        n_tx = int(is_tx.sum())
        mu, sigma = np.log(cfg.order_value_median), cfg.order_value_sigma
        revenue[is_tx] = np.maximum(
            np.round(np.exp(mu + sigma * rng_revenue.standard_normal(n_tx)), 2), 0.99
        )

        visitor = _visitor_numbers(n_sessions, cfg.returning_rate, rng_visitor)
        width = max(7, len(str(first_session + n_sessions)))
        sid = np.array(
            [f"syn-{i:0{width}d}" for i in range(first_session, first_session + n_sessions)],
            dtype=object,
        )
        vid = np.array([f"synv-{first_session + v:0{width}d}" for v in visitor], dtype=object)
        pages = np.array(self.pages, dtype=object)
        titles = np.array(self.page_titles, dtype=object)
        content = np.array(self.content_groups, dtype=object)
        hits = pd.DataFrame(
            {
                "session_id": pd.Series(sid[session_of_view], dtype="str"),
                "visitor_id": pd.Series(vid[session_of_view], dtype="str"),
                "session_start": origin + pd.to_timedelta(start_ms[session_of_view], unit="ms"),
                "step": np.arange(n_views) - sim.offsets[:-1][session_of_view],
                "page_raw": pd.Series(pages[sim.pages], dtype="str"),
                "page_title": pd.Series(titles[sim.pages], dtype="str"),
                "content_group": pd.Series(content[sim.pages], dtype="str"),
                "hit_time": origin + pd.to_timedelta(hit_ms, unit="ms"),
                "time_on_page_s": time_on_page,
                "revenue": revenue,
                "is_transaction": is_tx,
            }
        )
        hits = coerce_raw_hits(hits)
        counts = np.bincount(sim.intents, minlength=self.n_intents)
        info: dict[str, object] = {
            "dataset_name": f"synthetic_{self.mode}_{self.n_pages}p",
            "mode": self.mode,
            "n_pages": self.n_pages,
            "seed": cfg.seed,
            "sample_seed": int(seed),
            "max_steps": cfg.max_steps,
            "truncated_sessions": int(sim.truncated.sum()),
            "intent_counts": {name: int(c) for name, c in zip(self.intents, counts, strict=True)},
            "store": self,
            "session_intents": pd.DataFrame(
                {
                    "session_id": pd.Series(sid, dtype="str"),
                    "intent": pd.Categorical.from_codes(sim.intents, categories=self.intents),
                }
            ),
        }
        return LoadResult(
            hits=hits,
            source="synthetic",
            files=[],
            dropped={},
            info=info,
            extra_outputs=partial(self.write_true_model, session_intents=info["session_intents"]),
        )


def _visitor_numbers(n: int, returning_rate: float, rng: np.random.Generator) -> np.ndarray:
    """Visitor number per session: new visitors count up; returning ones reuse an earlier
    session's visitor (pointer jumping resolves chains of returns in O(log n) passes)."""
    returning = rng.random(n) < returning_rate
    returning[0] = False
    ptr = np.arange(n)
    earlier = np.floor(rng.random(n) * np.arange(n)).astype(np.int64)
    ptr[returning] = earlier[returning]
    while True:
        nxt = ptr[ptr]
        if np.array_equal(nxt, ptr):
            break
        ptr = nxt
    new_number = np.cumsum(~returning) - 1
    return new_number[ptr]
