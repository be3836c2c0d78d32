"""Building blocks of the study configuration shared by :mod:`femot.studies.config` and the
problem adapters of :mod:`femot.studies.problems`: the error type, the checks of TOML
values (each error names the field), and the mesh specification of one level.

Kept apart from :mod:`femot.studies.config` so that the problem adapters (which validate
their own TOML sections) and the configuration parser (which looks the adapters up)
do not import each other.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ConfigError", "MeshSpec"]


class ConfigError(ValueError):
    """An invalid study configuration; the message starts with the field name."""


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


# ----------------------------------------------------------------------------- meshes


@dataclass(frozen=True)
class MeshSpec:
    """How to build the mesh of one level: a stored name / file, or a generated interval."""

    name: str | None = None          # as written in the config (hashed)
    path: str | None = None          # resolved file path (not hashed), None for stored names
    refine: int = 0
    domain: tuple | None = None      # generated interval [a, b] ...
    cells: int | None = None         # ... with this many cells
    family: str | None = None        # uniform refinement family ("unit_interval", "unit_square") ...
    level: int | None = None         # ... at this level (2^level cells per side)

    def key(self) -> dict:
        if self.cells is not None:
            return {"interval": list(self.domain or ()), "cells": self.cells}
        if self.family is not None:
            return {"family": self.family, "level": self.level}
        return {"name": self.name, "refine": self.refine}

    def label(self) -> str:
        if self.cells is not None:
            return f"interval{self.cells}"
        if self.family is not None:
            n = 2 ** int(self.level or 0)
            return f"{self.family}_{n}" if self.family == "unit_interval" else f"{self.family}_{n}x{n}"
        base = Path(str(self.name)).stem if self.path else str(self.name)
        return base + (f"+r{self.refine}" if self.refine else "")

    def load(self):
        from femot.fem import load_mesh

        if self.cells is not None:
            from skfem import MeshLine

            a, b = self.domain
            return MeshLine(np.linspace(a, b, self.cells + 1))
        if self.family is not None:
            return _FAMILIES[self.family][0](self.level)
        return load_mesh(self.path or self.name, refine=self.refine)


def _family_interval(level: int):
    from skfem import MeshLine

    return MeshLine(np.linspace(0.0, 1.0, 2 ** level + 1))


def _family_square(level: int):
    from skfem import MeshTri

    # init_sqsymmetric has 2 x 2 squares; level k = k - 1 uniform refinements (level 5 is
    # the stored unit_square: 32 x 32 squares, 1089 vertices)
    return MeshTri.init_sqsymmetric().refined(level - 1)


#: Meshes refined uniformly along the schedule by mesh.refine_with_delta:
#: name -> (constructor(level), mesh size h at level, smallest level, dimension).
#: h is the longest edge: 2^-level on the interval, sqrt(2) 2^-level on the square.
_FAMILIES = {
    "unit_interval": (_family_interval, lambda k: 2.0 ** -k, 1, 1),
    "unit_square": (_family_square, lambda k: math.sqrt(2.0) * 2.0 ** -k, 1, 2),
}
_FAMILY_ALIASES = {"unit_interval": "unit_interval", "interval": "unit_interval", "unit_square": "unit_square",
                   "square": "unit_square"}


def _mesh_entry(value, where: str, base_dir: Path, refine: int) -> MeshSpec:
    from femot.fem.meshes import available_meshes

    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: must be a mesh name or a file path, got {value!r}")
    looks_like_file = bool(Path(value).suffix) or "/" in value or os.sep in value
    if not looks_like_file:
        if value not in available_meshes():
            raise ConfigError(f"{where}: mesh {value!r} not found: not a stored mesh "
                              f"({', '.join(available_meshes())}) and not a file path")
        return MeshSpec(name=value, refine=refine)
    p = Path(value)
    if not p.is_absolute():
        p = base_dir / p
    if not p.is_file():
        raise ConfigError(f"{where}: mesh file {value!r} not found (looked for {p})")
    return MeshSpec(name=value, path=str(p), refine=refine)
