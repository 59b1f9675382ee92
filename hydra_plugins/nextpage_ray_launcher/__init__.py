"""NextPage's Hydra launcher plugin: sweep jobs as Ray tasks (``hydra/launcher=ray``).

Hydra only instantiates launchers found under the ``hydra_plugins`` namespace package, hence
this folder's place at the top level. Its config is ``configs/hydra/launcher/ray.yaml``.
"""
