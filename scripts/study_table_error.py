"""Study: how much of a model's log-loss on a synthetic store is the sampling error of its
first-order table?

    python scripts/study_table_error.py --data-dir runs/synthetic_intent/data

On a synthetic store the truth is known, so the test log-loss of three predictors that need no
training can be put side by side: the store's own model (the Bayes rate: each visitor's intent
filtered from her history), the store's exact first-order marginal (the first-order chain
closest to the intent mixture, what ``mode=markov`` simulates) and the first-order table
counted on the training split (popularity back-off, its pseudo-count picked on the validation
split), counted again on the first quarter and half of the training sessions. The counted
table's excess over the exact marginal is its sampling error; how it falls with the sessions
counted says how much data a model whose shared part is such a table needs to come within a
given distance of the Bayes rate (issue 20's log-loss bar on the ``intent`` store). Last, the
intent study's latent-class model (visitor types re-weighting a shared first-order table) is
fitted twice on the training split: with its table counted, as the study fits it, and with the
exact marginal in the table's place, which says what the types would reach without the
table's sampling error. A study for docs/results.md (the latent-type GRU section); it writes
nothing.
"""

from __future__ import annotations

import argparse

import numpy as np

from clickstream.synthetic import SyntheticConfig, SyntheticStore, build_store
from envs.baselines import TrueModel, mean_log_loss
from envs.dynamics import first_order_table, store_tables
from envs.latent_class import LatentClassConfig, LatentClassModel
from envs.sequences import SessionSequences, load_prepared

PSEUDO_COUNTS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
"""Back-off strengths tried for the counted table (picked on the validation split)."""


def first_order_log_loss(table: np.ndarray, seqs: SessionSequences) -> float:
    """Mean next-page log-loss (with ``EXIT``) of a first-order ``table`` ``(P, P + 1)``."""
    return float(-np.log(table[seqs.pages, seqs.targets()]).mean())


def counted_table(seqs: SessionSequences, valid: SessionSequences) -> tuple[np.ndarray, float]:
    """The first-order table counted on ``seqs`` with popularity back-off
    (:func:`envs.dynamics.first_order_table`), its pseudo-count the best of
    :data:`PSEUDO_COUNTS` on ``valid``; returns the table and the pseudo-count."""
    tables = {k: first_order_table(seqs, k) for k in PSEUDO_COUNTS}
    best = min(tables, key=lambda k: first_order_log_loss(tables[k], valid))
    return tables[best], best


def first_sessions(seqs: SessionSequences, n: int) -> SessionSequences:
    """The first ``n`` sessions of ``seqs``."""
    end = seqs.offsets[n]
    return SessionSequences(
        pages=seqs.pages[:end],
        offsets=seqs.offsets[: n + 1],
        time_bucket=seqs.time_bucket[:end],
        session_ids=seqs.session_ids[:n],
        exit_id=seqs.exit_id,
    )


def latent_class_log_losses(
    train: SessionSequences,
    test: SessionSequences,
    groups: np.ndarray,
    pages: tuple[str, ...],
    exact_table: np.ndarray,
    config: LatentClassConfig,
) -> dict[str, float]:
    """Test log-loss of the latent-class model fitted on ``train`` with its shared table
    counted (``"counted"``) and with ``exact_table`` ``(P, P + 1)`` in its place
    (``"exact"``), the same types, starts and seeds otherwise."""
    return {
        label: mean_log_loss(
            LatentClassModel.fit(train, groups, pages, config, base_table=base), test
        )
        for label, base in (("counted", None), ("exact", exact_table))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="runs/synthetic_intent/data")
    parser.add_argument("--types", type=int, default=3, help="latent-class types (the study's 3)")
    args = parser.parse_args()

    data = load_prepared(args.data_dir)
    if data.true_model_path is None:
        parser.error(f"{args.data_dir} is not a synthetic dataset (no true_model.npz)")
    train, valid, test = data.splits["train"], data.splits["valid"], data.splits["test"]
    pages = data.vocab.pages
    store = SyntheticStore.load(data.true_model_path)
    # the same site in markov mode: the exact first-order marginal of the intent mixture
    cfg = SyntheticConfig.from_dict({**store.config.to_dict(), "mode": "markov"})
    _, _, marginal, _ = store_tables(build_store(cfg), pages)

    print(f"{args.data_dir}: {len(train):,} training sessions, test split {test.n_steps:,} steps")
    bayes = mean_log_loss(TrueModel(store, pages), test)
    exact = first_order_log_loss(marginal[0], test)
    print(f"{'predictor':58s} {'test log-loss':>13s} {'above Bayes':>12s}")
    print(f"{'the store (Bayes: intent filtered from the history)':58s} {bayes:13.4f}")
    print(f"{'exact first-order marginal':58s} {exact:13.4f} {exact - bayes:+12.4f}")
    for share in (0.25, 0.5, 1.0):
        part = first_sessions(train, max(1, round(share * len(train))))
        table, k = counted_table(part, valid)
        loss = first_order_log_loss(table, test)
        label = f"counted on {len(part):,} sessions (pseudo-count {k:g})"
        print(f"{label:58s} {loss:13.4f} {loss - bayes:+12.4f}   sampling error {loss - exact:.4f}")
    # the study's fit of 3 types: the starts and seeds its `classes: auto` run used for 3
    config = LatentClassConfig(classes=args.types, restarts=3)
    losses = latent_class_log_losses(train, test, data.vocab.page_group, pages, marginal[0], config)
    for label, loss in losses.items():
        text = f"latent-class, {args.types} types, {label} shared table"
        print(f"{text:58s} {loss:13.4f} {loss - bayes:+12.4f}")


if __name__ == "__main__":
    main()
