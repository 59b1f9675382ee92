"""The belief network taught by the belief planner (agents/distill.py): it learns to act as
its teacher on the states it reaches itself, replays under a seed, and saves as data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agents.base import load_policy
from agents.belief import BeliefQMDP, BeliefValueIteration
from agents.distill import BeliefDistillation
from agents.evaluate import mean_ci, simulate
from agents.tabular import SiteMDP
from clickstream.errors import ConfigError, RunFolderError
from clickstream.synthetic import build_store
from envs.site_env import build_core


@pytest.fixture(scope="module")
def store_and_teacher():
    """A 50-page intent store and the belief planner of its true intents."""
    store = build_store(n_pages=50, mode="intent", seed=5)
    mdp = SiteMDP.from_core(build_core(1, store=store, action_level="group", max_steps=20))
    teacher = BeliefValueIteration("true", "belief_optimum", resolution=8)
    teacher.plan(mdp)
    return store, mdp, teacher


def _core(store, visitors: int = 512):
    return build_core(visitors, store=store, action_level="group", max_steps=20)


def _student(**kw) -> BeliefDistillation:
    options = dict(total_timesteps=200_000, rounds=5, n_visitors=512, hidden=[64, 64])
    return BeliefDistillation(embed_dim=16, **{**options, **kw})


@pytest.fixture(scope="module")
def taught(store_and_teacher):
    store, _, teacher = store_and_teacher
    student = _student()
    return student, student.distil(teacher, _core(store), seed=0)


def test_the_student_learns_to_act_as_its_teacher(store_and_teacher, taught) -> None:
    store, mdp, teacher = store_and_teacher
    student, out = taught
    agreement = [point["distill/agreement"] for point in out["curve"]]
    assert agreement[0] < 0.2  # an untrained network picks its own actions
    assert agreement[-1] >= 0.99  # on the states it reaches following itself 94 % of the time
    assert out["steps"] >= out["budget_steps"] == 200_000
    assert out["labels"] == out["steps"]
    tables = {k: torch.zeros(mdp.n_pages + 1) for k in ("revenue", "time_on_page_s")}
    returns = {
        p.name: mean_ci(simulate(p, _core(store), 40_000, seed=3, tables=tables).returns)
        for p in (teacher, student)
    }
    (t_mean, t_half), (s_mean, s_half) = returns["belief_optimum"], returns["belief_distillation"]
    assert abs(s_mean - t_mean) <= t_half + s_half


def test_the_student_tracks_the_teachers_belief(store_and_teacher, taught) -> None:
    _, mdp, teacher = store_and_teacher
    student, _ = taught
    obs = np.array([[mdp.n_pages, p] for p in range(mdp.n_pages)])
    starts = np.ones(len(obs), dtype=bool)
    _, (b_teacher, _, _) = teacher.predict(obs, None, starts)
    actions, (b_student, _, chosen) = student.predict(obs, None, starts)
    torch.testing.assert_close(b_student, b_teacher)
    np.testing.assert_array_equal(actions, chosen.numpy())
    assert student.action_scores(obs).shape == (mdp.n_pages, mdp.n_actions)


def test_distillation_replays_under_a_seed(store_and_teacher) -> None:
    store, _, teacher = store_and_teacher
    runs = [
        _student(total_timesteps=20_000, rounds=2).distil(teacher, _core(store), seed=7)
        for _ in range(2)
    ]
    assert runs[0]["curve"] == runs[1]["curve"]


def test_the_student_saves_as_data_and_refuses_other_weights(taught, tmp_path) -> None:
    student, _ = taught
    folder = student.save(tmp_path / "student")
    obs = np.array([[50, 3, 7, 1], [50, 50, 50, 4]])
    loaded = load_policy(folder)
    np.testing.assert_array_equal(loaded.predict(obs, None, None)[0], student.predict(obs)[0])
    np.testing.assert_allclose(loaded.action_scores(obs), student.action_scores(obs))
    manifest = json.loads((folder / "policy.json").read_text())
    manifest["hidden"] = [32]  # a network the weights do not fit
    (folder / "policy.json").write_text(json.dumps(manifest))
    with pytest.raises(RunFolderError, match="do not fit"):
        load_policy(folder)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="rounds"):
        BeliefDistillation(rounds=0)
    with pytest.raises(ConfigError, match="beta_decay"):
        BeliefDistillation(beta_decay=1.5)
    with pytest.raises(ConfigError, match="teacher_kind"):
        BeliefDistillation(teacher_kind="greedy")
    with pytest.raises(ConfigError, match="head must be"):
        BeliefDistillation(head="wide")


def test_a_student_without_a_teacher_is_refused() -> None:
    with pytest.raises(ConfigError, match="needs a teacher"):
        BeliefDistillation()._teacher(site=None)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def scored_student():
    """The scored head taught by QMDP on the 50-page store recommending single pages (the
    action embeddings tied to the page embeddings)."""
    store = build_store(n_pages=50, mode="intent", seed=5)
    mdp = SiteMDP.from_core(build_core(1, store=store, action_level="page", max_steps=20))
    teacher = BeliefQMDP("true")
    teacher.plan(mdp)
    student = _student(head="scored", teacher_kind="belief_qmdp")
    core = build_core(512, store=store, action_level="page", max_steps=20)
    return store, mdp, teacher, student, student.distil(teacher, core, seed=0)


def test_the_scored_student_learns_qmdp_without_the_action_table(scored_student, tmp_path) -> None:
    store, mdp, teacher, student, out = scored_student
    assert student.rows is None and student.world is teacher.world  # tracked as QMDP tracks
    net = student.net
    assert net is not None and net.head is not None and net.head.pages is net.pages  # tied
    assert net.pages.num_embeddings == mdp.n_pages + 1 and mdp.n_actions == mdp.n_pages + 1
    agreement = [point["distill/agreement"] for point in out["curve"]]
    assert agreement[0] < 0.2 and agreement[-1] >= 0.97
    tables = {k: torch.zeros(mdp.n_pages + 1) for k in ("revenue", "time_on_page_s")}

    def play(policy):
        core = build_core(512, store=store, action_level="page", max_steps=20)
        return mean_ci(simulate(policy, core, 40_000, seed=3, tables=tables).returns)

    (t_mean, t_half), (s_mean, s_half) = play(teacher), play(student)
    assert abs(s_mean - t_mean) <= t_half + s_half
    folder = student.save(tmp_path / "scored")
    assert not (folder / "rows.npy").exists() and (folder / "world_transitions.npy").exists()
    loaded = load_policy(folder)
    obs = np.array([[50, 3, 7, 1], [50, 50, 50, 4]])
    np.testing.assert_array_equal(loaded.predict(obs, None, None)[0], student.predict(obs)[0])
    np.testing.assert_allclose(loaded.action_scores(obs), student.action_scores(obs), rtol=1e-6)
    pages = np.load(folder / "world_action_pages.npy")
    np.save(folder / "world_action_pages.npy", pages + 1000)  # pages the site does not have
    with pytest.raises(RunFolderError, match="action_pages holds ids outside"):
        load_policy(folder)
    np.save(folder / "world_action_pages.npy", pages)
    manifest = json.loads((folder / "policy.json").read_text())
    manifest["head"] = "dense"  # the weights are a scored head's
    (folder / "policy.json").write_text(json.dumps(manifest))
    with pytest.raises(RunFolderError, match="do not fit"):
        load_policy(folder)
    manifest["head"] = "exec"
    (folder / "policy.json").write_text(json.dumps(manifest))
    with pytest.raises(RunFolderError, match="head must be"):
        load_policy(folder)
