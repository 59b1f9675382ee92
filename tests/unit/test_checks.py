"""The shared setting checks of :mod:`clickstream.checks`: what counts as a whole number, a
number, a seed, a flag, and the one wording of their messages."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest

from clickstream import checks
from clickstream.errors import ConfigError


@pytest.mark.parametrize("value", [0, 3, np.int8(3), np.uint64(7)], ids=repr)
def test_python_and_numpy_integers_are_whole(value: Any) -> None:
    assert checks.is_whole(value) and checks.is_number(value)
    assert type(checks.whole("k", value, 0, floats=False)) is int


@pytest.mark.parametrize("value", [True, np.bool_(True), 1.0, "1", None], ids=repr)
def test_bools_floats_and_strings_are_not_whole(value: Any) -> None:
    assert not checks.is_whole(value)


def test_a_whole_float_counts_only_where_floats_are_taken() -> None:
    assert checks.whole("k", 1e6) == 1_000_000
    with pytest.raises(ConfigError, match=r"^k must be a whole number >= 1, got 1000000\.0$"):
        checks.whole("k", 1e6, floats=False)
    with pytest.raises(ConfigError, match=r"^k must be a whole number >= 1, got 1\.5$"):
        checks.whole("k", 1.5)


def test_the_whole_number_message_carries_unit_and_note() -> None:
    message = "k must be a whole number of steps >= 0 (0: none), got -1"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        checks.whole("k", -1, 0, " of steps", note="(0: none)")


@pytest.mark.parametrize("value", [math.nan, math.inf, True, np.bool_(False), "1"], ids=repr)
def test_finite_numbers_refuse_nan_infinity_bools_and_strings(value: Any) -> None:
    assert not checks.is_finite(value)
    with pytest.raises(ConfigError, match=r"^k must be a finite number > 0, got "):
        checks.number("k", value, lambda v: v > 0, "> 0")


def test_a_number_says_finite_only_where_it_is_asked_for() -> None:
    assert checks.number("k", np.float32(0.5), lambda v: v > 0, "> 0") == 0.5
    with pytest.raises(ConfigError, match=re.escape("k must be a number in [0, 1], got 2")):
        checks.unit_interval("k", 2)


def test_seeds_have_a_configurable_largest_value() -> None:
    assert checks.seed("s", checks.SEED_MAX) == checks.SEED_MAX
    with pytest.raises(ConfigError, match=re.escape("s must be a whole number in [0, 4294967295]")):
        checks.seed("s", checks.SEED_MAX + 1)
    assert checks.seed("s", 2**64 - 1, checks.TORCH_SEED_MAX) == 2**64 - 1
    assert checks.seed("s", None, checks.TORCH_SEED_MAX, optional=True) is None
    message = "s must be a whole number in [0, 2**64) or None, got 1.0"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        checks.seed("s", 1.0, checks.TORCH_SEED_MAX, optional=True)
    with pytest.raises(ConfigError, match=re.escape("got None")):
        checks.seed("s", None)


def test_a_flag_is_a_bool_and_nothing_else() -> None:
    assert checks.flag("f", np.bool_(True)) is True
    for value in ("false", 0, None):
        with pytest.raises(
            ConfigError, match=f"^f must be true or false, got {re.escape(repr(value))}$"
        ):
            checks.flag("f", value)


def test_time_limits_are_positive_minutes_or_none() -> None:
    assert checks.time_limit("t", None) is None and checks.time_limit("t", 2) == 2.0
    with pytest.raises(ConfigError, match="positive number of minutes"):
        checks.time_limit("t", 0)
