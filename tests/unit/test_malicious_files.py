"""Files in a run folder are data: a crafted file that would run code is refused unread.

Each payload here creates a marker file if anything unpickles or imports it (a pickle whose
``__reduce__`` opens the marker for writing, or a module that writes it on import). Every test
asserts that the marker never appears and that the error names the file.
"""

from __future__ import annotations

import io
import json
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.base import POLICY_KINDS, Policy, load_policy, load_published_policy, policy_class
from clickstream.errors import ClickstreamError, RunFolderError
from clickstream.runfolder import read_manifest, seal, verify_folder
from envs.sequences import Vocabulary
from envs.visitor_model import ModelConfig, VisitorModel


class Marker:
    """Unpickling this calls ``open(path, "w")``: the marker file appears."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "MARKER"
    # the payload works: a plain unpickle creates the marker (then it is removed again)
    pickle.loads(pickle.dumps(Marker(path))).close()
    assert path.exists()
    path.unlink()
    return path


def refused(call, file: Path, match: str = "") -> str:
    """Run ``call``; it must raise a ClickstreamError naming ``file``."""
    with pytest.raises(ClickstreamError) as err:
        call()
    text = str(err.value)
    assert str(file) in text, text
    assert match in text, text
    return text


def small_model() -> VisitorModel:
    vocab = Vocabulary(("/a", "/b", "/c"), ("g",), np.zeros(3, dtype=np.int64))
    return VisitorModel(vocab, ModelConfig(hidden_size=4, embedding_dim=2, use_groups=False))


# ---- torch files: the visitor model and the training checkpoint ---------------------------


def test_visitor_model_with_a_pickled_object_is_refused(tmp_path: Path, marker: Path) -> None:
    good = small_model().save(tmp_path / "good.pt")
    state = torch.load(good, weights_only=True)
    state["metrics"] = {"payload": Marker(marker)}
    torch.save(state, tmp_path / "model.pt")
    refused(lambda: VisitorModel.load(tmp_path / "model.pt"), tmp_path / "model.pt", "refused")
    assert not marker.exists()


def test_visitor_model_in_a_verified_run_folder_is_still_refused(
    tmp_path: Path, marker: Path
) -> None:
    # a manifest vouches for the bytes, not for their being data: the loader checks anyway
    from clickstream.prepare import prepare
    from clickstream.synthetic import build_store
    from envs.sequences import load_prepared
    from envs.site_env import build_core

    data_dir = tmp_path / "data"
    prepare(build_store(n_pages=50, seed=0).sample_sessions(200, seed=1), data_dir)
    data = load_prepared(data_dir)
    sim = data_dir / "simulator"
    sim.mkdir()
    torch.save({"kind": "nextpage.visitor_model", "x": Marker(marker)}, sim / "model.pt")
    seal(sim, "train_simulator", inputs={"data": data.manifest.digest})
    refused(lambda: build_core(1, data_dir=data_dir, dynamics="gru"), sim / "model.pt")
    assert not marker.exists()


def test_training_checkpoint_with_a_pickled_object_is_refused(tmp_path: Path, marker: Path) -> None:
    from envs.training import read_checkpoint

    torch.save({"kind": "nextpage.training_checkpoint", "history": Marker(marker)}, tmp_path / "l")
    refused(lambda: read_checkpoint(tmp_path / "l", None), tmp_path / "l", "refused")
    assert not marker.exists()


def test_train_simulator_resume_refuses_a_pickled_checkpoint(tmp_path: Path, marker: Path) -> None:
    from scripts.train_simulator import run
    from tests.hydra_configs import compose_cfg, prepare_synthetic

    data_dir = prepare_synthetic(tmp_path / "data", "data.n_sessions=300", "data.n_pages=50")
    partial = tmp_path / ".sim.partial"
    partial.mkdir()
    torch.save({"kind": "nextpage.training_checkpoint", "x": Marker(marker)}, partial / "last.pt")
    cfg = compose_cfg(
        "train_simulator",
        [
            f"data_dir={data_dir}",
            f"out_dir={tmp_path / 'sim'}",
            "resume=true",
            "show_progress=false",
        ],
    )
    refused(lambda: run(cfg), partial / "last.pt", "refused unread")
    assert not marker.exists()


# ---- numpy files ---------------------------------------------------------------------------


def test_latent_class_npz_with_an_object_array_is_refused(tmp_path: Path, marker: Path) -> None:
    from envs.latent_class import LatentClassModel

    path = tmp_path / "latent_class.npz"
    np.savez(path, prior=np.array([Marker(marker)], dtype=object), entry=np.zeros(1))
    refused(lambda: LatentClassModel.load(path), path)
    assert not marker.exists()
    # truncated: named too
    np.savez(path, prior=np.ones(2), entry=np.ones((2, 3)))
    path.write_bytes(path.read_bytes()[:100])
    refused(lambda: LatentClassModel.load(path), path, "not a readable latent-class model")


def test_true_model_npz_with_an_object_array_is_refused(tmp_path: Path, marker: Path) -> None:
    from clickstream.synthetic import SyntheticStore, build_store

    npz, _ = build_store(n_pages=50, seed=0).save(tmp_path / "true_model")
    np.savez(npz, prior=np.array([Marker(marker)], dtype=object))
    refused(lambda: SyntheticStore.load(tmp_path / "true_model"), npz)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("kind", "key", "name"), [("table", "scores", "scores.npy"), ("intent_oracle", "q", "q.npy")]
)
def test_policy_npy_with_an_object_array_is_refused(
    tmp_path: Path, marker: Path, kind: str, key: str, name: str
) -> None:
    np.save(tmp_path / name, np.array([[Marker(marker)]], dtype=object), allow_pickle=True)
    (tmp_path / "policy.json").write_text(json.dumps({"kind": kind, "name": "x", key: name}))
    refused(lambda: load_policy(tmp_path), tmp_path / name, "not a readable array")
    assert not marker.exists()


# ---- policy.json: classes are chosen from a registry, never imported ----------------------


@pytest.fixture
def marker_module(tmp_path: Path, marker: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module on ``sys.path`` that creates the marker when imported."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "nextpage_marker_module.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nclass Evil:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(code))
    return "nextpage_marker_module"


@pytest.mark.parametrize(
    "manifest",
    [
        {"kind": "nextpage_marker_module"},
        {"kind": "nextpage_marker_module.Evil"},
        {"kind": "os.system"},
        {"class": "nextpage_marker_module.Evil"},
        {"class": "os.system", "name": "x"},
        {"kind": ["sb3"]},
        {"kind": "__init__"},
    ],
)
def test_policy_json_naming_code_is_refused(
    tmp_path: Path, marker: Path, marker_module: str, manifest: dict
) -> None:
    folder = tmp_path / "policy"
    folder.mkdir()
    (folder / "policy.json").write_text(json.dumps(manifest))
    text = refused(lambda: load_policy(folder), folder / "policy.json")
    assert "known kinds are" in text or "names a class to import" in text
    assert not marker.exists()
    assert marker_module not in sys.modules


def test_a_policy_file_outside_its_folder_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "scores.npy", np.zeros((3, 2)))
    folder = tmp_path / "policy"
    folder.mkdir()
    (folder / "policy.json").write_text(json.dumps({"kind": "table", "scores": "../scores.npy"}))
    refused(lambda: load_policy(folder), folder / "policy.json", "inside the policy folder")


def test_every_policy_class_is_registered_by_its_kind() -> None:
    import agents.belief
    import agents.belief_ppo
    import agents.distill
    import agents.heuristics
    import agents.sb3
    import agents.slate
    import agents.tabular  # noqa: F401

    def subclasses(cls: type) -> set[type]:
        return {c for s in cls.__subclasses__() for c in (s, *subclasses(s))}

    concrete = {
        c for c in subclasses(Policy) if "kind" in vars(c) and c.__module__.startswith("agents.")
    }
    assert {c.kind for c in concrete} == set(POLICY_KINDS)
    for cls in concrete:
        assert policy_class(cls.kind) is cls


# ---- Stable-Baselines3 agents --------------------------------------------------------------


def sb3_folder(tmp_path: Path) -> Path:
    """A saved PPO agent (a tiny untrained network)."""
    from gymnasium import spaces
    from stable_baselines3 import PPO

    from agents.sb3 import SB3Agent, _rebuild

    agent = SB3Agent("ppo", "ppo", policy_kwargs={"net_arch": [8]}, verbose=False)
    obs, actions = spaces.MultiDiscrete([6, 6]), spaces.Discrete(6)
    agent.model = _rebuild(PPO, "MlpPolicy", obs, actions, {"net_arch": [8]})
    return agent.save(tmp_path / "ppo")


def test_sb3_agent_round_trip_without_a_pickle(tmp_path: Path) -> None:
    folder = sb3_folder(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["policy.json", "policy.pt"]
    first = load_policy(folder)
    again = load_policy(folder)
    obs = np.array([[0, 1], [5, 3]])
    np.testing.assert_array_equal(first.action_scores(obs), again.action_scores(obs))
    assert first.action_scores(obs).shape == (2, 6)


@pytest.mark.parametrize(
    ("algo", "policy", "double_q"),
    [
        ("ppo", "PagePolicy", False),
        ("dqn", "MlpPolicy", True),
        ("dqn", "PagePolicy", False),
        ("recurrent_ppo", "PagePolicy", False),
        ("ppo", "VisitPolicy", False),
        ("dqn", "VisitPolicy", True),
    ],
)
def test_sb3_agents_of_every_network_round_trip(
    tmp_path: Path, algo: str, policy: str, double_q: bool
) -> None:
    from gymnasium import spaces

    from agents.networks import POLICIES
    from agents.sb3 import ALGORITHMS, DoubleDQN, SB3Agent, _rebuild

    kwargs = {"net_arch": [8], "activation_fn": "tanh"}  # an activation by name
    agent = SB3Agent(algo, algo, policy=policy, double_q=double_q, policy_kwargs=kwargs)
    algorithm = DoubleDQN if double_q else ALGORITHMS[algo]
    cls = POLICIES[algo].get(policy, policy)
    agent.model = _rebuild(algorithm, cls, spaces.MultiDiscrete([6, 6]), spaces.Discrete(6), kwargs)
    back = load_policy(agent.save(tmp_path / algo))
    assert type(back.model) is algorithm and type(back.model.policy) is type(agent.model.policy)
    obs = np.array([[0, 1], [5, 3], [2, 2]])
    np.testing.assert_array_equal(back.action_scores(obs), agent.action_scores(obs))
    manifest = json.loads((tmp_path / algo / "policy.json").read_text())
    assert manifest["policy"] == policy and manifest["policy_kwargs"]["activation_fn"] == "tanh"


def test_sb3_weights_with_a_pickled_object_are_refused(tmp_path: Path, marker: Path) -> None:
    folder = sb3_folder(tmp_path)
    weights = torch.load(folder / "policy.pt", weights_only=True)
    weights["payload"] = Marker(marker)
    torch.save(weights, folder / "policy.pt")
    refused(lambda: load_policy(folder), folder / "policy.pt", "refused unread")
    assert not marker.exists()


def test_belief_network_weights_with_a_pickled_object_are_refused(
    tmp_path: Path, marker: Path
) -> None:
    from agents.distill import BeliefDistillation, BeliefNet

    policy = BeliefDistillation(embed_dim=2, hidden=[4])
    policy.rows, policy.entry = torch.full((3, 4, 4, 2), 0.25), torch.full((3, 2), 0.5).double()
    policy.net = BeliefNet(3, 2, 4, embed_dim=2, hidden=[4])
    folder = policy.save(tmp_path / "distilled")
    np.testing.assert_allclose(
        load_policy(folder).action_scores([[0, 1]]), policy.action_scores([[0, 1]])
    )
    weights = torch.load(folder / "net.pt", weights_only=True)
    weights["payload"] = Marker(marker)
    torch.save(weights, folder / "net.pt")
    refused(lambda: load_policy(folder), folder / "net.pt", "refused unread")
    assert not marker.exists()


def test_belief_ppo_weights_with_a_pickled_object_are_refused(tmp_path: Path, marker: Path) -> None:
    from gymnasium import spaces
    from stable_baselines3 import PPO

    from agents.belief import BeliefQMDP
    from agents.belief_ppo import BeliefPPO, feature_space
    from agents.sb3 import _rebuild
    from agents.tabular import SiteMDP
    from clickstream.synthetic import build_store
    from envs.site_env import build_core

    store = build_store(n_pages=50, mode="intent", seed=1)
    tracker = BeliefQMDP("true")
    tracker.plan(SiteMDP.from_core(build_core(1, store=store, action_level="group")))
    policy = BeliefPPO("true", policy_kwargs={"net_arch": [4]}, verbose=False)
    policy.world, policy.entry = tracker.world, tracker.tracking()
    n_pages, n_types = tracker.tracking().shape
    space = feature_space(n_pages, n_types)
    actions = spaces.Discrete(tracker.n_actions())
    policy.sb3 = _rebuild(PPO, "MlpPolicy", space, actions, {"net_arch": [4]})
    folder = policy.save(tmp_path / "belief_ppo")
    weights = torch.load(folder / "policy.pt", weights_only=True)
    weights["payload"] = Marker(marker)
    torch.save(weights, folder / "policy.pt")
    refused(lambda: load_policy(folder), folder / "policy.pt", "refused unread")
    assert not marker.exists()


def test_sb3_zip_of_an_older_version_is_not_opened(tmp_path: Path, marker: Path) -> None:
    # SB3's .zip: a "data" JSON whose ":serialized:" entries are cloudpickles
    import base64

    import cloudpickle

    folder = tmp_path / "ppo"
    folder.mkdir()
    payload = base64.b64encode(cloudpickle.dumps(Marker(marker))).decode()
    data = {"observation_space": {":type:": "x", ":serialized:": payload}}
    with zipfile.ZipFile(folder / "model.zip", "w") as zf:
        zf.writestr("data", json.dumps(data))
        buffer = io.BytesIO()
        torch.save({"x": Marker(marker)}, buffer)
        zf.writestr("policy.pth", buffer.getvalue())
    (folder / "policy.json").write_text(
        json.dumps({"kind": "sb3", "name": "ppo", "algo": "ppo", "model": "model.zip"})
    )
    refused(lambda: load_policy(folder), folder / "policy.json", "not opened")
    assert not marker.exists()


@pytest.mark.parametrize(
    "change",
    [
        {"policy": "os.system"},
        {"policy_kwargs": {"activation_fn": "os.system"}},
        {"policy_kwargs": {"features_extractor_class": "nextpage_marker_module.Evil"}},
        {"algo": "os.system"},
        {"observation_space": {"type": "Box", "low": 0}},
        {"weights": "../../policy.pt"},
    ],
)
def test_sb3_policy_json_naming_code_is_refused(
    tmp_path: Path, marker: Path, marker_module: str, change: dict
) -> None:
    folder = sb3_folder(tmp_path)
    manifest = json.loads((folder / "policy.json").read_text())
    (folder / "policy.json").write_text(json.dumps({**manifest, **change}))
    with pytest.raises(ClickstreamError) as err:
        load_policy(folder)
    assert str(folder) in str(err.value)
    assert not marker.exists()
    assert marker_module not in sys.modules


# ---- the run folder's own files ------------------------------------------------------------


def test_a_manifest_pointing_outside_its_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "eval"
    folder.mkdir()
    (tmp_path / "secret").write_text("x")
    (folder / "results.json").write_text("{}")
    seal(folder, "evaluate")
    record = json.loads((folder / "manifest.json").read_text())
    record["files"]["../secret"] = record["files"].pop("results.json")
    (folder / "manifest.json").write_text(json.dumps(record))
    refused(lambda: verify_folder(folder), folder / "manifest.json", "plain relative path")


def test_a_manifest_whose_library_versions_are_not_names_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "eval"
    folder.mkdir()
    (folder / "results.json").write_text("{}")
    seal(folder, "evaluate")
    record = json.loads((folder / "manifest.json").read_text())
    assert set(record["libraries"]) >= {"python", "torch"}
    verify_folder(folder)
    record["libraries"] = {"torch": {"__class__": "os.system"}}
    (folder / "manifest.json").write_text(json.dumps(record))
    refused(lambda: verify_folder(folder), folder / "manifest.json", "libraries is not a mapping")
    del record["libraries"]  # a manifest written before libraries were recorded still reads
    (folder / "manifest.json").write_text(json.dumps(record))
    verify_folder(folder)


def test_a_deeply_nested_manifest_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    refused(lambda: read_manifest(tmp_path), tmp_path / "manifest.json", "not valid JSON")


def test_a_published_policy_with_a_pickle_is_skipped_by_the_web_app(
    webapp_run_dir: Path, tmp_path: Path, marker: Path
) -> None:
    import shutil

    from tests.hydra_configs import reseal
    from webapp.artefacts import load_run

    copy = tmp_path / "run"
    shutil.copytree(webapp_run_dir, copy)
    folder = copy / "agents" / "ppo" / "seed_0"
    weights = torch.load(folder / "policy.pt", weights_only=True)
    weights["payload"] = Marker(marker)
    torch.save(weights, folder / "policy.pt")
    # changed after publishing: the manifest catches it
    refused(lambda: load_published_policy(folder), folder / "policy.pt", "the manifest says")
    reseal(folder)  # even when someone vouches for the bytes, they are not unpickled
    run = load_run(copy)
    assert "ppo" not in run.policies
    # named relative to the run folder: the API shows the reason, and no path of this machine
    assert run.skipped["ppo"].startswith("agents/ppo/seed_0/policy.pt: ")
    assert str(copy) not in run.skipped["ppo"]
    assert not marker.exists()


def test_corrupt_run_files_give_errors_naming_them(webapp_run_dir: Path, tmp_path: Path) -> None:
    import shutil

    from envs.sequences import load_prepared
    from tests.hydra_configs import reseal

    copy = tmp_path / "run"
    shutil.copytree(webapp_run_dir, copy)
    data = copy / "data"
    # truncated after publishing: the manifest's size names it
    hits = (data / "hits.parquet").read_bytes()
    (data / "hits.parquet").write_bytes(hits[: len(hits) // 2])
    refused(lambda: load_prepared(data), data / "hits.parquet", "truncated")
    # vouched for anyway: the reader still names the file instead of a raw traceback
    reseal(data)
    refused(lambda: load_prepared(data), data / "hits.parquet", "not a readable Parquet file")
    (data / "hits.parquet").write_bytes(hits)
    (data / "meta.json").write_text('{"summary": ')
    reseal(data)
    refused(lambda: load_prepared(data), data / "meta.json", "not valid JSON")
    sim = data / "simulator"
    (sim / "model.pt").write_bytes((sim / "model.pt").read_bytes()[:1000])
    reseal(sim)
    refused(lambda: VisitorModel.load(sim / "model.pt"), sim / "model.pt", "truncated")
    (copy / "eval" / "results.json").write_text("{")
    from webapp.artefacts import load_run

    refused(lambda: load_run(copy), copy / "eval" / "results.json", "the manifest says")
    with pytest.raises(RunFolderError):
        verify_folder(copy / "eval")
