"""A deep policy that reads the visitor model's belief, taught by the belief planner (DAgger).

The belief planner (:class:`agents.belief.BeliefValueIteration`, planned in the learned
world's visitor types) is the strongest page-observing policy the project has, but it is a
table of alpha vectors per page, found by a search that grows with the pages and the belief
grid. Here a network learns to act as it does: its input is the current page (an embedding)
and the learned visitor model's own summary of the visit, the belief over the visitor's type
(tracked exactly as the planner tracks it, :class:`agents.belief.BeliefPolicy`), and it
outputs a score per action.

It is taught by DAgger (Ross, Gordon and Bagnell, 2011): visitors of the learned world are
simulated in rounds; in each, the planner labels every (page, belief) the visitors reach with
its action, the visitors follow the planner with probability ``beta`` (1 in the first round,
then ``beta_decay`` times the last) and the network otherwise, and the network is trained by
cross-entropy on every label so far. So it learns on the states its own mistakes lead to, not
only on the planner's. Everything happens in the learned world: the ground truth is never
seen. The budget is in simulated visitor steps, every draw is seeded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from agents.base import MANIFEST, load_array, load_published_policy, policy_file
from agents.belief import (
    BeliefPolicy,
    BeliefQMDP,
    BeliefValueIteration,
    _action_rows,
    entry_belief,
    load_world,
    refuse_observation_extras,
    save_world,
)
from agents.evaluate import quick_eval
from agents.networks import ActionScoreHead
from clickstream.errors import ConfigError, ModelError, RunFolderError
from envs.core import SiteCore

if TYPE_CHECKING:
    from agents.site import Site


TEACHERS = ("belief_value_iteration", "belief_qmdp")
"""The planners a student learns from (:mod:`agents.belief`)."""

HEADS = ("dense", "scored")
"""The network's last layer: one output per action, or each action scored by embedding."""


class BeliefNet(nn.Module):
    """Scores of every action from the current page and the belief over ``Z`` types:
    ``[embed(page), b, log b]`` through an MLP (the log lets it tell 0.01 from 0.001, where
    the planner's choices change on a buyer's small share).

    The last layer is one output per action (``scored=False``) or, for sites of thousands of
    pages, the dot product of a state vector with each action's embedding plus a bias
    (:class:`agents.networks.ActionScoreHead`), the action embeddings tied to the page
    embeddings the input is read with when the actions are the pages (+ "show nothing").
    """

    def __init__(
        self,
        n_pages: int,
        n_types: int,
        n_actions: int,
        embed_dim: int = 32,
        hidden: Sequence[int] = (256, 256),
        scored: bool = False,
    ) -> None:
        super().__init__()
        # scored: one more row, as the env's page tables have (the head's tie expects it)
        self.pages = nn.Embedding(n_pages + int(scored), embed_dim)
        layers: list[nn.Module] = []
        width = embed_dim + 2 * n_types
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.head: ActionScoreHead | None = None
        if scored:
            tied = self.pages if n_actions - n_pages in (0, 1) else None
            self.head = ActionScoreHead(width, n_actions, embed_dim, tied)
        else:
            layers.append(nn.Linear(width, n_actions))
        self.mlp = nn.Sequential(*layers)

    def forward(self, pages: torch.Tensor, belief: torch.Tensor) -> torch.Tensor:
        b = belief.float()
        x = torch.cat([self.pages(pages), b, torch.log(b.clamp(min=1e-6))], dim=1)
        out = self.mlp(x)
        return out if self.head is None else self.head(out)


class BeliefDistillation(BeliefPolicy):
    """A network over (page, belief), taught by the belief planner of the learned world.

    Args:
        name: Policy name in results.
        teacher_dir: A saved ``belief_value_iteration`` or ``belief_qmdp`` policy folder
            (``scripts/train.py``'s) planned on the same data; ``None``: plan the teacher here
            (``teacher_kind``, ``teacher_model``, ``teacher_resolution``), which on a large
            site is most of the cost.
        teacher_kind: The planner planned here: ``belief_value_iteration`` (point-based, the
            belief-state optimum's lower bound; small sites) or ``belief_qmdp`` (the types'
            values weighed by the belief; any size).
        teacher_model: The visitor kind the teacher plans in when it is planned here (the
            config's ``latent_class``: the learned world's types).
        teacher_resolution: The point-based teacher's belief grid.
        total_timesteps: Visitor steps simulated, over all rounds (the budget).
        rounds: DAgger rounds.
        beta_decay: The teacher's share of the actions in round ``i`` is ``beta_decay ** i``.
        n_visitors: Visitors simulated together.
        epochs: Passes over every label so far, per round.
        batch_size: Labels per gradient step.
        learning_rate: Adam's.
        embed_dim: Page embedding size.
        hidden: The MLP's hidden layers.
        head: ``dense`` (one output per action) or ``scored`` (each action scored by
            embedding: :class:`BeliefNet`, for thousands of pages).
        eval_sessions: Sessions of the learned world simulated after each round (the
            training curve; 0: none).
    """

    kind = "belief_distillation"

    def __init__(
        self,
        name: str = "belief_distillation",
        teacher_dir: str | None = None,
        teacher_kind: str = "belief_value_iteration",
        teacher_model: str | None = None,
        teacher_resolution: int = 8,
        total_timesteps: int = 1_048_576,
        rounds: int = 8,
        beta_decay: float = 0.5,
        n_visitors: int = 2048,
        epochs: int = 3,
        batch_size: int = 4096,
        learning_rate: float = 1e-3,
        embed_dim: int = 32,
        hidden: Sequence[int] = (256, 256),
        head: str = "dense",
        eval_sessions: int = 8192,
    ) -> None:
        self.name = name
        self.teacher_dir = None if teacher_dir in (None, "") else str(teacher_dir)
        self.teacher_kind = str(teacher_kind)
        if self.teacher_kind not in TEACHERS:
            raise ConfigError(
                f"teacher_kind must be one of {sorted(TEACHERS)}, got {self.teacher_kind!r}"
            )
        self.head = str(head)
        if self.head not in HEADS:
            raise ConfigError(f"head must be one of {list(HEADS)}, got {self.head!r}")
        self.teacher_model = None if teacher_model is None else str(teacher_model)
        self.teacher_resolution = int(teacher_resolution)
        self.total_timesteps = int(total_timesteps)
        self.rounds = int(rounds)
        self.beta_decay = float(beta_decay)
        self.n_visitors = int(n_visitors)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        self.embed_dim = int(embed_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.eval_sessions = int(eval_sessions)
        if self.rounds < 1 or self.total_timesteps < self.rounds:
            raise ConfigError(
                f"belief distillation needs rounds >= 1 and total_timesteps >= rounds, got "
                f"rounds={self.rounds}, total_timesteps={self.total_timesteps}"
            )
        if not 0.0 <= self.beta_decay <= 1.0:
            raise ConfigError(f"beta_decay must lie in [0, 1], got {self.beta_decay}")
        self.net: BeliefNet | None = None

    # ---- training ----------------------------------------------------------------------

    def fit(self, site: Site) -> dict[str, Any]:
        refuse_observation_extras(site, self.name)
        start = time.perf_counter()
        teacher = self._teacher(site)
        teacher_seconds = time.perf_counter() - start
        core = site.core(self.n_visitors, "learned")

        def evaluate() -> float:
            return quick_eval(self, site, self.eval_sessions)["eval/mean_return"]

        out = self.distil(
            teacher,
            core,
            seed=site.seed,
            log=site.log_scalars,
            evaluate=evaluate if self.eval_sessions > 0 else None,
        )
        return {**out, "teacher_seconds": teacher_seconds}

    def _teacher(self, site: Site) -> BeliefValueIteration | BeliefQMDP:
        """The planner to learn from: loaded from ``teacher_dir`` (checked to be planned in
        this site's learned visitor types) or planned here."""
        if self.teacher_dir is None:
            if self.teacher_model is None:
                raise ConfigError(
                    "belief distillation needs a teacher: teacher_dir (a saved "
                    "belief_value_iteration or belief_qmdp folder) or teacher_model (a visitor "
                    "kind with tables per type, e.g. the learned world's latent classes)"
                )
            if self.teacher_kind == "belief_qmdp":
                teacher: BeliefValueIteration | BeliefQMDP = BeliefQMDP(self.teacher_model)
            else:
                teacher = BeliefValueIteration(
                    self.teacher_model, resolution=self.teacher_resolution
                )
            teacher.fit(site)
            return teacher
        path = Path(self.teacher_dir)
        teacher = load_published_policy(path)
        if not isinstance(teacher, BeliefValueIteration | BeliefQMDP):
            raise ConfigError(
                f"teacher_dir must hold a {' or a '.join(TEACHERS)} policy, it holds "
                f"{teacher.kind!r}",
                file=str(path),
            )
        world = site.kind_mdp(teacher.model)
        if teacher.world is not None:
            same_actions = teacher.world.click_model == world.click_model and torch.equal(
                teacher.world.action_pages, world.action_pages
            )
            if not same_actions:
                raise ConfigError(
                    "the teacher was planned with another click model or other actions than "
                    f"this site's ({teacher.world.click_model} against {world.click_model}): "
                    "plan it with this env's settings",
                    file=str(path),
                )
            theirs, ours, what = teacher.world.transitions, world.transitions, "organic rows"
        else:
            assert teacher.rows is not None
            theirs, ours, what = teacher.rows, _action_rows(world).float(), "action rows"
        if theirs.shape != ours.shape or not torch.allclose(theirs, ours.to(theirs), atol=1e-6):
            raise ConfigError(
                f"the teacher was planned in other visitor types than this site's "
                f"{teacher.model!r} world (its {what} {tuple(theirs.shape)} differ from "
                f"this world's {tuple(ours.shape)}): plan it on this data",
                file=str(path),
            )
        return teacher

    def distil(
        self,
        teacher: BeliefPolicy,
        core: SiteCore,
        seed: int,
        log: Callable[[dict[str, float], int], None] | None = None,
        evaluate: Callable[[], float] | None = None,
    ) -> dict[str, Any]:
        """Teach the network to act as ``teacher`` on the visitors of ``core`` (DAgger).

        Returns the steps simulated, the budget, and per round the share of the fresh
        states where the network already agreed with the teacher, the loss, and (with
        ``evaluate``) the learned world's mean return.
        """
        self.track_like(teacher)
        n_pages, n_types = self.tracking().shape
        torch.manual_seed(seed)
        self.net = BeliefNet(
            n_pages,
            n_types,
            teacher.n_actions(),
            self.embed_dim,
            self.hidden,
            scored=self.head == "scored",
        )
        optimizer = torch.optim.Adam(self.net.parameters(), lr=self.learning_rate)
        gen = torch.Generator().manual_seed(seed)
        b = core.n_visitors
        steps_per_round = max(1, math.ceil(self.total_timesteps / self.rounds / b))

        obs = core.reset(seed)
        state: Any = None
        starts = torch.ones(b, dtype=torch.bool)
        pages_seen: list[torch.Tensor] = []
        beliefs_seen: list[torch.Tensor] = []
        labels_seen: list[torch.Tensor] = []
        curve: list[dict[str, float]] = []
        steps = 0
        for round_ in range(self.rounds):
            beta = self.beta_decay**round_
            agree = 0
            for _ in range(steps_per_round):
                pages = obs[:, -1].cpu().clamp(max=n_pages - 1)
                belief = self.beliefs(pages, state, starts)
                label = teacher.choose(pages, belief)
                own = self.choose(pages, belief)
                agree += int((own == label).sum())
                follow = torch.rand(b, generator=gen) < beta
                action = torch.where(follow, label, own)
                pages_seen.append(pages)
                beliefs_seen.append(belief.float())
                labels_seen.append(label)
                r = core.step(action.to(core.device))
                state = (belief, pages, action)
                starts = (r.terminated | r.truncated).cpu()
                obs = r.obs
                steps += b
            loss = self._train(
                torch.cat(pages_seen),
                torch.cat(beliefs_seen),
                torch.cat(labels_seen),
                optimizer,
                gen,
            )
            point = {
                "distill/agreement": agree / (steps_per_round * b),
                "distill/loss": loss,
                "distill/beta": beta,
            }
            if evaluate is not None:
                point["eval/mean_return"] = evaluate()
            curve.append(point)
            if log is not None:
                log(point, steps)
        return {
            "steps": steps,
            "budget_steps": self.total_timesteps,
            "labels": int(sum(len(x) for x in labels_seen)),
            "final_agreement": curve[-1]["distill/agreement"],
            "curve": curve,
        }

    def _train(
        self,
        pages: torch.Tensor,
        beliefs: torch.Tensor,
        labels: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        gen: torch.Generator,
    ) -> float:
        """``epochs`` passes of cross-entropy over every label; the last pass's mean loss."""
        assert self.net is not None
        self.net.train()
        total, count = 0.0, 0
        for epoch in range(self.epochs):
            order = torch.randperm(len(labels), generator=gen)
            for i in range(0, len(order), self.batch_size):
                idx = order[i : i + self.batch_size]
                loss = nn.functional.cross_entropy(self.net(pages[idx], beliefs[idx]), labels[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if epoch == self.epochs - 1:
                    total += float(loss.detach()) * len(idx)
                    count += len(idx)
        self.net.eval()
        return total / max(count, 1)

    # ---- acting ------------------------------------------------------------------------

    def scores(self, pages: torch.Tensor, belief: torch.Tensor) -> torch.Tensor:
        """The network's score (logit) of each action at (page, belief), ``(B, A)``."""
        if self.net is None:
            raise ModelError(f"policy {self.name!r} is not fitted yet")
        with torch.no_grad():
            return self.net(pages, belief)

    # ---- persistence -------------------------------------------------------------------

    def _save_state(self, out: Path) -> dict[str, Any]:
        entry = self.tracking()
        if self.net is None:
            raise ModelError(f"policy {self.name!r} is not fitted yet")
        # the belief is tracked as the teacher tracked it: its dense rows, or its world's
        if self.world is not None:
            tracked = save_world(out, self.world)
        else:
            assert self.rows is not None
            np.save(out / "rows.npy", self.rows.numpy())
            np.save(out / "entry.npy", entry.numpy())
            tracked = {"rows": "rows.npy", "entry": "entry.npy"}
        torch.save(self.net.state_dict(), out / "net.pt")
        return {
            **tracked,
            "weights": "net.pt",
            "embed_dim": self.embed_dim,
            "hidden": list(self.hidden),
            "head": self.head,
        }

    @classmethod
    def _load(cls, path: Path, manifest: dict[str, Any]) -> BeliefDistillation:
        from envs.visitor_model import load_weights_only

        rows, world = None, None
        if "rows" in manifest:
            rows = torch.as_tensor(load_array(policy_file(path, manifest, "rows"))).float()
            entry = torch.as_tensor(load_array(policy_file(path, manifest, "entry"))).double()
            if rows.ndim != 4 or tuple(entry.shape) != (rows.shape[0], rows.shape[3]):
                raise RunFolderError(
                    f"rows (P, A, P + 1, Z) and entry (P, Z) do not fit: {tuple(rows.shape)} "
                    f"and {tuple(entry.shape)}",
                    file=str(path / MANIFEST),
                )
            n_pages, n_actions, _, n_types = rows.shape
        else:
            world = load_world(path, manifest)
            entry = entry_belief(world)
            n_pages, n_actions, n_types = world.n_pages, world.n_actions, world.n_intents
        hidden = manifest.get("hidden", [256, 256])
        if not isinstance(hidden, list) or not all(isinstance(h, int) for h in hidden):
            raise RunFolderError(f"hidden must be a list of ints, got {hidden!r}", file=str(path))
        if manifest.get("head", "dense") not in HEADS:
            raise RunFolderError(
                f"head must be one of {list(HEADS)}, got {manifest.get('head')!r}", file=str(path)
            )
        policy = cls(
            name=str(manifest.get("name", cls.kind)),
            embed_dim=int(manifest.get("embed_dim", 32)),
            hidden=hidden,
            head=str(manifest.get("head", "dense")),
        )
        net = BeliefNet(
            n_pages,
            n_types,
            n_actions,
            policy.embed_dim,
            policy.hidden,
            scored=policy.head == "scored",
        )
        weights_file = policy_file(path, manifest, "weights")
        weights = load_weights_only(weights_file, "belief network weights")
        try:
            net.load_state_dict(weights)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise RunFolderError(
                f"the weights do not fit the network the manifest describes: {str(exc)[:300]}",
                file=str(weights_file),
            ) from None
        net.eval()
        policy.rows, policy.world, policy.entry, policy.net = rows, world, entry, net
        return policy
