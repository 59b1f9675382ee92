"""Checks of the numbers a user gives an agent or a script: budgets, rates, limits, seeds.

Each returns the value as the type it is used as, or raises a
:class:`~clickstream.errors.ConfigError` naming the key and the value, before any work: a
negative budget would otherwise save an untrained policy with status 0, a seed of ``1.5`` a
policy folder that evaluation skips, a ``gamma`` of -1 a table that means nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Integral, Real
from typing import Any

from clickstream.errors import ConfigError

SEED_MAX = 2**32 - 1
"""Largest seed: numpy's and SB3's seeds are 32-bit unsigned."""


def whole(key: str, value: Any, minimum: int = 1, unit: str = "") -> int:
    """``value`` as an ``int`` of at least ``minimum`` (a whole float such as ``1e6``, which
    a command line gives for ``1e6``, counts; ``1.5`` does not: it would be cut silently).

    Raises:
        ConfigError: Not a whole number, or below ``minimum``; naming ``key``.
    """
    ok = not isinstance(value, bool) and (
        isinstance(value, Integral) or (isinstance(value, float) and value.is_integer())
    )
    if not ok or int(value) < minimum:
        raise ConfigError(f"{key} must be a whole number{unit} >= {minimum}, got {value!r}")
    return int(value)


def number(key: str, value: Any, ok: Callable[[float], bool], interval: str) -> float:
    """``value`` as a ``float`` for which ``ok`` holds (``interval`` says which, in the
    message; NaN fails every comparison, so it is refused too).

    Raises:
        ConfigError: Not a number, or outside ``interval``; naming ``key``.
    """
    if isinstance(value, bool) or not isinstance(value, Real) or not ok(float(value)):
        raise ConfigError(f"{key} must be a number in {interval}, got {value!r}")
    return float(value)


def unit_interval(key: str, value: Any) -> float:
    """A probability or discount: a number in ``[0, 1]``."""
    return number(key, value, lambda v: 0.0 <= v <= 1.0, "[0, 1]")


def time_limit(key: str, value: Any) -> float | None:
    """A wall-clock limit in minutes: positive, or ``None`` for none (0 is refused rather
    than read as "no limit", and a negative value would stop training at its first step).

    Raises:
        ConfigError: Not ``None`` nor a positive number; naming ``key``.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 < float(value) < 1e12:
        raise ConfigError(
            f"{key} must be a positive number of minutes, or null for no limit, got {value!r}"
        )
    return float(value)


def seed(key: str, value: Any) -> int:
    """A seed: a whole number in ``[0, 2**32 - 1]``, as an ``int`` (no float, even a whole
    one: ``seed_1.0`` would name a folder evaluation does not read).

    Raises:
        ConfigError: Anything else; naming ``key``.
    """
    if isinstance(value, bool) or not isinstance(value, Integral) or not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{key} must be a whole number in [0, {SEED_MAX}], got {value!r}")
    return int(value)
