"""A shared run folder is data: the app reads only the files its verified manifests list, never
through a symbolic link or from a FIFO, checks the shape of ``eval/results.json``, and the
reasons its API shows name files relative to the run folder, never a path of this machine."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clickstream import runfolder
from clickstream.errors import ClickstreamError, RunFolderError
from clickstream.runfolder import NOT_REGULAR, SYMLINK
from tests.hydra_configs import compose_cfg, reseal
from webapp import create_app
from webapp.app import state
from webapp.artefacts import RunArtefacts, load_run

GREEDY = Path("agents/greedy/seed_0")
REMAKE_GREEDY = (
    "remake it with `python scripts/train.py agent_dir=<run_dir>/agents/greedy/seed_0` "
    "(or `python scripts/pipeline.py`, which remakes any stage)"
)


@pytest.fixture()
def copy(webapp_run_dir: Path, tmp_path: Path) -> Path:
    """A copy of the tiny run to tamper with (``tmp_path/outside`` is beside it)."""
    (tmp_path / "outside").mkdir()
    return Path(shutil.copytree(webapp_run_dir, tmp_path / "run"))


def unlist(folder: Path, name: str) -> None:
    """Take ``name`` off ``folder``'s manifest (the folder still verifies)."""
    record = json.loads((folder / "manifest.json").read_text())
    del record["files"][name]
    (folder / "manifest.json").write_text(json.dumps(record))


def load_in_time(run_dir: Path) -> RunArtefacts:
    """``load_run``, which must return (or raise) within a minute: a reader blocked on a FIFO
    fails the test instead of hanging it."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["run"] = load_run(run_dir)
        except BaseException as exc:  # handed to the test below
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(60)
    if thread.is_alive():
        for fifo in run_dir.rglob("*"):  # free the reader: a writer that closes at once
            if fifo.is_fifo():
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("loading the run blocked on a FIFO")
    if "error" in out:
        raise out["error"]
    return out["run"]


# ---- 1. only listed files, never through a link ----------------------------------------------


def test_an_unlisted_policy_file_linked_outside_is_not_read(copy: Path, tmp_path: Path):
    folder = copy / GREEDY
    scores = np.load(folder / "scores.npy")
    outside = tmp_path / "outside" / "secret.npy"
    np.save(outside, np.full_like(scores, 7000.0))
    (folder / "scores.npy").unlink()
    os.symlink(outside, folder / "scores.npy")
    unlist(folder, "scores.npy")
    run = load_run(copy)
    assert "greedy" not in run.policies
    assert run.skipped["greedy"] == f"agents/greedy/seed_0/scores.npy: {SYMLINK}"
    answer = (
        create_app(run)
        .test_client()
        .post("/api/recommend", json={"history": ["/home"], "policy": "greedy"})
    )
    assert answer.status_code == 400
    assert answer.get_json()["error"] == (
        f"policy 'greedy' is not served: agents/greedy/seed_0/scores.npy: {SYMLINK}"
    )


def test_a_listed_file_linked_to_a_copy_outside_is_not_read(copy: Path, tmp_path: Path):
    folder = copy / GREEDY
    outside = tmp_path / "outside" / "scores.npy"
    shutil.move(folder / "scores.npy", outside)  # the very bytes the manifest lists
    os.symlink(outside, folder / "scores.npy")
    run = load_run(copy)
    assert "greedy" not in run.policies
    assert run.skipped["greedy"] == f"agents/greedy/seed_0/scores.npy: {SYMLINK}"


def test_a_policy_file_added_after_publishing_is_not_read(copy: Path):
    folder = copy / GREEDY
    scores = np.load(folder / "scores.npy")
    np.save(folder / "scores.npy", scores[:, ::-1].copy())  # a regular file, other numbers
    unlist(folder, "scores.npy")
    run = load_run(copy)
    assert "greedy" not in run.policies
    assert run.skipped["greedy"] == (
        "agents/greedy/seed_0/scores.npy: not one of the files its folder's manifest.json "
        f"lists (added after the folder was published), so it is not read; {REMAKE_GREEDY}"
    )


def test_a_policy_folder_linked_from_outside_is_skipped(copy: Path, tmp_path: Path):
    outside = tmp_path / "outside" / "evil"
    shutil.copytree(copy / "agents" / "greedy", outside)
    os.symlink(outside, copy / "agents" / "evil")
    run = load_run(copy)
    assert "evil" not in run.policies and "greedy" in run.policies
    assert run.skipped == {"evil": f"agents/evil: {SYMLINK}"}


@pytest.mark.parametrize("listed", [True, False])
def test_results_linked_outside_stop_the_app(copy: Path, tmp_path: Path, listed: bool):
    results = copy / "eval" / "results.json"
    outside = tmp_path / "outside" / "results.json"
    shutil.move(results, outside)
    os.symlink(outside, results)
    if not listed:
        unlist(copy / "eval", "results.json")
    with pytest.raises(RunFolderError) as err:
        load_run(copy)
    assert str(err.value) == f"{results}: {SYMLINK}"


def test_unlisted_data_files_and_linked_data_folders_stop_the_app(copy: Path, tmp_path: Path):
    data = copy / "data"
    published = (data / "manifest.json").read_bytes()
    unlist(data, "groups.parquet")
    with pytest.raises(RunFolderError, match="not one of the files") as err:
        load_run(copy)
    assert str(err.value).startswith(f"{data / 'groups.parquet'}: ")
    (data / "manifest.json").write_bytes(published)  # listed again: served
    assert load_run(copy).network.groups
    outside = tmp_path / "outside" / "data"
    shutil.move(data, outside)
    os.symlink(outside, data)
    with pytest.raises(RunFolderError) as err:
        load_run(copy)
    assert str(err.value) == f"{data}: {SYMLINK}"


# ---- 2. run.json: verified first, size-capped, never a FIFO ----------------------------------


def test_a_fifo_run_json_is_not_opened(copy: Path):
    record = copy / GREEDY / "run.json"
    record.unlink()
    os.mkfifo(record)
    run = load_in_time(copy)
    assert "greedy" not in run.policies
    assert run.skipped["greedy"] == f"agents/greedy/seed_0/run.json: {NOT_REGULAR}"


def test_a_run_json_over_the_cap_is_not_read(copy: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(runfolder, "MAX_JSON_BYTES", 100_000)  # every real file is under it
    record_path = copy / GREEDY / "run.json"
    record = json.loads(record_path.read_text())
    record["padding"] = "x" * 200_000
    record_path.write_text(json.dumps(record))
    size = record_path.stat().st_size
    reseal(record_path.parent)
    run = load_run(copy)
    assert "greedy" not in run.policies
    assert run.skipped["greedy"] == (
        f"agents/greedy/seed_0/run.json: run.json is {size:,} bytes, over the 100,000 read "
        "from a run folder"
    )


def test_a_run_json_that_is_not_a_record_is_a_reason_not_a_crash(copy: Path):
    record_path = copy / GREEDY / "run.json"
    record_path.write_text(json.dumps({"config": {"env": [1]}}))
    reseal(record_path.parent)
    run = load_run(copy)
    assert run.skipped["greedy"] == (
        "agents/greedy/seed_0/run.json: config.env must be a JSON object, got a list [1]"
    )


# ---- 3. reasons name files relative to the run folder ----------------------------------------


def test_reasons_in_answers_name_no_path_of_this_machine(copy: Path, tmp_path: Path):
    scores = copy / GREEDY / "scores.npy"
    listed = scores.stat().st_size
    with open(scores, "ab") as fh:
        fh.write(b"\0" * 10)
    reason = (
        f"agents/greedy/seed_0/scores.npy: is {listed + 10:,} bytes, the manifest says "
        f"{listed:,}: truncated or changed after it was published; {REMAKE_GREEDY}"
    )
    client = create_app(copy).test_client()
    health = client.get("/api/health")
    policies = client.get("/api/policies")
    recommend = client.post("/api/recommend", json={"history": ["/home"], "policy": "greedy"})
    assert health.get_json()["runs"][0]["skipped"] == {"greedy": reason}
    assert policies.get_json()["skipped"] == {"greedy": reason}
    assert recommend.status_code == 400
    assert recommend.get_json()["error"] == f"policy 'greedy' is not served: {reason}"
    for answer in (health, policies, recommend):
        assert str(tmp_path) not in answer.get_data(as_text=True)


# ---- 4. the shape of eval/results.json ---------------------------------------------------------


def _records(r: dict, key: str, value: Any) -> None:
    for record in r["records"]:
        record[key] = value


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda r: r.__setitem__("records", {"a": 1}),
            "records must be a list of objects, got an object {'a': 1}",
        ),
        (lambda r: r["records"].append(5), "records[8] must be an object, got 5"),
        (
            lambda r: r["records"][0].__setitem__("world", ["x"]),
            "records[0].world must be a string, got a list ['x']",
        ),
        (
            lambda r: r["records"][0].__setitem__("policy", 5),
            "records[0].policy must be a string, got 5",
        ),
        (
            lambda r: _records(r, "mean_return", "abc"),
            "records[0].mean_return must be a number or null, got 'abc'",
        ),
        (lambda r: _records(r, "ci95", "zz"), "records[0].ci95 must be a number or null, got 'zz'"),
        (
            lambda r: _records(r, "bounce_rate", "zz"),
            "records[0].bounce_rate must be a number or null, got 'zz'",
        ),
        (
            lambda r: _records(r, "n_sessions", {"a": 1}),
            "records[0].n_sessions must be a number or null, got an object {'a': 1}",
        ),
        (lambda r: r.__setitem__("config", [1]), "config must be a JSON object, got a list [1]"),
        (
            lambda r: r["config"]["env"].__setitem__("click_params", [1]),
            "config.env.click_params must be a JSON object, got a list [1]",
        ),
    ],
    ids=[
        "records",
        "record",
        "world",
        "policy",
        "mean_return",
        "ci95",
        "bounce_rate",
        "n_sessions",
        "config",
        "click_params",
    ],
)
def test_results_of_another_shape_are_refused_naming_the_key(copy: Path, change, problem: str):
    from scripts.serve import run

    results_path = copy / "eval" / "results.json"
    results = json.loads(results_path.read_text())
    change(results)
    results_path.write_text(json.dumps(results))
    reseal(results_path.parent)
    with pytest.raises(RunFolderError) as err:
        load_run(copy)
    assert str(err.value) == f"{results_path}: {problem}"
    # serve.py: the same error (exit status 2, its message), not a traceback
    with pytest.raises(RunFolderError, match=re.escape(problem)):
        run(compose_cfg("serve", [f"run_dir={copy}", "dry_run=true"]))


def test_a_run_without_results_is_served_without_them(copy: Path):
    (copy / "eval" / "results.json").unlink()
    reseal(copy / "eval")
    run = load_run(copy)
    assert run.results is None and run.worlds == []
    health = create_app(run).test_client().get("/api/health").get_json()
    assert health["runs"][0]["evaluated"] is False


# ---- 5, 6. serve.py settings -------------------------------------------------------------------


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_a_port_out_of_range_is_a_config_error(webapp_run_dir: Path, port: str):
    from scripts.serve import run

    with pytest.raises(ClickstreamError) as err:
        run(compose_cfg("serve", [f"run_dir={webapp_run_dir}", "dry_run=true", f"port={port}"]))
    assert str(err.value) == (
        f"port must be an integer in [0, 65535] (0: any free port), got {int(port)} "
        "(configs/serve.yaml)"
    )


def test_the_documented_visitor_model_true_is_the_true_kind(webapp_run_dir: Path):
    from omegaconf import OmegaConf

    from scripts.serve import build_app, run

    overrides = [f"run_dir={webapp_run_dir}", "visitor_model=true", "dry_run=true"]
    cfg = compose_cfg("serve", overrides)
    assert cfg.visitor_model is True  # what Hydra makes of the documented spelling
    assert run(cfg)["runs"][webapp_run_dir.name]["policies"]
    app = build_app(OmegaConf.to_container(cfg, resolve=True))
    assert next(iter(state(app).recommenders.values())).run.dynamics == "true"
    with pytest.raises(ClickstreamError, match=r"visitor_model must be one of .*, got 'false'"):
        run(compose_cfg("serve", [f"run_dir={webapp_run_dir}", "visitor_model=false"]))


# ---- results of folders remade after the evaluation ---------------------------------------------


def test_results_of_a_policy_retrained_after_the_evaluation_are_marked_stale(copy: Path):
    assert load_run(copy).stale == {}  # as the pipeline left it
    reseal(copy / GREEDY)  # a new manifest: what `scripts/train.py` publishing again leaves
    run = load_run(copy)
    assert run.stale == {
        "agents/greedy/seed_0": "remade after the evaluation: its results describe the folder "
        "it replaced"
    }
    assert run.results_stale("greedy") and not run.results_stale("organic")
    client = create_app(run).test_client()
    assert client.get("/api/health").get_json()["runs"][0]["results_stale"] == run.stale
    listed = {p["name"]: p for p in client.get("/api/policies").get_json()["policies"]}
    assert listed["greedy"]["results_stale"] is True
    assert [n for n, p in listed.items() if p["results_stale"]] == ["greedy"]
    assert listed["greedy"]["mean_return"] is not None  # still shown, marked
    page = client.get("/impact").get_data(as_text=True)
    assert 'id="stale-results"' in page and "<code>agents/greedy/seed_0</code>" in page
    rows = re.findall(r'<tr data-policy="([^"]+)"[^>]*>\s*<th>[^<]*(<em class="stale">)?', page)
    assert sorted(name for name, stale in rows if stale) == ["greedy"]
    assert len(rows) > 1


def test_a_visitor_model_remade_after_the_evaluation_makes_every_result_stale(copy: Path):
    reseal(copy / "data" / "simulator")
    run = load_run(copy)
    assert list(run.stale) == ["data/simulator"]
    assert all(run.results_stale(name) for name in run.policies)
    page = create_app(run).test_client().get("/impact").get_data(as_text=True)
    assert page.count('<em class="stale">') == len(
        {r["policy"] for r in run.results["records"] if r["world"] == run.worlds[0]}
    )


def test_a_served_seed_the_evaluation_did_not_play_is_marked_stale(copy: Path):
    """After a run's seeds changed, the lowest saved seed is served beside results of another
    training seed: marked, not shown as its own."""
    from clickstream.runfolder import read_manifest, seal

    shutil.copytree(copy / GREEDY, copy / "agents" / "greedy" / "seed_1")
    evaluated = read_manifest(copy / "eval")
    inputs = dict(evaluated.inputs)
    inputs["agents/greedy/seed_1"] = inputs.pop("agents/greedy/seed_0")  # evaluated seed 1 only
    seal(
        copy / "eval",
        evaluated.stage,
        config_hash=evaluated.config_hash,
        inputs=inputs,
        data_fingerprint=evaluated.data_fingerprint,
    )
    run = load_run(copy)
    assert run.policies["greedy"].seed == 0
    assert run.stale == {
        "agents/greedy/seed_0": "not in the evaluation: the results shown are of training seed(s) 1"
    }
    assert run.results_stale("greedy") and not run.results_stale("organic")
