"""Study: which visitor type a first-order world credits with a move, against the sessions'
true intents.

    python scripts/study_type_moves.py --data-dir runs/intent_125k/data --kind latent_gru
        [--model-path <file>] [--source product] [--target basket]

A world whose visitors keep a type and follow first-order rows per type (the latent-class
model, a latent-type GRU whose memory stage was not kept, the store's own model) can be read
on the training split: each session is filtered with the world's prior, entry and rows, and at
every step from a page of group ``--source`` each type is credited with its filtered
probability times its probability of moving to group ``--target``. The sum over types is the
world's expected number of such moves (a fitted model matches the count); how it splits over
the types is what a recommendation acts on, since the click model boosts a visitor's own
type's row. A synthetic store records each session's intent, so the same moves can be counted
by the intent that made them. The world's types are listed by prior, as are the intents by
their share of sessions; types and intents of about the same share are the same visitors.
A study for docs/results.md (the latent-type GRU section); it writes nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from agents.site import Site
from clickstream.errors import DataError
from clickstream.runfolder import read_parquet
from envs.dynamics import Chains
from envs.sequences import SessionSequences


def credited_moves(
    chains: Chains, seqs: SessionSequences, source: np.ndarray, target: np.ndarray
) -> np.ndarray:
    """Moves from a ``source`` page to a ``target`` outcome credited to each type, ``(Z,)``.

    Args:
        chains: The world's prior ``(Z,)``, entry ``(Z, P)`` and rows ``(Z, P, P + 1)``.
        seqs: Sessions (``EXIT`` ends each).
        source: Whether each page is a source page, ``(P,)`` bool.
        target: Whether each outcome (pages, then ``EXIT``) is a target, ``(P + 1,)`` bool.

    At step ``t`` of a session the type probabilities are filtered on its pages up to ``t``
    (the entry page and each move before ``t``), as the simulator's visitor would be known.

    Raises:
        DataError: A session enters or moves as no type can (naming the session).
    """
    prior = chains.prior.double().cpu().numpy()
    entry = chains.entry.double().cpu().numpy()
    rows = chains.transitions.double().cpu().numpy()
    to_target = rows[:, :, target].sum(axis=2)  # (Z, P)
    lengths, starts = seqs.lengths, seqs.offsets[:-1]
    exit_id = rows.shape[2] - 1
    post = prior[None, :] * entry[:, seqs.pages[starts]].T  # (N, Z), after the entry page
    total = post.sum(axis=1, keepdims=True)
    if (total == 0).any():
        session = seqs.session_ids[np.flatnonzero(total[:, 0] == 0)[0]]
        raise DataError(f"session {session!r}: no type enters by its first page")
    post /= total
    credited = np.zeros(len(prior))
    for t in range(int(lengths.max())):
        live = lengths > t
        begin, weights = starts[live], post[live]
        here = seqs.pages[begin + t]
        at_source = source[here]
        credited += (weights[at_source] * to_target[:, here[at_source]].T).sum(axis=0)
        after = lengths[live] > t + 1
        nxt = np.full(len(here), exit_id)
        nxt[after] = seqs.pages[begin[after] + t + 1]
        moved = weights * rows[:, here, nxt].T
        total = moved.sum(axis=1, keepdims=True)
        if (total == 0).any():  # a move no type can make: the world cannot read this session
            session = seqs.session_ids[np.flatnonzero(live)[np.flatnonzero(total[:, 0] == 0)[0]]]
            raise DataError(f"session {session!r}: its move after step {t} has probability 0")
        post[live] = moved / total
    return credited


def counted_moves(
    seqs: SessionSequences,
    source: np.ndarray,
    target: np.ndarray,
    steps: np.ndarray | None = None,
) -> tuple[int, int]:
    """Steps from a source page, and those that moved to a target: ``(views, moves)``; only
    the steps where ``steps`` (``(page views,)`` bool) is true, when given."""
    at_source = source[seqs.pages]
    if steps is not None:
        at_source &= steps
    return int(at_source.sum()), int(target[seqs.targets()[at_source]].sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--kind", required=True, help="the world's visitor kind (with tables)")
    parser.add_argument("--model-path", default=None, help="default: the kind's file")
    parser.add_argument("--source", default="product", help="page group moved from")
    parser.add_argument("--target", default="basket", help="page group moved to")
    args = parser.parse_args()

    data_dir = Path(args.data_dir)
    site = Site(data_dir=data_dir, env={"dynamics": args.kind, "model_path": args.model_path})
    vocab = site.data.vocab
    groups = np.asarray(vocab.groups)[vocab.page_group]
    for name in (args.source, args.target):
        if name not in groups:
            raise DataError(f"no page group {name!r} (groups: {sorted(set(groups))})")
    source = groups == args.source
    target = np.r_[groups == args.target, False]
    train = site.data.splits["train"]
    views, moves = counted_moves(train, source, target)
    print(f"{args.source} -> {args.target} on the training split: {moves:,} of {views:,} steps")

    worlds = {args.kind: "learned"}
    if site.is_synthetic:
        worlds["the store's own model"] = "ground_truth"
    for label, world in worlds.items():
        chains = site.core(1, world, top_k=None).dynamics.chains()
        if chains is None:
            raise DataError(f"{label}: its visitors are not first-order chains per type")
        credited = credited_moves(chains, train, source, target)
        order = np.argsort(-chains.prior.cpu().numpy())
        shares = " / ".join(f"{chains.prior[z]:.3f}" for z in order)
        moves_by_type = " / ".join(f"{credited[z]:,.1f}" for z in order)
        print(f"{label}: types {shares}; credited {moves_by_type} (sum {credited.sum():,.1f})")

    intents_file = data_dir / "session_intents.parquet"
    if intents_file.is_file():
        intents = read_parquet(intents_file).set_index("session_id")["intent"]
        train_intents = intents.reindex(train.session_ids).to_numpy()
        if pd.isna(train_intents).any():
            raise DataError("a training session has no recorded intent", file=str(intents_file))
        by_step = np.repeat(train_intents, train.lengths)
        shares = pd.Series(train_intents).value_counts(normalize=True)
        counted = {
            intent: counted_moves(train, source, target, by_step == intent)[1]
            for intent in shares.index
        }
        print(
            "by true intent: "
            + " / ".join(f"{i} {shares[i]:.3f}: {counted[i]:,}" for i in shares.index)
        )


if __name__ == "__main__":
    main()
