"""Study: where do a simulator's conversions come from, against the real sessions?

    python scripts/study_conversions.py --data-dir data/ga_sample [--dynamics <kind>] [--model-path P]

Rolls out ``--sessions`` organic sessions of a trained visitor kind (its simulator dynamics, the
exit calibration included, as ``scripts/check_simulator.py`` runs them) and prints, for the
training split, the test split and the simulator side by side: for each page group viewed in a
converting real session, the share of sessions that view the group and the conversion rate of
those sessions; then the conversion rate by session length. A session converts when it views a
converting page (catalog revenue > 0, as in ``envs/fidelity.py``). A study for
docs/results.md (the latent-type GRU section, GA day); it writes nothing.
"""

from __future__ import annotations

import argparse

import numpy as np

from envs import visitors
from envs.fidelity import converting_pages, sessions_viewing, simulate_organic
from envs.sequences import SessionSequences, load_prepared

LENGTHS = ((1, 4), (5, 9), (10, 19), (20, None))
"""Session-length bands of the last table (``None``: no upper end)."""


def funnel(
    seqs: SessionSequences, page_group: np.ndarray, n_groups: int, converting: np.ndarray
) -> dict[str, np.ndarray]:
    """Per page group: the share of sessions that view it (``reach``) and the conversion rate
    of those sessions (``converts``, NaN where none does); the conversion rate by session
    length band (``by_length``, NaN for an empty band) and each band's share (``length_share``).
    """
    converted = sessions_viewing(seqs, converting)
    reach, converts = np.zeros(n_groups), np.full(n_groups, np.nan)
    for g in range(n_groups):
        viewing = sessions_viewing(seqs, page_group == g)
        reach[g] = viewing.mean()
        if viewing.any():
            converts[g] = converted[viewing].mean()
    by_length, length_share = np.full(len(LENGTHS), np.nan), np.zeros(len(LENGTHS))
    for i, (low, high) in enumerate(LENGTHS):
        band = (seqs.lengths >= low) & (seqs.lengths <= (high or np.iinfo(np.int64).max))
        length_share[i] = band.mean()
        if band.any():
            by_length[i] = converted[band].mean()
    return {
        "conversion": np.array(converted.mean()),
        "reach": reach,
        "converts": converts,
        "by_length": by_length,
        "length_share": length_share,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="data/ga_sample")
    parser.add_argument(
        "--dynamics", default=None, help="a trained visitor kind (default: the default kind)"
    )
    parser.add_argument("--model-path", default=None, help="default: the data's simulator")
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = load_prepared(args.data_dir)
    vocab = data.vocab
    converting = converting_pages(data.catalog(), vocab)
    page_group = np.asarray(vocab.page_group)
    kind = visitors.default_kind() if args.dynamics is None else visitors.get(args.dynamics)
    dynamics = kind.load(data, args.model_path).dynamics()
    simulated = simulate_organic(dynamics, args.sessions, max_steps=args.max_steps, seed=args.seed)
    sides = {"train": data.splits["train"], "test": data.splits["test"], "sim": simulated}
    rows = {name: funnel(s, page_group, len(vocab.groups), converting) for name, s in sides.items()}
    names = " / ".join(sides)
    print(f"sessions: {' / '.join(f'{len(s):,}' for s in sides.values())} ({names})")
    print("conversion: " + " / ".join(f"{float(r['conversion']):.4f}" for r in rows.values()))
    in_real = rows["train"]["converts"] > 0
    print(f"\n{'page group':<24} {'sessions viewing it (' + names + ')':<36} converting of those")
    for g in np.flatnonzero(in_real):
        reach = " / ".join(f"{r['reach'][g]:.3f}" for r in rows.values())
        conv = " / ".join(f"{r['converts'][g]:.3f}" for r in rows.values())
        print(f"{vocab.groups[g]:<24} {reach:<36} {conv}")
    print(f"\n{'session length':<24} {'share of sessions (' + names + ')':<36} converting")
    for i, (low, high) in enumerate(LENGTHS):
        band = f"{low}-{high}" if high else f"{low}+"
        share = " / ".join(f"{r['length_share'][i]:.3f}" for r in rows.values())
        conv = " / ".join(f"{r['by_length'][i]:.3f}" for r in rows.values())
        print(f"{band:<24} {share:<36} {conv}")


if __name__ == "__main__":
    main()
