"""The study's table policies reproduce: docs/results.md's exact ground-truth values of the
synthetic_markov experiment, recomputed with today's code and configs (same seed, same data)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from agents.evaluate import exact_return
from agents.site import Site
from scripts import prepare_data
from scripts.configs import compose_stage
from scripts.pipeline import stage_configs

pytestmark = pytest.mark.integration

# docs/results.md, "Recommenders: DQN and PPO against the exact optimum", column "exact"
PUBLISHED = {
    "true_optimum": 116.895,
    "value_iteration": 115.918,
    "greedy": 111.864,
    "most_likely": 60.226,
    "popular": 34.305,
    "random": 31.495,
    "highest_value": 31.493,
    "organic": 28.661,
}


def test_synthetic_markov_table_policies_reproduce_the_published_values(tmp_path: Path) -> None:
    cfg = compose_stage(
        "pipeline", ["experiment=synthetic_markov", f"out_dir={tmp_path}", "show_progress=false"]
    )
    stages = stage_configs(cfg)
    prepare_data.run(stages["prepare_data"])
    env = OmegaConf.to_container(cfg.env, resolve=True)
    assert isinstance(env, dict)
    env["dynamics"] = "markov"  # these policies are first-order tables: no GRU needed
    site = Site(data_dir=tmp_path / "data", env=env, seed=0)
    truth = site.core(1, "ground_truth", device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, published in PUBLISHED.items():
            key = f"agents/{name}/seed_0"
            agent = (
                stages[key].agent
                if key in stages
                else compose_stage("train", [f"agent={name}"]).agent
            )
            policy = instantiate(OmegaConf.to_container(agent, resolve=True), _convert_="partial")
            policy.fit(site)
            assert round(exact_return(policy, truth), 3) == published, name
    finally:
        torch.set_num_threads(threads)
