"""check_simulator and envs.fidelity refuse a negative ``n_boot`` and a ``top`` below 1, naming
the key, before any work (the script: before the dataset is read; exit 2, no traceback)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clickstream.errors import ConfigError
from envs.fidelity import fidelity_report
from envs.sequences import SessionSequences, Vocabulary
from scripts import run_or_exit
from scripts.check_simulator import run
from tests.hydra_configs import compose_cfg

VOCAB = Vocabulary(pages=("/a", "/b"), groups=("all",), page_group=np.array([0, 0]))
CATALOG = pd.DataFrame({"page": ["/a", "/b"], "revenue": [0.0, 5.0]})

BAD = [
    ("n_boot=-1", "n_boot must be a whole number >= 0, got -1"),
    ("n_boot=abc", "n_boot must be a whole number >= 0, got 'abc'"),
    ("top=0", "top must be a whole number >= 1, got 0"),
    ("top=-2", "top must be a whole number >= 1, got -2"),
]


@pytest.mark.parametrize(("override", "message"), BAD)
def test_script_refuses_before_reading_the_data(override, message, tmp_path, capsys) -> None:
    # a data folder that does not exist: a later check would report it instead
    cfg = compose_cfg(
        "check_simulator",
        [f"data_dir={tmp_path / 'missing'}", f"out_dir={tmp_path / 'fid'}", override],
    )
    with pytest.raises(SystemExit) as exc:
        run_or_exit(run, cfg)
    assert exc.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "fid").exists()


def test_report_refuses_them_and_takes_zero_bootstraps() -> None:
    sessions = SessionSequences.from_lists([[0, 1], [1]], exit_id=2)
    with pytest.raises(ConfigError) as exc:
        fidelity_report(sessions, sessions, VOCAB, CATALOG, n_boot=-1)
    assert str(exc.value) == "n_boot must be a whole number >= 0, got -1"
    with pytest.raises(ConfigError) as exc:
        fidelity_report(sessions, sessions, VOCAB, CATALOG, top=0)
    assert str(exc.value) == "top must be a whole number >= 1, got 0"
    report = fidelity_report(sessions, sessions, VOCAB, CATALOG, n_boot=0, top=1)
    assert report["n_boot"] == 0 and report["summary"]["top"] == 1
    assert report["figures"]["bounce_rate"]["difference_ci95"] is None
