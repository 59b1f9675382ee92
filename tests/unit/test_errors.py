"""The error family: each layer raises its own subclass of ClickstreamError."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from clickstream import csv as csv_loader
from clickstream.errors import (
    ClickstreamError,
    ConfigError,
    DataError,
    ModelError,
    RunFolderError,
    from_options,
)
from clickstream.pages import PageConfig
from envs.dynamics import MarkovDynamics
from envs.visitor_model import load_weights_only
from envs.visitors.base import VisitorKind

ROOT = Path(__file__).resolve().parents[2]
LAYERS = (DataError, ConfigError, ModelError, RunFolderError)

# Files the lead is rewriting at the time of the change (issue 19): their raise sites move to
# a layer subclass with that rewrite. Empty this set then; the test below keeps it honest.
NOT_YET: set[str] = set()


def test_family_is_one_tree_under_clickstream_error() -> None:
    for cls in LAYERS:
        assert issubclass(cls, ClickstreamError) and issubclass(cls, ValueError)
    # the layers are siblings: catching one does not catch another
    for a in LAYERS:
        assert [b for b in LAYERS if issubclass(a, b)] == [a]


def test_malformed_csv_is_a_data_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "hits.csv"
    path.write_text('session_id,page\ns1,/home\ns1,"/cart\n')  # unclosed quote on line 3
    with pytest.raises(DataError) as info:
        csv_loader.load(path)
    assert info.value.file == str(path)
    assert isinstance(info.value, ClickstreamError)


def test_missing_page_column_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "hits.csv"
    path.write_text("session_id,when\ns1,1\n")
    with pytest.raises(DataError, match="no page column"):
        csv_loader.load(path)


def test_unknown_config_keys_and_values_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown pages option\(s\) \['identiy'\]"):
        from_options(PageConfig, {"identiy": "path"}, "pages")
    with pytest.raises(
        ConfigError, match=r"data.pages.n_groups must be a whole number >= 2 or null, got 1"
    ):
        PageConfig(n_groups=1)
    with pytest.raises(ConfigError, match=r"data\.columns maps unknown field"):
        csv_loader.parse_columns({"pgae": "url"})
    # a mapped column the file lacks is the mapping's fault, not the file's
    path = tmp_path / "hits.csv"
    path.write_text("session_id,page\ns1,/home\n")
    with pytest.raises(ConfigError, match=r"missing column 'url' for field 'page'"):
        csv_loader.load(path, columns={"page": "url"})


def test_foreign_checkpoints_are_run_folder_errors(tmp_path: Path) -> None:
    # a pickle where weights were expected is refused unread
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps(SimpleNamespace(weights=[1, 2]), protocol=2))
    with pytest.raises(RunFolderError, match=r"model\.pt: visitor model holds more than tensors"):
        load_weights_only(path, "visitor model")
    # a model of another page vocabulary
    data = SimpleNamespace(vocab=SimpleNamespace(pages=("/home", "/cart")))
    with pytest.raises(RunFolderError, match="another page vocabulary"):
        VisitorKind.check_pages(("/home", "/about"), data, path, "GRU visitor model")  # type: ignore[arg-type]


def test_bad_model_tables_are_model_errors() -> None:
    entry = np.array([0.5, 0.5])
    transitions = np.array([[0.2, 0.2, 0.2], [0.1, 0.1, 0.8]])  # row 0 sums to 0.6
    with pytest.raises(ModelError, match="every row must sum to 1"):
        MarkovDynamics(entry, transitions, ("/a", "/b"))
    with pytest.raises(ModelError, match=r"transitions \(P, P \+ 1\)"):
        MarkovDynamics(entry, transitions[:, :2], ("/a", "/b"))


def test_no_bare_clickstream_error_is_raised() -> None:
    """Every raise site names its layer (the base class is for catching, and for subclasses)."""
    pattern = re.compile(r"raise ClickstreamError\(")
    found = {}
    for folder in ("clickstream", "envs", "agents", "webapp", "scripts"):
        for file in sorted((ROOT / folder).rglob("*.py")):
            rel = file.relative_to(ROOT).as_posix()
            hits = len(pattern.findall(file.read_text(encoding="utf-8")))
            if hits and rel != "clickstream/errors.py":
                found[rel] = hits
    assert set(found) <= NOT_YET, f"raise a layer subclass instead: {found}"
    stale = NOT_YET - set(found)
    assert not stale, f"{sorted(stale)} raise layer subclasses now: remove them from NOT_YET"
