"""Run folders: publish with a manifest, verify before trusting, recover from a kill anywhere."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from clickstream import runfolder
from clickstream.errors import RunFolderError
from clickstream.faults import SimulatedKill, fault_injection
from clickstream.runfolder import (
    MANIFEST,
    NOT_REGULAR,
    SYMLINK,
    StageWriter,
    config_hash,
    folder_file,
    inside,
    listed_file,
    lock_work_dir,
    read_json,
    read_manifest,
    recover,
    recover_tree,
    release_work_dir_lock,
    verify_folder,
)


def write_stage(out: Path, version: str, *, inputs: dict | None = None) -> None:
    """A stage that writes three files, one in a subfolder of its own."""
    with StageWriter(out, "evaluate", config_hash=f"sha256:{version}", inputs=inputs) as w:
        w.write_json("results.json", {"version": version})
        w.write_text("results.md", f"# {version}\n" * 100)
        w.write_text("charts/a.svg", f"<svg>{version}</svg>")


def contents(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name)


def test_a_stage_publishes_a_verified_folder(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    write_stage(out, "v1", inputs={"data": "sha256:abc", "none": None})
    manifest = verify_folder(out, "evaluate")
    assert sorted(manifest.files) == ["charts/a.svg", "results.json", "results.md"]
    assert manifest.files["results.md"]["size"] == len("# v1\n") * 100
    assert manifest.inputs == {"data": "sha256:abc"}  # None inputs are left out
    assert manifest.config_hash == "sha256:v1" and manifest.stage == "evaluate"
    assert manifest.record["code_version"].startswith("nextpage ")
    # the builds a figure may depend on, down to the last bits of a model's weights
    import pandas as pd
    import torch

    libraries = manifest.record["libraries"]
    assert libraries["torch"] == torch.__version__ and libraries["pandas"] == pd.__version__
    assert set(libraries) - {"ATEN_CPU_CAPABILITY"} == {
        "python",
        "machine",
        "torch",
        "numpy",
        "pandas",
        "gymnasium",
        "stable-baselines3",
        "torch_cpu_capability",
    }
    # the kernel set torch computes with: the same build gives other last bits on AVX-512
    assert libraries["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert sorted(p.name for p in out.iterdir()) == [
        "charts",
        MANIFEST,
        "results.json",
        "results.md",
    ]
    assert leftovers(tmp_path) == []


def blocks(call, seconds: float = 10.0) -> bool:
    """Whether ``call()`` is still running after ``seconds`` (blocked, e.g. on a FIFO)."""

    def target() -> None:
        with contextlib.suppress(RunFolderError):
            call()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    return thread.is_alive()


def free_readers(fifo: Path) -> None:
    """Unblock a reader stuck on ``fifo`` (a writer that closes at once: end of file)."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_a_listed_file_or_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    write_stage(out, "v1")
    outside = tmp_path / "outside"
    outside.mkdir()
    # the very bytes the manifest lists, but in a file outside the folder
    shutil.move(out / "results.json", outside / "results.json")
    (out / "results.json").symlink_to(outside / "results.json")
    with pytest.raises(RunFolderError) as err:
        verify_folder(out)
    assert str(err.value) == f"{out / 'results.json'}: {SYMLINK}"
    (out / "results.json").unlink()
    shutil.move(outside / "results.json", out / "results.json")
    verify_folder(out)
    shutil.move(out / "charts", outside / "charts")  # a subfolder: the link is named
    (out / "charts").symlink_to(outside / "charts")
    with pytest.raises(RunFolderError) as err:
        verify_folder(out)
    assert str(err.value) == f"{out / 'charts'}: {SYMLINK}"
    (out / "charts").unlink()
    shutil.move(outside / "charts", out / "charts")
    verify_folder(out)
    manifest = out / MANIFEST  # the manifest itself
    shutil.move(manifest, outside / MANIFEST)
    manifest.symlink_to(outside / MANIFEST)
    with pytest.raises(RunFolderError) as err:
        read_manifest(out)
    assert str(err.value) == f"{manifest}: {SYMLINK}"


def test_a_stage_folder_reached_through_a_link_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "agents").mkdir(parents=True)
    write_stage(tmp_path / "outside" / "seed_0", "v1")
    (run / "agents" / "evil").symlink_to(tmp_path / "outside")
    folder = run / "agents" / "evil" / "seed_0"
    verify_folder(folder)  # a folder on its own may be anywhere
    with pytest.raises(RunFolderError) as err:
        verify_folder(folder, root=run)
    assert str(err.value) == f"{run / 'agents' / 'evil'}: {SYMLINK}"
    with pytest.raises(RunFolderError, match="not inside the run folder"):
        inside(run / ".." / "outside", run)
    write_stage(run / "eval", "v1")
    assert verify_folder(run / "eval", root=run).stage == "evaluate"


def test_fifos_are_never_opened(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    write_stage(out, "v1")
    (out / "results.json").unlink()
    os.mkfifo(out / "results.json")
    try:
        with pytest.raises(RunFolderError) as err:
            verify_folder(out)
        assert str(err.value) == f"{out / 'results.json'}: {NOT_REGULAR}"
        assert not blocks(lambda: read_json(out / "results.json", "results.json"))
        with pytest.raises(RunFolderError) as err:
            read_json(out / "results.json", "results.json")
        assert str(err.value) == f"{out / 'results.json'}: results.json {NOT_REGULAR}"
        (out / MANIFEST).rename(out / "saved.json")
        os.mkfifo(out / MANIFEST)
        assert not blocks(lambda: read_manifest(out))
        with pytest.raises(RunFolderError) as err:
            read_manifest(out)
        assert str(err.value) == f"{out / MANIFEST}: {NOT_REGULAR}"
    finally:
        free_readers(out / "results.json")
        free_readers(out / MANIFEST)


def test_only_listed_files_are_read(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    write_stage(out, "v1")
    manifest = verify_folder(out)
    assert listed_file(manifest, "results.json") == out / "results.json"
    assert listed_file(manifest, "charts/a.svg") == out / "charts" / "a.svg"
    assert listed_file(manifest, "other.json", required=False) is None
    with pytest.raises(RunFolderError, match=r"other\.json: not one of the files .* \(missing\)"):
        listed_file(manifest, "other.json")
    (out / "other.json").write_text("{}")  # added after publishing: the folder still verifies
    verify_folder(out)
    with pytest.raises(RunFolderError) as err:
        listed_file(manifest, "other.json", required=False)
    assert str(err.value).startswith(
        f"{out / 'other.json'}: not one of the files its folder's manifest.json lists (added "
        "after the folder was published), so it is not read; remake it with"
    )
    with pytest.raises(RunFolderError, match="added after"):
        folder_file(out, "other.json")
    assert folder_file(out, "results.md") == out / "results.md"


def test_json_is_read_up_to_its_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runfolder, "MAX_JSON_BYTES", 100)
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"x": "y" * 200}))
    with pytest.raises(RunFolderError) as err:
        read_json(path, "run.json")
    size = path.stat().st_size
    assert (
        str(err.value) == f"{path}: run.json is {size} bytes, over the 100 read from a run folder"
    )
    path.write_text(json.dumps({"x": "y" * 50}))
    assert read_json(path, "run.json") == {"x": "y" * 50}


def test_verification_names_what_changed(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    write_stage(out, "v1")
    verify_folder(out)
    md = out / "results.md"
    md.write_text(md.read_text()[:-10])
    with pytest.raises(RunFolderError, match=r"results\.md: is 490 bytes, the manifest says 500"):
        verify_folder(out)
    md.write_text("# v2\n" * 100)  # same size, other bytes: the (re-)hash sees it
    with pytest.raises(RunFolderError, match=r"results\.md: its bytes do not match"):
        verify_folder(out)
    md.unlink()
    with pytest.raises(RunFolderError, match=r"results\.md: listed in manifest\.json but missing"):
        verify_folder(out)
    with pytest.raises(RunFolderError, match="made by stage 'evaluate', not 'train'"):
        read_manifest(out, "train")
    (out / MANIFEST).unlink()
    with pytest.raises(RunFolderError, match=r"no manifest\.json in it.*scripts/train\.py"):
        verify_folder(out, "train")
    with pytest.raises(RunFolderError, match="the folder is missing"):
        verify_folder(tmp_path / "nothing")


@pytest.mark.parametrize(
    "change",
    [
        {"format": "pickle"},
        {"version": 99},
        {"stage": "os.system"},
        {"files": {"a": {"size": -1, "sha256": "0" * 64}}},
        {"files": {"/etc/passwd": {"size": 1, "sha256": "0" * 64}}},
        {"files": {"a/../../b": {"size": 1, "sha256": "0" * 64}}},
        {"inputs": {"data": 3}},
    ],
)
def test_a_manifest_that_is_not_one_is_refused(tmp_path: Path, change: dict) -> None:
    write_stage(tmp_path / "eval", "v1")
    path = tmp_path / "eval" / MANIFEST
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(RunFolderError, match=r"manifest\.json: not a valid manifest"):
        read_manifest(tmp_path / "eval")


def test_an_exception_changes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    write_stage(out, "v1")
    before = contents(out)
    with pytest.raises(RuntimeError, match="boom"), StageWriter(out, "evaluate") as w:
        w.write_text("results.md", "half")
        raise RuntimeError("boom")
    assert contents(out) == before and leftovers(tmp_path) == []


def test_config_hash_ignores_cosmetic_settings_and_nulls() -> None:
    base = {"agent": {"lr": 0.1, "verbose": True}, "seed": 0}
    same = {"agent": {"lr": 0.1, "verbose": False, "new": None}, "seed": 0, "other": 5}
    assert config_hash(base, ("agent", "seed")) == config_hash(same, ("agent", "seed"))
    assert config_hash(base, ("agent", "seed")) != config_hash(
        {**base, "seed": 1}, ("agent", "seed")
    )


# ---- a kill at every write boundary ---------------------------------------------------------


def nested_run(tmp_path: Path) -> tuple[Path, Path]:
    """``data/`` (an ``evaluate``-like stage) with another stage's folder nested in it."""
    data = tmp_path / "run" / "data"
    write_stage(data, "v1")
    write_stage(data / "simulator", "sim")
    return data, data / "simulator"


def test_a_kill_at_every_boundary_leaves_the_old_or_the_new_folder(tmp_path: Path) -> None:
    data, sim = nested_run(tmp_path / "count")
    with fault_injection() as counted:
        write_stage(data, "v2")
    n = counted.count
    # the writes of three files, fsync, the manifest, and the renames of the swap
    assert n == 9, counted.labels
    assert verify_folder(sim).config_hash == "sha256:sim"  # carried over
    outcomes = {}
    for at in range(1, n + 1):
        data, sim = nested_run(tmp_path / str(at))
        old, old_sim = contents(data), contents(sim)
        with pytest.raises(SimulatedKill), fault_injection(at=at):
            write_stage(data, "v2")
        # the next writer (or the pipeline) recovers first; a reader alone never trusts
        # anything but a verified folder
        recover_tree(data.parent)
        manifest = verify_folder(data)
        version = manifest.config_hash.removeprefix("sha256:")
        outcomes[counted.labels[at - 1]] = version
        if version == "v1":
            assert contents(data) == old
        else:
            assert json.loads((data / "results.json").read_text()) == {"version": "v2"}
        assert contents(sim) == old_sim and verify_folder(sim).config_hash == "sha256:sim"
        assert leftovers(data.parent) == []
    # before the manifest is written the old folder stays; from then on the new one wins
    versions = list(outcomes.values())
    first_new = versions.index("v2")
    assert set(versions[:first_new]) == {"v1"} and set(versions[first_new:]) == {"v2"}
    assert list(outcomes)[first_new - 1] == f"evaluate: write {MANIFEST}"


def test_a_kill_during_a_first_publication_leaves_nothing_or_all(tmp_path: Path) -> None:
    with fault_injection() as counted:
        write_stage(tmp_path / "count" / "eval", "v1")
    for at in range(1, counted.count + 1):
        out = tmp_path / str(at) / "eval"
        with pytest.raises(SimulatedKill), fault_injection(at=at):
            write_stage(out, "v1")
        recover(out)
        if out.exists():
            assert verify_folder(out).config_hash == "sha256:v1"
        else:
            assert at <= counted.labels.index(f"evaluate: write {MANIFEST}") + 1
        assert leftovers(out.parent) == []


def test_temporary_folders_of_a_live_writer_are_kept(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".eval.tmp-{sleeper.pid}-abcd0123"
        live.mkdir()
        (live / "results.json").write_text("{}")
        dead = tmp_path / f".eval.tmp-{os.getpid()}-0badc0de"  # this process, not writing it
        dead.mkdir()
        done = recover(tmp_path / "eval")
        assert live.is_dir() and not dead.exists()
        assert done == [f"removed the unfinished or superseded {dead.name}"]
    finally:
        sleeper.kill()
        sleeper.wait()
    recover(tmp_path / "eval")
    assert not live.exists()


def test_a_process_killed_by_sigkill_is_recovered(tmp_path: Path) -> None:
    """The in-process kill above stands for a real one: SIGKILL at each publication step."""
    script = (
        "import sys; from pathlib import Path; "
        "from tests.unit.test_runfolder import write_stage; "
        "write_stage(Path(sys.argv[1]), 'v2')"
    )
    root = Path(__file__).resolve().parents[2]
    for at in (6, 7, 8, 9):  # manifest written; old aside; nested carried; new in place
        data, sim = nested_run(tmp_path / str(at))
        env = {**os.environ, "NEXTPAGE_FAULT_AT": str(at), "PYTHONPATH": str(root)}
        done = subprocess.run([sys.executable, "-c", script, str(data)], env=env, cwd=root)
        assert done.returncode == -9
        recover_tree(data.parent)
        assert verify_folder(data).config_hash == "sha256:v2"
        assert verify_folder(sim).config_hash == "sha256:sim"
        assert leftovers(data.parent) == []


def test_a_finished_work_folder_is_published_and_an_unfinished_one_kept(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    work = tmp_path / ".sim.partial"
    # killed after the manifest, before the work folder was renamed: finished, so published
    writer = StageWriter(out, "train_simulator", work_dir=work)
    with pytest.raises(SimulatedKill), fault_injection(at=6), writer as w:  # the work's rename
        for name in ("model.pt", "metrics.md", "metrics.json"):
            w.write_text(name, name)
    assert work.is_dir() and not out.exists()
    assert recover_tree(tmp_path) == [f"published the finished {work.name} as sim"]
    assert sorted(verify_folder(out).files) == ["metrics.json", "metrics.md", "model.pt"]
    # killed while writing: kept as it is, for resume=true
    writer = StageWriter(out, "train_simulator", work_dir=work)
    with pytest.raises(SimulatedKill), fault_injection(at=2), writer as w:
        w.write_text("last.pt", "epoch 1")
        w.write_text("model.pt", "x")
    assert recover(out) == [] and (work / "last.pt").read_text() == "epoch 1"


def test_a_work_folder_has_one_writer_at_a_time(tmp_path: Path) -> None:
    """Two runs in one ``.partial`` folder would mix their checkpoints and curves, and the first
    to finish would publish the other's files: the second writer is refused, naming the pid."""
    out, work = tmp_path / "sim", tmp_path / ".sim.partial"
    with StageWriter(out, "train_simulator", work_dir=work) as first:
        first.write_text("last.pt", "epoch 3 of the first run")
        second = StageWriter(out, "train_simulator", work_dir=work, fresh=True)
        with pytest.raises(RunFolderError, match=rf"another run \(pid {os.getpid()}\)"):
            second.__enter__()
        # refused before touching anything: the first run's work is intact
        assert (work / "last.pt").read_text() == "epoch 3 of the first run"
        first.write_text("model.pt", "m")
    assert sorted(verify_folder(out).files) == ["last.pt", "model.pt"]
    # released with the block: the next run gets the folder, emptied when it starts fresh
    (work / "stale.pt").parent.mkdir(parents=True, exist_ok=True)
    (work / "stale.pt").write_text("x")
    with StageWriter(out, "train_simulator", work_dir=work, fresh=True) as again:
        assert not (work / "stale.pt").exists()
        again.write_text("model.pt", "m2")
    assert (out / "model.pt").read_text() == "m2"
    # published: nothing is left to guard, so the lock's file goes with the work folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim"]


def test_a_lock_won_on_a_removed_file_is_taken_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that opened the lock file just before the holder published and removed it would
    lock a file nobody else can see; it opens the path again and locks the file that is there."""
    import fcntl

    work, path = tmp_path / ".sim.partial", tmp_path / ".sim.partial.lock"
    real_flock, calls = fcntl.flock, []

    def flock_after_the_holder_published(fd: int, op: int) -> None:
        real_flock(fd, op)
        calls.append(fd)
        if len(calls) == 1:  # the holder removes the file between our open and our lock
            path.unlink()

    monkeypatch.setattr(fcntl, "flock", flock_after_the_holder_published)
    lock = lock_work_dir(work)
    monkeypatch.undo()
    assert len(calls) == 2 and path.read_text() == str(os.getpid())
    with pytest.raises(RunFolderError, match="another run"):  # the file on disk is the locked one
        lock_work_dir(work)
    release_work_dir_lock(lock, remove=False)
    assert path.exists()  # kept after a stage that did not publish: its work may be resumed
    release_work_dir_lock(lock_work_dir(work), remove=True)
    assert not path.exists()


def test_a_work_folder_lock_is_released_when_its_process_dies(tmp_path: Path) -> None:
    out, work = tmp_path / "sim", tmp_path / ".sim.partial"
    holder = (
        "import sys, time\n"
        "from clickstream.runfolder import StageWriter\n"
        f"w = StageWriter({str(out)!r}, 'train_simulator', work_dir={str(work)!r}).__enter__()\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=rf"pid {proc.pid}\)"):
            StageWriter(out, "train_simulator", work_dir=work).__enter__()
        # nor does recovery publish a folder a live run is writing, even once it looks finished
        with StageWriter(tmp_path / "elsewhere" / "sim", "train_simulator") as other:
            other.write_text("model.pt", "m")
        for path in (tmp_path / "elsewhere" / "sim").iterdir():
            shutil.copy(path, work / path.name)
        assert recover_tree(tmp_path) == [] and work.is_dir() and not out.exists()
    finally:
        proc.kill()
        proc.wait()
    shutil.rmtree(tmp_path / "elsewhere")
    assert recover_tree(tmp_path) == [f"published the finished {work.name} as sim"]
    with StageWriter(out, "train_simulator", work_dir=work) as w:  # the kernel let go
        w.write_text("model.pt", "mm")
    assert verify_folder(out).files["model.pt"]["size"] == 2
    # a lock file left by a run killed as it published guards nothing: recovery removes it
    (tmp_path / ".sim.partial.lock").write_text("12345")
    recover_tree(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim"]


def test_a_folder_that_is_not_this_stages_output_is_never_replaced(tmp_path: Path) -> None:
    """Publishing replaces the folder and deletes the old one: only an earlier output of the
    same stage (or nothing, or an empty folder) may be there."""
    user = tmp_path / "notes"
    user.mkdir()
    (user / "notes.txt").write_text("important")
    with pytest.raises(RunFolderError) as err:
        write_stage(user, "v1")
    assert str(err.value) == (
        f"{user}: not replaced by this evaluate output: it holds files but no manifest.json of "
        "a published stage folder, and publishing would delete it; write elsewhere "
        "(out_dir=...) or remove it yourself if it is an old output"
    )
    assert (user / "notes.txt").read_text() == "important"
    assert leftovers(tmp_path) == []  # refused before a temporary folder was made

    other = tmp_path / "data"  # another stage's output
    with StageWriter(other, "prepare_data", config_hash="sha256:d") as w:
        w.write_text("hits.csv", "a,b\n")
    with pytest.raises(RunFolderError, match="it is the output of the prepare_data stage, not "):
        write_stage(other, "v1")
    assert verify_folder(other, "prepare_data")

    a_file = tmp_path / "results"
    a_file.write_text("x")
    with pytest.raises(RunFolderError, match="it is a file, not a folder"):
        write_stage(a_file, "v1")
    assert a_file.read_text() == "x"

    empty = tmp_path / "empty"
    empty.mkdir()
    write_stage(empty, "v1")  # an empty folder, then the stage's own output: replaced
    write_stage(empty, "v2")
    assert json.loads((empty / "results.json").read_text()) == {"version": "v2"}


def test_a_verified_folder_is_checked_again_when_a_folder_deep_in_it_becomes_a_link(
    tmp_path: Path,
) -> None:
    """The once-per-process cache of a verified folder looks at every folder on the way to
    each listed file, not only the nearest: one swapped for a link is refused."""
    run = tmp_path / "run"
    out = run / "agents" / "a" / "seed_0"
    out.parent.mkdir(parents=True)
    with StageWriter(out, "train") as w:
        w.write_json("policy.json", {"kind": "x"})
        w.write_text("tb/run_1/events.txt", "hello")
    verify_folder(out, "train", root=run)  # cached from here on
    shutil.move(out / "tb", tmp_path / "moved_tb")
    (out / "tb").symlink_to(tmp_path / "moved_tb")
    with pytest.raises(RunFolderError) as err:
        verify_folder(out, "train", root=run)
    assert str(err.value) == f"{out / 'tb'}: {SYMLINK}"
