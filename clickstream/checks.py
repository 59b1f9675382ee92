"""Checks of the settings a user gives: counts, budgets, rates, limits, seeds, flags.

The one place for them, below the simulator (:mod:`envs`) and the agents (:mod:`agents`), which
both use it; it imports nothing from either. The predicates (:func:`is_whole`,
:func:`is_number`, :func:`is_finite`) say whether a value is of a kind; the checks return the
value as the type it is used as, or raise a :class:`~clickstream.errors.ConfigError` naming the
key and the value, before any work: a negative budget would otherwise save an untrained policy
with status 0, a seed of ``1.5`` a policy folder that evaluation skips, a ``gamma`` of -1 a
table that means nothing, ``int("10")`` or ``int(2.7)`` some other setting without a word.

A bool is never a number here (Python counts ``True`` as the int 1); numpy integers and floats
are numbers like Python's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral, Real
from typing import Any, TypeGuard

import numpy as np

from clickstream.errors import ConfigError

SEED_MAX = 2**32 - 1
"""Largest seed of an agent or a script: numpy's and SB3's seeds are 32-bit unsigned."""

TORCH_SEED_MAX = 2**64 - 1
"""Largest seed of the simulator: what a ``torch.Generator`` takes without wrapping round."""


def is_whole(value: object) -> TypeGuard[Integral]:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[Real]:
    """A real number (Python or numpy, integer or float), not a bool nor a string."""
    return isinstance(value, Real) and not isinstance(value, bool)


def is_finite(value: object) -> TypeGuard[Real]:
    """A real number (:func:`is_number`) that is neither infinite nor NaN."""
    return is_number(value) and math.isfinite(value)


def whole(
    key: str, value: Any, minimum: int = 1, unit: str = "", *, note: str = "", floats: bool = True
) -> int:
    """``value`` as an ``int`` of at least ``minimum``.

    Args:
        key: The setting's name, for the message.
        value: What the user gave.
        minimum: The least value allowed.
        unit: Said after "whole number" (``" of steps"``).
        note: Said after the minimum (``"(0: none)"``, ``"or null"``).
        floats: Whether a whole float counts (``1e6``, which a command line gives for
            ``1e6``); ``1.5`` never does: it would be cut silently.

    Raises:
        ConfigError: Not a whole number, or below ``minimum``:
            ``<key> must be a whole number<unit> >= <minimum> <note>, got <value>``.
    """
    ok = is_whole(value) or (floats and isinstance(value, float) and value.is_integer())
    if not ok or int(value) < minimum:
        hint = f" {note}" if note else ""
        raise ConfigError(f"{key} must be a whole number{unit} >= {minimum}{hint}, got {value!r}")
    return int(value)


def number(
    key: str, value: Any, ok: Callable[[float], bool], rule: str, *, finite: bool = True
) -> float:
    """``value`` as a ``float`` for which ``ok`` holds (``rule`` says which, in the message:
    ``"> 0"``, ``"in [0, 1]"``; NaN fails every comparison, so ``ok`` refuses it too).

    Args:
        finite: Refuse infinities and NaN whatever ``ok`` says (the message says "a finite
            number" then, "a number" otherwise).

    Raises:
        ConfigError: Not a number, or not within ``rule``:
            ``<key> must be a [finite ]number <rule>, got <value>``.
    """
    kind = is_finite(value) if finite else is_number(value)
    if not kind or not ok(float(value)):
        what = "a finite number" if finite else "a number"
        raise ConfigError(f"{key} must be {what} {rule}, got {value!r}")
    return float(value)


def unit_interval(key: str, value: Any) -> float:
    """A probability or discount: a number in ``[0, 1]`` (``<key> must be a number in [0, 1]``)."""
    return number(key, value, lambda v: 0.0 <= v <= 1.0, "in [0, 1]", finite=False)


def time_limit(key: str, value: Any) -> float | None:
    """A wall-clock limit in minutes: positive, or ``None`` for none (0 is refused rather
    than read as "no limit", and a negative value would stop training at its first step).

    Raises:
        ConfigError: Not ``None`` nor a positive number; naming ``key``.
    """
    if value is None:
        return None
    if not is_number(value) or not 0.0 < float(value) < 1e12:
        raise ConfigError(
            f"{key} must be a positive number of minutes, or null for no limit, got {value!r}"
        )
    return float(value)


def seed(key: str, value: Any, maximum: int = SEED_MAX, *, optional: bool = False) -> int | None:
    """A seed: a whole number in ``[0, maximum]``, as an ``int`` (no float, even a whole one:
    ``seed_1.0`` would name a folder evaluation does not read, and ``int()`` would turn ``"42"``
    or ``1.5`` into some other seed), or ``None`` where ``optional``.

    Raises:
        ConfigError: Anything else:
            ``<key> must be a whole number in [0, <maximum>][ or None], got <value>``.
    """
    if value is None and optional:
        return None
    if is_whole(value) and 0 <= int(value) <= maximum:
        return int(value)
    none = " or None" if optional else ""
    raise ConfigError(
        f"{key} must be a whole number in {_seed_range(maximum)}{none}, got {value!r}"
    )


def flag(key: str, value: Any) -> bool:
    """``value`` if it is a real bool (Python or numpy): ``"false"`` is a true value to
    ``bool()``, and ``1`` a typo as likely as a choice.

    Raises:
        ConfigError: Anything else: ``<key> must be true or false, got <value>``.
    """
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise ConfigError(f"{key} must be true or false, got {value!r}")


def _seed_range(maximum: int) -> str:
    """``[0, maximum]`` as a user reads it: ``[0, 4294967295]``, but ``[0, 2**64)`` for the
    largest seeds (twenty digits say less than the power of two they stop short of)."""
    if maximum >= 2**53 and (maximum + 1) & maximum == 0:
        return f"[0, 2**{(maximum + 1).bit_length() - 1})"
    return f"[0, {maximum}]"
