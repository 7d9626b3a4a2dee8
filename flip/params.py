"""How configuration reaches code: frozen, validated parameter dataclasses and one check helper.

Every concern that has knobs (the federation, the client, each algorithm) gets a frozen
dataclass whose ``__post_init__`` validates each field with :func:`check`; constructors take
the dataclass (or build it from the Hydra node with :func:`from_node`). Bad input therefore
raises one kind of error, :class:`flip.errors.ConfigError`, naming the config field, the value
and the accepted values, before any data is read or any client trained.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from flip.errors import ConfigError

T = TypeVar("T")

POS_INT = "an integer >= 1"
NONNEG_INT = "an integer >= 0"


def is_int(value) -> bool:
    """An int that is not a bool (YAML ``true`` would pass ``isinstance(v, int)``)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite real number that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check(field: str, value, ok: bool | Callable[[Any], bool], accepted: str, hint: str = ""):
    """Return ``value`` if ``ok`` (a bool, or a predicate called on ``value``) holds.

    Raises:
        ConfigError: naming ``field`` (the config path, e.g. ``federation.rounds``), the value
            and ``accepted`` (the accepted values, in words), with an optional ``hint``. A
            predicate that raises ``TypeError``/``ValueError`` (a string where a number belongs)
            counts as not ok.
    """
    if callable(ok):
        try:
            ok = bool(ok(value))
        except (TypeError, ValueError):
            ok = False
    if not ok:
        raise ConfigError(field, value, accepted, hint)
    return value


def check_bool(field: str, value) -> bool:
    """``value`` if it is a bool; ``ConfigError`` otherwise (``bool('sometimes')`` is True)."""
    return check(field, value, isinstance(value, bool), "true, false")


def check_choice(field: str, value, choices) -> Any:
    """``value`` if it is one of ``choices``; ``ConfigError`` listing them otherwise."""
    return check(field, value, value in tuple(choices), ", ".join(str(c) for c in choices))


def from_node(cls: type[T], node: Mapping | None, prefix: str, **overrides) -> T:
    """Build the parameter dataclass ``cls`` from a config mapping (a Hydra node as a dict).

    Keys of ``node`` that ``cls`` does not have raise ``ConfigError`` naming ``prefix.key`` and
    the accepted keys (a misspelt knob must not be silently ignored); missing keys take the
    dataclass defaults; ``overrides`` win over ``node``.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    values = dict(node or {})
    values.pop("_target_", None)
    for key in values:
        if key not in names:
            raise ConfigError(f"{prefix}.{key}", values[key], "one of the keys " + ", ".join(names))
    values.update(overrides)
    return cls(**values)
