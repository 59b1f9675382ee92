"""Simulated visitors: the learned next-page model, click model, rewards and Gymnasium envs.

Importing the package registers ``NextPage/Site-v0`` with Gymnasium::

    import gymnasium as gym
    env = gym.make("envs:NextPage/Site-v0")                 # "envs:" imports this package
    vec = gym.make_vec("envs:NextPage/Site-v0", num_envs=256, vectorization_mode="vector_entry_point")
"""

from gymnasium.envs.registration import register, registry

import envs.config  # noqa: F401  (the typed env schema, for Hydra configs composed anywhere)

ENV_ID = "NextPage/Site-v0"

if ENV_ID not in registry:
    register(
        id=ENV_ID,
        entry_point="envs.site_env:SiteEnv",
        vector_entry_point="envs.vector_env:SiteVectorEnv",
    )
