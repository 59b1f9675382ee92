"""Study: the Markov baselines' smoothing strengths against held-out log-loss.

    python scripts/prepare_data.py out_dir=data/synthetic
    python scripts/prepare_data.py data=ga360 out_dir=data/ga_sample
    python scripts/prepare_data.py data=ga360 repeats=collapse out_dir=data/ga_sample_collapsed
    python scripts/study_baseline_smoothing.py data/synthetic data/ga_sample data/ga_sample_collapsed

For each prepared dataset, the validation log-loss of first-order Markov over a grid of ``k1``
and of second-order Markov (with ``k1 = 20``) over a grid of ``k2``, each printed as its excess
over the best of its grid: how the defaults of ``envs/baselines.py`` were chosen
(docs/results.md, "Baselines: smoothing strengths").
"""

from __future__ import annotations

import argparse

from envs.baselines import FirstOrderMarkov, SecondOrderMarkov, mean_log_loss
from envs.sequences import load_prepared

GRID = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dirs", nargs="+", help="prepared datasets")
    args = parser.parse_args()
    for data_dir in args.data_dirs:
        data = load_prepared(data_dir)
        train, valid = data.splits["train"], data.splits["valid"]
        print(f"{data_dir}: {train.n_steps:,} training steps, {valid.n_steps:,} validation steps")
        for name, make in (
            ("first order, k1", lambda k: FirstOrderMarkov(k=k)),
            ("second order, k2 (k1 = 20)", lambda k: SecondOrderMarkov(k=k, k1=20.0)),
        ):
            losses = {k: mean_log_loss(make(k).fit(train), valid) for k in GRID}
            low = min(losses.values())
            row = "  ".join(f"{k:g}: +{v - low:.3f}" for k, v in losses.items())
            print(f"  {name}: best {min(losses, key=losses.__getitem__):g} ({low:.4f}); {row}")


if __name__ == "__main__":
    main()
