"""Checks of TOML values for the study configuration: every error names the offending field.

Shared by the configuration parser (:mod:`femot.studies.config`) and the study kinds, which
validate their own tables.
"""
from __future__ import annotations

import dataclasses
import math

from femot.optim import BundleOptions, TrustRegionOptions

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """An invalid study configuration; the message starts with the field name.

    >>> from femot.studies import parse_config
    >>> try:
    ...     parse_config({"study": {"problem": "nope"}})
    ... except ConfigError as exc:
    ...     print(str(exc).split(";")[0])
    study.problem: unknown problem 'nope'
    """


def _num(sec: dict, key: str, where: str, *, default=None, positive=False, nonneg=False, integer=False,
         lo=None, hi=None):
    if key not in sec:
        if default is None:
            raise ConfigError(f"{where}.{key}: missing")
        return default
    v = sec[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{where}.{key}: must be a number, got {v!r}")
    if integer and not isinstance(v, int):
        raise ConfigError(f"{where}.{key}: must be an integer, got {v!r}")
    if not math.isfinite(v):
        raise ConfigError(f"{where}.{key}: must be finite, got {v!r}")
    if positive and v <= 0:
        raise ConfigError(f"{where}.{key}: must be positive, got {v!r}")
    if nonneg and v < 0:
        raise ConfigError(f"{where}.{key}: must be nonnegative, got {v!r}")
    if lo is not None and v < lo:
        raise ConfigError(f"{where}.{key}: must be >= {lo}, got {v!r}")
    if hi is not None and v > hi:
        raise ConfigError(f"{where}.{key}: must be <= {hi}, got {v!r}")
    return int(v) if integer else float(v)


def _num_list(sec: dict, key: str, where: str, *, positive=True, integer=False) -> list:
    v = sec[key]
    if not isinstance(v, list) or not v:
        raise ConfigError(f"{where}.{key}: must be a nonempty list of numbers, got {v!r}")
    out = []
    for i, x in enumerate(v):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise ConfigError(f"{where}.{key}[{i}]: must be a finite number, got {x!r}")
        if integer and not isinstance(x, int):
            raise ConfigError(f"{where}.{key}[{i}]: must be an integer, got {x!r}")
        if positive and x <= 0:
            raise ConfigError(f"{where}.{key}[{i}]: must be positive, got {x!r}")
        out.append(int(x) if integer else float(x))
    return out


def _check_keys(sec: dict, allowed, where: str) -> None:
    bad = sorted(set(sec) - set(allowed))
    if bad:
        raise ConfigError(f"{where}.{bad[0]}: unknown key; allowed: {', '.join(sorted(allowed))}")


def _table(raw: dict, key: str) -> dict:
    sec = raw.get(key, {})
    if not isinstance(sec, dict):
        raise ConfigError(f"{key}: must be a table ([{key}]), got {type(sec).__name__}")
    return sec


def _table_type(value, where: str, example: str):
    """The ``type`` of a TOML table (ConfigError naming ``where`` if ``value`` is not a table)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: missing or not a table; e.g. {example}")
    return value.get("type")


def _interval(value, where, domain=None):
    if (not isinstance(value, list) or len(value) != 2 or
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value) or
            not value[0] < value[1]):
        raise ConfigError(f"{where}: must be an interval [a, b] with a < b, got {value!r}")
    a, b = float(value[0]), float(value[1])
    if domain is not None and (a < domain[0] - 1e-12 or b > domain[1] + 1e-12):
        raise ConfigError(f"{where}: [{a:g}, {b:g}] leaves the domain [{domain[0]:g}, {domain[1]:g}]")
    return [a, b]


def _tr_options(sec, where, extra_forbidden=()):
    """The table ``tr`` of trust-region options, checked by the optimizer's own parser."""
    names = {cls: {f.name for f in dataclasses.fields(cls)} for cls in (TrustRegionOptions, BundleOptions)}
    valid = set().union(*names.values()) - {"verbose"}
    tr = sec.get("tr", {})
    if not isinstance(tr, dict):
        raise ConfigError(f"{where}.tr: must be a table of trust-region options")
    for k, v in tr.items():
        if k not in valid or k in extra_forbidden:
            raise ConfigError(f"{where}.tr.{k}: unknown trust-region option; valid: {', '.join(sorted(valid))}")
        if not isinstance(v, (int, float, str, bool)) or (isinstance(v, float) and not math.isfinite(v)):
            raise ConfigError(f"{where}.tr.{k}: must be a number, string or boolean")
    # checked once here by the optimizer's own options class rather than in every run
    cls = next((c for c, keys in names.items() if set(tr) <= keys), TrustRegionOptions)
    try:
        cls.coerce(dict(tr))
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        key = next((k for k in sorted(tr, key=len, reverse=True) if f"'{k}'" in msg or f"{k}=" in msg), None)
        raise ConfigError(f"{where}.tr{'.' + key if key else ''}: {msg}") from None
    return dict(sorted(tr.items()))
