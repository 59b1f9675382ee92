"""Run folders: each stage publishes one folder, with one rename, after a manifest.

A stage (``prepare_data``, ``train_simulator``, ``train``, ``evaluate``, ``check_simulator``)
writes its files into a hidden temporary folder beside its output,
``.<name>.tmp-<pid>-<token>``, flushes every file to disk, writes ``manifest.json`` last and
publishes the folder by renaming it to ``<name>`` (:class:`StageWriter`). A reader trusts a
folder only when its manifest verifies (:func:`verify_folder`: every listed file there, with
its size and sha256), so a half-written, truncated or replaced file is never used, and a
dependent stage records the manifests it was made from (``inputs``), so a stale one is seen.

A reader reads only files the verified manifest lists (:func:`listed_file`, :func:`own_file`),
and only regular files of the folder's own: a symbolic link (to anywhere, inside the folder or
out) and anything that is not a regular file (a FIFO would block the reader, a device never
ends) are refused unopened, naming the file. A shared run folder cannot make its reader open a
file outside it; :func:`inside` checks the same of a stage folder within a run folder.

The manifest::

    {
      "format": "nextpage.run_folder",
      "version": 1,
      "stage": "train_simulator",
      "created_utc": "2025-01-01T00:00:00+00:00",
      "code_version": "nextpage 0.1.0 (git 3527820...)",
      "libraries": {"python": "3.11.2", "machine": "x86_64", "torch": "2.13.0+cpu", ...,
                    "torch_cpu_capability": "AVX2"},
      "config_hash": "sha256:...",        # the settings that change the outputs
      "data_fingerprint": "sha256:...",   # the prepared data they were made from (content)
      "inputs": {"data": "sha256:..."},   # sha256 of each manifest read (data, simulator, ...)
      "files": {"model.pt": {"size": 81234, "sha256": "..."}, ...}
    }

A folder's identity for its dependents is the sha256 of its ``manifest.json`` bytes
(:attr:`Manifest.digest`). Replacing a folder that already exists takes three renames (the old
one aside, the new one in, the old one removed); a crash between them is completed by
:func:`recover`, which every writer (and the pipeline) runs first: a temporary folder whose
manifest verifies is published, anything else temporary is removed. Folders of other stages
nested in a stage's folder (``data/simulator`` in ``data/``) are carried over whole when it is
republished, and their recorded ``inputs`` then say they were made from the earlier data.

One writer per stage folder at a time (two processes publishing the same folder at once is not
supported); temporary folders of a live process are never removed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from clickstream.errors import RunFolderError
from clickstream.faults import SimulatedKill, boundary
from clickstream.io import finite_json, fsync_dir, fsync_file, json_default

MANIFEST = "manifest.json"
FORMAT = "nextpage.run_folder"
VERSION = 1
MAX_JSON_BYTES = 64 * 1024 * 1024
"""Largest JSON file (manifest, policy.json, run.json, ...) read from a run folder."""

STAGES = ("prepare_data", "train_simulator", "train", "evaluate", "check_simulator")

REMAKE = {
    "prepare_data": "python scripts/prepare_data.py out_dir={folder}",
    "train_simulator": "python scripts/train_simulator.py out_dir={folder}",
    "train": "python scripts/train.py agent_dir={folder}",
    "evaluate": "python scripts/evaluate.py eval_dir={folder}",
    "check_simulator": "python scripts/check_simulator.py out_dir={folder}",
}
"""The command that remakes a stage's folder (``python scripts/pipeline.py`` remakes any)."""

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-(?P<token>[0-9a-f]+)$")
_WORK = re.compile(r"^\.(?P<name>.+)\.partial$")
_WORK_LOCK = re.compile(r"^\.(?P<name>.+)\.partial\.lock$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

COSMETIC_KEYS = frozenset({"show_progress", "verbose", "log_truth"})
"""Settings that change what a stage prints or logs, not what it makes: left out of config
hashes (``log_truth`` adds ground-truth curves to TensorBoard; the kept weights are the same).
Options set to null are left out too: null means "the default", as if the option were not
there, so adding an option (null by default) does not make earlier outputs stale."""


# ---- configuration and code identity ------------------------------------------------------


def comparable(value: Any) -> Any:
    """``value`` without :data:`COSMETIC_KEYS` and null options, at every depth."""
    if isinstance(value, Mapping):
        return {
            k: comparable(v) for k, v in value.items() if k not in COSMETIC_KEYS and v is not None
        }
    if isinstance(value, list | tuple):
        return [comparable(v) for v in value]
    return value


def plain_config(cfg: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The values of ``keys`` in a resolved config as comparable plain data."""
    picked = {k: cfg.get(k) for k in keys}
    return comparable(json.loads(json.dumps(picked, default=str)))


def config_hash(cfg: Mapping[str, Any], keys: Iterable[str]) -> str:
    """``sha256:<hex>`` of the canonical JSON of :func:`plain_config`."""
    text = json.dumps(plain_config(cfg, keys), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def code_version() -> str:
    """``nextpage <version> (git <commit>[-dirty])``: the code that made an output."""
    from importlib.metadata import PackageNotFoundError, version

    from clickstream.prepare import git_commit  # prepare imports this module

    try:
        release = version("nextpage")
    except PackageNotFoundError:
        release = "unknown"
    commit = git_commit()
    return f"nextpage {release}" + (f" (git {commit})" if commit else "")


LIBRARIES = ("torch", "numpy", "pandas", "gymnasium", "stable-baselines3")
"""Installed distributions whose versions a manifest records: a figure computed with another
build of them may differ in its last bits, and a simulation fed those bits then diverges
(docs/benchmarks.md, "What the numbers depend on")."""


def library_versions() -> dict[str, str]:
    """The Python version, each of :data:`LIBRARIES`' installed versions (``"absent"`` when
    one is not installed), the processor architecture and, when torch is in use, the CPU
    kernel set torch dispatches to, for a manifest.

    The kernel set matters as much as the versions: the same torch build computes a GRU's
    floats with AVX-512 kernels on one CPU and AVX2 on another, their last bits differ, and a
    simulation fed them diverges (docs/benchmarks.md, "What the numbers depend on").
    ``ATEN_CPU_CAPABILITY`` set in the environment is recorded too, as it overrides the choice.
    """
    import platform
    import sys
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version(), "machine": platform.machine() or "unknown"}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "absent"
    versions["torch_cpu_capability"] = (
        torch_cpu_capability() if "torch" in sys.modules else "unused"
    )
    if os.environ.get("ATEN_CPU_CAPABILITY"):
        versions["ATEN_CPU_CAPABILITY"] = os.environ["ATEN_CPU_CAPABILITY"]
    return versions


def torch_cpu_capability() -> str:
    """The CPU kernel set torch dispatches to (``"AVX512"``, ``"AVX2"``, ``"DEFAULT"``, ...),
    or ``"unknown"`` where this build of torch cannot say."""
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


SYMLINK = (
    "is a symbolic link: a run folder is read through its own files only (a link may point "
    "anywhere on this machine), so it is not followed"
)
NOT_REGULAR = "is not a regular file (a folder, FIFO, device or socket), so it is not opened"


def read_capped(path: str | os.PathLike[str], limit: int, what: str = "file") -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    A FIFO, device or socket is never opened (a FIFO blocks its reader until someone writes, a
    device may never end): ``stat`` is checked before opening, and ``fstat`` after (the open does
    not block, so a FIFO swapped in between is refused too). Symbolic links are followed: check
    a run folder's own files with :func:`own_file` first.

    Raises:
        RunFolderError: Missing, not a regular file, larger than ``limit`` or unreadable,
            naming it.
    """
    path = Path(path)
    raw = b""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise RunFolderError(f"{what} {NOT_REGULAR}", file=str(path))
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise RunFolderError(f"{what} {NOT_REGULAR}", file=str(path))
            size = st.st_size
            if size <= limit:
                raw = fh.read(limit + 1)  # a file growing meanwhile still stops at the limit
                size = max(size, len(raw))
    except FileNotFoundError:
        raise RunFolderError(f"{what} not found", file=str(path)) from None
    except OSError as exc:
        raise RunFolderError(
            f"{what} cannot be read ({exc.strerror or exc})", file=str(path)
        ) from None
    if size > limit:
        raise RunFolderError(
            f"{what} is {size:,} bytes, over the {limit:,} read from a run folder", file=str(path)
        )
    return raw


def read_json(path: str | os.PathLike[str], what: str = "JSON file") -> Any:
    """Read a JSON file of a run folder, with errors that name it.

    Raises:
        RunFolderError: Missing, not a regular file (:func:`read_capped`), larger than
            :data:`MAX_JSON_BYTES`, not UTF-8, not JSON, or nested too deeply to parse.
    """
    path = Path(path)
    raw = read_capped(path, MAX_JSON_BYTES, what)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RunFolderError(f"{what} is not valid JSON ({exc})", file=str(path)) from None
    except RecursionError:
        raise RunFolderError(f"{what} is nested too deeply to read", file=str(path)) from None


def own_file(folder: str | os.PathLike[str], name: str) -> os.stat_result | None:
    """The ``lstat`` of ``folder/name`` (``name`` a relative path with ``/``), checked to be a
    regular file reached without a symbolic link on the way; ``None`` when it is missing.

    Raises:
        RunFolderError: A symbolic link on the way or at the end (naming it), or not a regular
            file (a FIFO, device, folder).
    """
    path = Path(folder)
    for part in name.split("/"):
        path = path / part
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise RunFolderError(
                f"cannot be read ({exc.strerror or exc})", file=str(path)
            ) from None
        if stat.S_ISLNK(st.st_mode):
            raise RunFolderError(SYMLINK, file=str(path))
    if not stat.S_ISREG(st.st_mode):
        raise RunFolderError(NOT_REGULAR, file=str(path))
    return st


def inside(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> Path:
    """``path`` after checking that it lies in the folder ``root`` with no symbolic link from
    ``root`` down to it (a stage folder of a run folder: ``agents/<name>/seed_<S>``, ``eval``).

    Raises:
        RunFolderError: ``path`` is not under ``root``, or a folder on the way (or ``path``) is
            a symbolic link, naming it.
    """
    path, root = Path(path), Path(root)
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        parts = ("..",)
    if ".." in parts:
        raise RunFolderError(f"not inside the run folder {root}", file=str(path))
    current = root
    for part in parts:
        current = current / part
        if current.is_symlink():
            raise RunFolderError(SYMLINK, file=str(current))
    return path


# ---- manifests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """A parsed ``manifest.json``.

    Attributes:
        folder: The folder it describes.
        record: Its content.
        digest: ``sha256:<hex>`` of its bytes: the folder's identity for dependents.
    """

    folder: Path
    record: dict[str, Any]
    digest: str

    @property
    def stage(self) -> str:
        return self.record["stage"]

    @property
    def config_hash(self) -> str | None:
        return self.record.get("config_hash")

    @property
    def data_fingerprint(self) -> str | None:
        return self.record.get("data_fingerprint")

    @property
    def inputs(self) -> dict[str, str]:
        return dict(self.record.get("inputs") or {})

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return self.record["files"]

    @property
    def created_utc(self) -> str | None:
        return self.record.get("created_utc")


def remake_hint(stage: str | None, folder: Path) -> str:
    """``remake it with `<command>` (or python scripts/pipeline.py)``."""
    command = REMAKE.get(stage or "", "python scripts/pipeline.py").format(folder=folder)
    return f"remake it with `{command}` (or `python scripts/pipeline.py`, which remakes any stage)"


def read_manifest(folder: str | os.PathLike[str], stage: str | None = None) -> Manifest:
    """Read and check the form of ``folder/manifest.json`` (not the files: :func:`verify_folder`).

    Raises:
        RunFolderError: No manifest (a stage that did not finish, or a folder made by an older
            version), one that is not valid, or one of another stage than ``stage``.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if own_file(folder, MANIFEST) is None:
        what = "the folder is missing" if not folder.exists() else f"no {MANIFEST} in it"
        raise RunFolderError(
            f"not a published run folder: {what} (a stage that did not finish, or one made "
            f"before run folders had manifests); {remake_hint(stage, folder)}",
            file=str(folder),
        )
    raw = read_capped(path, MAX_JSON_BYTES, "the manifest")
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RunFolderError(
            f"manifest is not valid JSON ({exc}); {remake_hint(stage, folder)}", file=str(path)
        ) from None
    problem = _schema_problem(record)
    if problem:
        raise RunFolderError(f"not a valid manifest: {problem}", file=str(path))
    if stage is not None and record["stage"] != stage:
        raise RunFolderError(
            f"made by stage {record['stage']!r}, not {stage!r}: not the folder expected here",
            file=str(path),
        )
    return Manifest(folder, record, "sha256:" + hashlib.sha256(raw).hexdigest())


def _names_to_strings(value: Any) -> bool:
    """Whether ``value`` is a JSON object of strings to strings."""
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _schema_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("format") != FORMAT:
        return f"format is {record.get('format')!r}, not {FORMAT!r}"
    version = record.get("version")
    if not isinstance(version, int) or version < 1:
        return f"version {version!r} is not a positive integer"
    if version > VERSION:
        return f"version {version} was written by a newer NextPage (this one reads {VERSION})"
    if record.get("stage") not in STAGES:
        return f"stage {record.get('stage')!r} is not one of {list(STAGES)}"
    for key in ("config_hash", "data_fingerprint", "created_utc", "code_version"):
        if record.get(key) is not None and not isinstance(record[key], str):
            return f"{key} is not a string"
    # libraries: absent from manifests written before 2026-12-07
    if not _names_to_strings(record.get("libraries", {})):
        return "libraries is not a mapping of names to versions"
    if not _names_to_strings(record.get("inputs", {})):
        return "inputs is not a mapping of names to manifest digests"
    files = record.get("files")
    if not isinstance(files, dict):
        return "files is not a mapping"
    for name, entry in files.items():
        if not safe_name(name):
            return f"file name {name!r} is not a plain relative path inside the folder"
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("size"), int)
            or isinstance(entry.get("size"), bool)
            or entry["size"] < 0
            or not isinstance(entry.get("sha256"), str)
            or not _HEX64.match(entry["sha256"])
        ):
            return f"entry of {name!r} needs a size (bytes) and a sha256 (64 hex digits)"
    return None


def safe_name(name: Any) -> bool:
    """Whether ``name`` is a plain relative path inside a folder (no ``..``, no absolute path,
    no backslash): what a manifest or ``policy.json`` may name."""
    if not isinstance(name, str) or not name or len(name) > 1024 or name == MANIFEST:
        return False
    if "\\" in name or "\0" in name or name.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


_verified: dict[str, tuple[tuple, Manifest]] = {}
_verified_lock = threading.Lock()
# work folders' lock files this process holds (lock_work_dir); recover() must not lock them again
_held_locks: set[str] = set()


def verify_folder(
    folder: str | os.PathLike[str],
    stage: str | None = None,
    *,
    hashes: bool = True,
    root: str | os.PathLike[str] | None = None,
) -> Manifest:
    """The manifest of ``folder`` after checking every file it lists (size, and sha256 unless
    ``hashes`` is false), each a regular file of the folder's own (:func:`own_file`: no
    symbolic link, no FIFO or device).

    A folder verified before in this process is not hashed again unless a file's size,
    modification time or inode changed (a cheap ``lstat`` of each).

    Args:
        folder: The stage folder.
        stage: The stage that must have made it (``None``: any).
        hashes: Check each file's sha256 too.
        root: The run folder ``folder`` must lie in, with no symbolic link on the way
            (:func:`inside`).

    Raises:
        RunFolderError: See :func:`read_manifest`; or a listed file that is missing, a symbolic
            link or not a regular file, has another size (truncated) or other bytes (changed
            after publishing), naming it.
    """
    if root is not None:
        inside(folder, root)
    manifest = read_manifest(folder, stage)
    folder = manifest.folder
    signature = _signature(manifest)
    key = str(folder.resolve())
    with _verified_lock:
        cached = _verified.get(key)
    if cached is not None and cached[0] == signature and cached[1].digest == manifest.digest:
        return cached[1]
    for name, entry in manifest.files.items():
        path = folder / name
        st = own_file(folder, name)
        if st is None:
            raise RunFolderError(
                f"listed in {MANIFEST} but missing; {remake_hint(manifest.stage, folder)}",
                file=str(path),
            )
        if st.st_size != entry["size"]:
            raise RunFolderError(
                f"is {st.st_size:,} bytes, the manifest says {entry['size']:,}: truncated or "
                f"changed after it was published; {remake_hint(manifest.stage, folder)}",
                file=str(path),
            )
        if hashes and sha256_file(path) != entry["sha256"]:
            raise RunFolderError(
                f"its bytes do not match the manifest's sha256: damaged or changed after it "
                f"was published; {remake_hint(manifest.stage, folder)}",
                file=str(path),
            )
    if hashes:
        with _verified_lock:
            _verified[key] = (signature, manifest)
    return manifest


def _signature(manifest: Manifest) -> tuple:
    # lstat, subfolders too: a file or folder swapped for a link changes the signature
    names = {MANIFEST, *manifest.files}
    for name in manifest.files:  # every folder on the way: one swapped for a link is seen
        parts = name.split("/")[:-1]
        names |= {"/".join(parts[: i + 1]) for i in range(len(parts))}
    out = []
    for name in sorted(names):
        try:
            st = os.lstat(manifest.folder / name)
        except OSError:
            return ()
        out.append((name, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


def listed_file(manifest: Manifest, name: str, *, required: bool = True) -> Path | None:
    """The file ``name`` of a verified folder (:func:`verify_folder` checked it: a regular file
    of the folder's own with the listed bytes), when its manifest lists it.

    Args:
        manifest: The folder's verified manifest.
        name: The file's relative path in the folder.
        required: Without it, a file the folder does not have gives ``None``.

    Raises:
        RunFolderError: The manifest does not list ``name``: a file added or replaced after
            the folder was published is never read, and a required one is missing.
    """
    path = manifest.folder / name
    if name in manifest.files:
        return path
    present = os.path.lexists(path)
    if not present and not required:
        return None
    if present:
        own_file(manifest.folder, name)  # a link or FIFO says so first
    why = "added after the folder was published" if present else "missing"
    raise RunFolderError(
        f"not one of the files its folder's {MANIFEST} lists ({why}), so it is not read; "
        f"{remake_hint(manifest.stage, manifest.folder)}",
        file=str(path),
    )


def verified_file(path: str | os.PathLike[str], stage: str | None = None) -> Path:
    """``path`` after verifying the folder it is in (:func:`verify_folder`) and that the
    manifest lists it.

    Raises:
        RunFolderError: The folder does not verify, or the file is not one of its outputs.
    """
    path = Path(path)
    listed_file(verify_folder(path.parent, stage), path.name)
    return path


def folder_file(folder: str | os.PathLike[str], name: str) -> Path:
    """The file ``name`` of ``folder`` to read: a regular file of the folder's own
    (:func:`own_file`) and, when the folder is published (it has a manifest), one its
    manifest lists. For readers given a folder and a name from a file in it (``policy.json``).

    Raises:
        RunFolderError: Missing, a symbolic link, not a regular file, or not listed.
    """
    folder = Path(folder)
    path = folder / name
    if own_file(folder, name) is None:
        raise RunFolderError("not found", file=str(path))
    if own_file(folder, MANIFEST) is not None:
        listed_file(read_manifest(folder), name)
    return path


def manifest_digest(folder: str | os.PathLike[str]) -> str | None:
    """``sha256:<hex>`` of ``folder/manifest.json`` (``None`` when there is none); the files
    are not checked."""
    try:
        if own_file(folder, MANIFEST) is None:
            return None
        raw = read_capped(Path(folder) / MANIFEST, MAX_JSON_BYTES, "the manifest")
    except RunFolderError:
        return None
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def read_parquet(path: str | os.PathLike[str], **kwargs: Any) -> pd.DataFrame:
    """``pandas.read_parquet`` with an error that names the file when it cannot be read."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the reader
            raise RunFolderError(NOT_REGULAR, file=str(path))
        return pd.read_parquet(path, **kwargs)
    except RunFolderError:
        raise
    except FileNotFoundError:
        raise RunFolderError("file not found", file=str(path)) from None
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a damaged file
        raise RunFolderError(
            f"not a readable Parquet file ({type(exc).__name__}: {str(exc)[:200]})",
            file=str(path),
        ) from None


# ---- writing -------------------------------------------------------------------------------


_active: set[str] = set()
"""Temporary folders this process is writing (never removed by :func:`recover`)."""


class StageWriter:
    """Write a stage's outputs so that they appear together, verified, or not at all.

    Files go into a temporary folder (:meth:`path`, :meth:`write_json`, ...); leaving the
    block without an exception fsyncs them, writes the manifest last and publishes the folder
    with one rename (three when a previous folder is replaced: :func:`publish`). On an
    exception the temporary folder is removed and ``out_dir`` is unchanged.

    Args:
        out_dir: The folder to publish.
        stage: One of :data:`STAGES`.
        config_hash: :func:`config_hash` of the settings that change the outputs.
        inputs: Manifest digests of the run folders read, by role (``data``, ``simulator``).
        data_fingerprint: The prepared data's fingerprint (computed from the files for the
            ``prepare_data`` stage itself).
        work_dir: Write here instead of a fresh temporary folder, and keep it on an exception
            (a stage that can resume: ``train_simulator``'s ``.<name>.partial``). The folder is
            locked (:func:`lock_work_dir`) for the whole block: a second writer is refused.
        fresh: With ``work_dir``: empty it first (once locked, and after :func:`recover` has
            published it if it was finished): a run that does not resume.
        extra: More JSON-able fields for the manifest (e.g. ``source``).

    Example:
        >>> with StageWriter("runs/x/eval", "evaluate", config_hash=h) as out:  # doctest: +SKIP
        ...     out.write_json("results.json", results)
        >>> out.manifest.digest  # doctest: +SKIP
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        stage: str,
        *,
        config_hash: str | None = None,
        inputs: Mapping[str, str | None] | None = None,
        data_fingerprint: str | None = None,
        work_dir: str | os.PathLike[str] | None = None,
        fresh: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.out_dir = Path(out_dir)
        self.stage = stage
        self.config_hash = config_hash
        self.inputs = {k: v for k, v in (inputs or {}).items() if v is not None}
        self.data_fingerprint = data_fingerprint
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.fresh = bool(fresh)
        self.extra = dict(extra or {})
        self.manifest: Manifest | None = None
        self._dir: Path | None = None
        self._lock: Any = None

    @property
    def dir(self) -> Path:
        """The temporary folder being written."""
        assert self._dir is not None, "use StageWriter as a context manager"
        return self._dir

    def __enter__(self) -> StageWriter:
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        if self.work_dir is not None:  # before recover(): it may publish a finished work folder
            self._lock = lock_work_dir(self.work_dir)
        try:
            recover(self.out_dir)
            check_replaceable(self.out_dir, self.stage)  # before any work, not after it
            if self.work_dir is not None and self.fresh:
                shutil.rmtree(self.work_dir, ignore_errors=True)
        except BaseException:
            if self._lock is not None:
                self._lock.close()
            raise
        if self.work_dir is not None:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self._dir = self.work_dir
        else:
            self._dir = self.out_dir.parent / f".{self.out_dir.name}.tmp-{_token()}"
            self._dir.mkdir()
        _active.add(str(self._dir))
        return self

    def path(self, name: str) -> Path:
        """Temporary path to write output ``name`` to (a relative path; folders are made)."""
        boundary(f"{self.stage}: write {name}")
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_json(self, name: str, obj: object) -> Path:
        """Write ``obj`` as JSON; NaN and infinities become ``null`` (JSON has neither)."""
        path = self.path(name)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(finite_json(obj), fh, indent=2, default=json_default, allow_nan=False)
            fh.write("\n")
        return path

    def write_text(self, name: str, text: str) -> Path:
        path = self.path(name)
        path.write_text(text, encoding="utf-8")
        return path

    def write_parquet(self, name: str, df: pd.DataFrame) -> Path:
        path = self.path(name)
        df.to_parquet(path, index=False)
        return path

    def _commit(self) -> Manifest:
        folder = self.dir
        boundary(f"{self.stage}: fsync and hash")
        files = {}
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            name = path.relative_to(folder).as_posix()
            if name in (MANIFEST, MANIFEST + ".tmp"):
                continue
            fsync_file(path)
            files[name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
        record = _manifest_record(
            self.stage, files, self.config_hash, self.data_fingerprint, self.inputs, self.extra
        )
        boundary(f"{self.stage}: write {MANIFEST}")
        tmp = folder / (MANIFEST + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=2, default=json_default)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / MANIFEST)
        fsync_dir(folder)
        if self.work_dir is not None:  # into the temporary name recover() knows
            boundary(f"{self.stage}: rename the work folder")
            staged = self.out_dir.parent / f".{self.out_dir.name}.tmp-{_token()}"
            _active.add(str(staged))
            os.rename(folder, staged)
            _active.discard(str(folder))
            self._dir = folder = staged
        publish(folder, self.out_dir)
        return read_manifest(self.out_dir, self.stage)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.manifest = self._commit()
        except SimulatedKill:
            raise
        except BaseException:
            self._discard()
            raise
        else:
            if exc_type is not None and not issubclass(exc_type, SimulatedKill):
                self._discard()
        finally:
            _active.discard(str(self._dir))
            if self._lock is not None:  # removed with the work folder once published
                release_work_dir_lock(self._lock, remove=self.manifest is not None)
                self._lock = None

    def _discard(self) -> None:
        if self._dir is not None and self.work_dir is None:
            shutil.rmtree(self._dir, ignore_errors=True)


def fingerprint_files(files: Mapping[str, Mapping[str, Any]]) -> str:
    """Fingerprint of a prepared dataset: sha256 over its files' names and sha256s, without
    ``meta.json`` (whose creation time changes when identical data are prepared again)."""
    text = "\n".join(f"{n}:{e['sha256']}" for n, e in sorted(files.items()) if n != "meta.json")
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal(
    folder: str | os.PathLike[str],
    stage: str,
    *,
    config_hash: str | None = None,
    inputs: Mapping[str, str | None] | None = None,
    data_fingerprint: str | None = None,
) -> Manifest:
    """Write a manifest for the files a folder holds now, in place.

    For a folder you changed on purpose and vouch for (tests, a hand-made fixture); stages
    publish through :class:`StageWriter`. Folders of other stages nested in it are left out.
    """
    folder = Path(folder)
    nested = {p.parent for p in folder.glob(f"*/**/{MANIFEST}")}
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name == MANIFEST or any(n in path.parents for n in nested):
            continue
        files[name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    inputs = {k: v for k, v in (inputs or {}).items() if v is not None}
    record = _manifest_record(stage, files, config_hash, data_fingerprint, inputs)
    (folder / MANIFEST).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return read_manifest(folder, stage)


def _manifest_record(
    stage: str,
    files: dict[str, Any],
    config_hash: str | None,
    data_fingerprint: str | None,
    inputs: dict[str, str],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A manifest's content: what made the folder (code, libraries, settings, data, inputs),
    ``extra`` and its ``files``. A prepared dataset's fingerprint, when not given, is its
    files'."""
    if data_fingerprint is None and stage == "prepare_data":
        data_fingerprint = fingerprint_files(files)
    return {
        "format": FORMAT,
        "version": VERSION,
        "stage": stage,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "libraries": library_versions(),
        "config_hash": config_hash,
        "data_fingerprint": data_fingerprint,
        "inputs": inputs,
        **(extra or {}),
        "files": files,
    }


def _token() -> str:
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def check_replaceable(target: Path, stage: str) -> None:
    """Refuse to publish ``stage``'s output at ``target`` when something there is not an
    earlier output of the same stage: publishing replaces the folder and deletes the old one,
    so a folder of the user's (``out_dir=~/Documents``), another stage's output (the prepared
    data as ``check_simulator``'s ``out_dir``) or a file would be lost.

    Replaceable: nothing there, an empty folder, or a folder whose manifest says ``stage``
    made it.

    Raises:
        RunFolderError: Naming ``target`` and what it holds.
    """
    if not (target.exists() or target.is_symlink()):
        return
    why = None
    if target.is_symlink() or not target.is_dir():
        why = "it is a file, not a folder" if not target.is_symlink() else SYMLINK
    elif any(target.iterdir()):
        try:
            made_by = read_manifest(target).stage
        except RunFolderError:
            why = f"it holds files but no {MANIFEST} of a published stage folder"
        else:
            if made_by != stage:
                why = f"it is the output of the {made_by} stage, not of {stage}"
    if why is not None:
        raise RunFolderError(
            f"not replaced by this {stage} output: {why}, and publishing would delete it; "
            "write elsewhere (out_dir=...) or remove it yourself if it is an old output",
            file=str(target),
        )


def publish(tmp: Path, target: Path) -> None:
    """Make the complete folder ``tmp`` (``.<name>.tmp-<pid>-<token>``) the folder ``target``.

    A new folder takes one rename. An existing one is renamed aside
    (``.<name>.old-<pid>-<token>``), the folders of other stages nested in it are moved into
    the new one, the new one is renamed into place and the old one removed; a crash in between
    leaves a state :func:`recover` completes.
    """
    parent = target.parent
    match = _TEMP.match(tmp.name)
    token = f"{match['pid']}-{match['token']}" if match else _token()
    check_replaceable(target, read_manifest(tmp).stage)  # the writer checked; still so?
    if target.exists() or target.is_symlink():
        old = parent / f".{target.name}.old-{token}"
        boundary(f"publish {target.name}: rename the old folder aside")
        os.rename(target, old)
        fsync_dir(parent)
        _carry_nested(old, tmp)
        boundary(f"publish {target.name}: rename the new folder into place")
        os.rename(tmp, target)
        fsync_dir(parent)
        boundary(f"publish {target.name}: remove the old folder")
        shutil.rmtree(old, ignore_errors=True)
    else:
        boundary(f"publish {target.name}: rename the new folder into place")
        os.rename(tmp, target)
        fsync_dir(parent)


def _own_dirs(folder: Path) -> set[str]:
    """Top-level subfolders holding files of ``folder``'s own manifest."""
    try:
        files = read_manifest(folder).files
    except RunFolderError:
        return set()
    return {name.split("/", 1)[0] for name in files if "/" in name}


def _carry_nested(old: Path, new: Path) -> None:
    """Move the folders of other stages nested in ``old`` (subfolders that hold none of its
    own files, e.g. ``data/simulator``) into ``new``, unless ``new`` has one of that name."""
    if not old.is_dir() or old.is_symlink():
        return
    own = _own_dirs(old)
    for child in sorted(old.iterdir()):
        if (
            child.is_dir()
            and not child.is_symlink()
            and not child.name.startswith(".")
            and child.name not in own
            and not (new / child.name).exists()
        ):
            boundary(f"publish {new.name}: carry over {child.name}")
            os.rename(child, new / child.name)


def lock_work_dir(work_dir: str | os.PathLike[str]) -> Any:
    """Hold the lock of a resumable stage's work folder (``.<name>.partial``) until the
    returned file is closed: an exclusive ``flock`` on ``.<name>.partial.lock`` beside it, which
    the kernel releases when its process ends, however it ends.

    Two runs writing one work folder would mix their checkpoints and curves (and the first to
    finish would publish the folder under the other), so the second is refused.

    Raises:
        RunFolderError: Another process holds the lock; names its pid.
    """
    work_dir = Path(work_dir)
    lock_path = work_dir.parent / f"{work_dir.name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        return open(lock_path, "a+", encoding="utf-8")
    while True:
        fh = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 (held open: the lock)
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "unknown"
            fh.close()
            raise RunFolderError(
                f"another run (pid {owner}) is writing {work_dir}: wait for it to finish or stop "
                "it (its worker processes too); two runs in one work folder would mix their files"
            ) from None
        # The holder removes the file when it publishes (release_work_dir_lock); a lock won on
        # a file already removed guards nothing, so open the path again.
        try:
            if os.stat(lock_path).st_ino == os.fstat(fh.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        fh.close()
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    _held_locks.add(str(lock_path))
    return fh


def release_work_dir_lock(lock: Any, *, remove: bool) -> None:
    """Release a lock taken by :func:`lock_work_dir`; with ``remove`` (the stage published, so
    no work folder is left to guard) delete its file first, while still holding it."""
    if remove:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock.name)
    _held_locks.discard(str(lock.name))
    lock.close()


def _claim_work_dir(work: Path) -> Any:
    """For :func:`recover`: the work folder's lock when no other process holds it (``True``
    when this process holds it already), ``None`` while another run is writing the folder."""
    lock_path = work.parent / f"{work.name}.lock"
    if str(lock_path) in _held_locks:
        return True
    if not (work.exists() or lock_path.exists()):
        return True  # nothing there to guard or to clean up
    try:
        return lock_work_dir(work)
    except RunFolderError:
        return None


def _owner_alive(match: re.Match[str], path: Path) -> bool:
    pid = int(match["pid"])
    if pid == os.getpid():
        return str(path) in _active
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _complete(folder: Path) -> bool:
    try:
        verify_folder(folder)
    except RunFolderError:
        return False
    return True


def recover(target: str | os.PathLike[str]) -> list[str]:
    """Finish or undo an interrupted publication of ``target``; remove dead temporary folders.

    A temporary folder (or a resumable stage's ``.<name>.partial`` work folder) whose manifest
    verifies was complete when its writer died: it is published (the newest, if several).
    With none, a folder renamed aside is put back. Every other temporary folder of a process
    that is gone is removed, as is a stale ``<name>.partial`` staging folder of older
    versions; an unfinished work folder is kept for ``resume=true``. Nested stage folders
    (``data/.simulator.tmp-*``) are recovered too.

    Returns:
        What was done, one line each (empty when there was nothing to do).
    """
    target = Path(target)
    parent = target.parent
    done: list[str] = []
    if not parent.is_dir():
        return done
    temps, olds = [], []
    for path in parent.glob(f".{glob.escape(target.name)}.*-*"):
        match = _TEMP.match(path.name)
        if match is None or match["name"] != target.name or _owner_alive(match, path):
            continue
        (temps if match["kind"] == "tmp" else olds).append(path)
    # a resumable stage's work folder that got its manifest was finished too (killed before
    # its rename); an unfinished one is kept for resume=true
    work = parent / f".{target.name}.partial"
    claim = _claim_work_dir(work)  # None: a live run is writing it, so it is left alone
    finished_work = (
        claim is not None and work.is_dir() and str(work) not in _active and _complete(work)
    )
    try:
        done += _recover(target, temps, olds, work if finished_work else None)
    finally:
        if claim is not None and claim is not True:  # its file goes once no work folder is left
            release_work_dir_lock(claim, remove=not work.exists())
    if target.is_dir() and not target.is_symlink():
        done += recover_tree(target)
    return done


def _recover(target: Path, temps: list[Path], olds: list[Path], work: Path | None) -> list[str]:
    """:func:`recover`'s publication or roll-back; ``work`` is a finished work folder."""
    parent, done = target.parent, []
    complete = sorted(
        [*(p for p in temps if p.is_dir() and _complete(p)), *([work] if work else [])],
        key=lambda p: (p / MANIFEST).stat().st_mtime_ns,
    )
    for path in [*temps, *([work] if work else [])]:
        if not complete or path != complete[-1]:
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"removed the unfinished or superseded {path.name}")
    if complete:
        if not target.exists():
            for old in olds:
                _carry_nested(old, complete[-1])
        publish(complete[-1], target)
        done.append(f"published the finished {complete[-1].name} as {target.name}")
    elif not (target.exists() or target.is_symlink()) and olds:
        newest = max(olds, key=lambda p: p.stat().st_mtime_ns)
        os.rename(newest, target)
        fsync_dir(parent)
        olds.remove(newest)
        done.append(f"put {newest.name} back as {target.name}")
    for old in olds:
        if target.is_dir():
            _carry_nested(old, target)
        shutil.rmtree(old, ignore_errors=True)
        done.append(f"removed the replaced {old.name}")
    legacy = parent / f"{target.name}.partial"
    if legacy.is_dir() and not legacy.is_symlink():
        shutil.rmtree(legacy, ignore_errors=True)
        done.append(f"removed the stale {legacy.name}")
    return done


def recover_tree(root: str | os.PathLike[str]) -> list[str]:
    """:func:`recover` every stage folder under ``root`` that has temporary folders beside it."""
    root = Path(root)
    done: list[str] = []
    if not root.is_dir():
        return done
    targets = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            match = _TEMP.match(name) or _WORK.match(name)
            if match is not None:
                targets.add(Path(dirpath) / match["name"])
        for name in filenames:  # a work folder's lock left by a run killed as it published
            match = _WORK_LOCK.match(name)
            if match is not None:
                targets.add(Path(dirpath) / match["name"])
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    for target in sorted(targets, key=lambda p: len(p.parts)):
        done += recover(target)
    return done
