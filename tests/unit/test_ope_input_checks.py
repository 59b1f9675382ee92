"""scripts/ope.py and agents/ope.py refuse bad numbers and output paths up front, naming the flag.

Every check here runs before the dataset is read, so the tests give a data folder that does not
exist: a check that ran later would report that folder instead of the flag.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.ope import Terms, bootstrap, bootstrap_many
from clickstream.errors import ConfigError, DataError
from scripts.ope import check_out, main

NO_DATA = "/nonexistent/prepared"


def _err(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


def _estimate(tmp_path: Path, *extra: str) -> list[str]:
    return ["estimate", "--data-dir", NO_DATA, "--logs", str(tmp_path / "logs.parquet"),
            "--policy", "popular", *extra]  # fmt: skip


def _log(tmp_path: Path, *extra: str) -> list[str]:
    return ["log", "--data-dir", NO_DATA, "--out", str(tmp_path / "logs.parquet"), *extra]


@pytest.mark.parametrize("n_boot", ["0", "-3"])
def test_estimate_refuses_fewer_than_one_bootstrap_replicate(n_boot, tmp_path, capsys) -> None:
    err = _err(_estimate(tmp_path, "--n-boot", n_boot), capsys)
    assert err == f"error: --n-boot must be a whole number >= 1, got {n_boot}\n"


@pytest.mark.parametrize("horizon", ["0", "-1"])
def test_estimate_refuses_a_horizon_below_one(horizon, tmp_path, capsys) -> None:
    err = _err(_estimate(tmp_path, "--horizon", horizon), capsys)
    assert err == f"error: --horizon must be a whole number >= 1, got {horizon}\n"


@pytest.mark.parametrize("epsilon", ["1.5", "-0.5", "nan"])
def test_log_refuses_an_epsilon_outside_the_unit_interval(epsilon, tmp_path, capsys) -> None:
    err = _err(_log(tmp_path, "--epsilon", epsilon), capsys)
    assert err == f"error: --epsilon must be a number in [0, 1], got {float(epsilon)!r}\n"


def test_log_refuses_zero_sessions(tmp_path, capsys) -> None:
    err = _err(_log(tmp_path, "--sessions", "0"), capsys)
    assert err == "error: --sessions must be a whole number >= 1, got 0\n"


def test_out_in_a_missing_folder_is_made_up_front(tmp_path, capsys) -> None:
    out = tmp_path / "new" / "sub" / "logs.parquet"
    # the folder exists before the (here missing) dataset is read: the final write cannot fail
    err = _err(["log", "--data-dir", NO_DATA, "--out", str(out)], capsys)
    assert "--out" not in err
    assert out.parent.is_dir() and not out.exists()


def test_out_under_a_file_or_naming_a_folder_is_refused(tmp_path, capsys) -> None:
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "est.json"
    err = _err(_estimate(tmp_path, "--out", str(out)), capsys)
    assert err == f"error: --out '{out}': '{tmp_path / 'afile'}' is a file, not a folder\n"
    err = _err(_log(tmp_path, "--out", str(tmp_path)), capsys)
    assert err == f"error: --out '{tmp_path}' is a folder: give a file path\n"
    deeper = tmp_path / "afile" / "sub" / "est.json"
    with pytest.raises(ConfigError) as exc:
        check_out(deeper)
    assert str(exc.value) == (
        f"--out '{deeper}': cannot create its folder '{deeper.parent}' (Not a directory)"
    )
    check_out(None)  # estimate's --out is optional


def test_bootstrap_refuses_no_replicates_and_no_units() -> None:
    terms = Terms(np.ones((4, 1)), lambda m: m[..., 0])
    for n_boot in (0, -3):
        with pytest.raises(ConfigError) as exc:
            bootstrap(terms, n_boot=n_boot)
        assert str(exc.value) == f"n_boot must be a whole number >= 1, got {n_boot}"
    with pytest.raises(ConfigError) as exc:
        bootstrap(terms, chunk=0)
    assert str(exc.value) == "chunk must be a whole number >= 1, got 0"
    empty = Terms(np.ones((0, 1)), lambda m: m[..., 0])
    with pytest.raises(DataError) as dexc:
        bootstrap_many([terms, empty], np.random.default_rng(0))
    assert str(dexc.value) == "no logged units to estimate from (the logs hold no sessions)"
    assert bootstrap(terms, n_boot=1) == (1.0, 1.0, 1.0)


def test_estimates_carry_weight_diagnostics_and_a_low_ess_is_a_warning() -> None:
    from agents.ope import ESS_MIN
    from scripts.ope import _diagnostics

    mean = lambda m: m[..., 0]  # noqa: E731
    even = _diagnostics(Terms(np.ones((500, 1)), mean, weights=np.ones(500)), "ips", [])
    assert even == {"ess": 500.0, "units": 500, "max_weight_share": 0.002, "warnings": []}
    w = np.r_[1000.0, np.full(999, 0.01)]  # one unit holds nearly all the weight
    skew = _diagnostics(Terms(np.ones((1000, 1)), mean, weights=w), "pdis", ["earlier"])
    assert skew["ess"] < ESS_MIN and skew["max_weight_share"] == pytest.approx(1000 / 1009.99)
    assert skew["warnings"][0] == "earlier"
    assert skew["warnings"][1].startswith("pdis: effective sample size 1.0 of 1,000 units")
    zero = _diagnostics(Terms(np.ones((5, 1)), mean, weights=np.zeros(5)), "ips", [])
    assert zero["ess"] is None and "never logged" in zero["warnings"][0]
    model = _diagnostics(Terms(np.ones((5, 1)), mean), "fqe", [])
    assert model == {"ess": None, "units": None, "max_weight_share": None, "warnings": []}
