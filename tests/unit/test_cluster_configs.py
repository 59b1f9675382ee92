"""The sweep launchers beyond one machine compose and build (``hydra/launcher=ray|slurm``)."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.hydra_configs import CONFIGS


def _launcher(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    return cfg.hydra.launcher


def test_ray_launcher_config_builds_with_its_per_job_request(monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    conf = _launcher("hydra/launcher=ray")
    assert conf._target_ == "hydra_plugins.nextpage_ray_launcher.ray_launcher.RayLauncher"
    assert conf.address is None  # no cluster named: a local instance
    launcher = instantiate(conf)
    assert (launcher.num_cpus, launcher.num_gpus, launcher.max_retries) == (1, 0, 1)
    assert launcher.init == {"num_cpus": None, "include_dashboard": False, "log_to_driver": True}

    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    conf = _launcher("hydra/launcher=ray", "hydra.launcher.num_gpus=1")
    launcher = instantiate(conf)
    assert (launcher.address, launcher.num_gpus) == ("ray://head:10001", 1)


def test_slurm_launcher_config_is_submitits_with_our_defaults() -> None:
    conf = _launcher(
        "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1"
    )
    assert conf._target_.endswith("submitit_launcher.SlurmLauncher")
    values = OmegaConf.to_container(conf, resolve=False)
    assert values["cpus_per_task"] == 1 and values["mem_gb"] == 8
    assert values["partition"] == "gpu" and values["gpus_per_node"] == 1
    assert values["timeout_min"] == 240 and values["array_parallelism"] == 64
    launcher = instantiate(conf)  # builds without a Slurm cluster (submits nothing)
    assert type(launcher).__name__ == "SlurmLauncher"
