"""The mesh of one study level: a stored mesh or file (refined), a generated interval, or a
member of a uniformly refined family (``mesh.refine_with_delta``)."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skfem import MeshLine, MeshTri

from femot.fem import available_meshes, load_mesh
from femot.studies.toml_checks import ConfigError

__all__ = ["MeshSpec"]


@dataclass(frozen=True)
class MeshSpec:
    """How to build the mesh of one level: a stored name / file, or a generated interval.

    >>> spec = MeshSpec(domain=(0.0, 1.0), cells=4)
    >>> spec.label(), spec.load().p.shape
    ('interval4', (1, 5))
    """

    name: str | None = None          # as written in the config (hashed)
    path: str | None = None          # resolved file path (not hashed), None for stored names
    refine: int = 0
    domain: tuple | None = None      # generated interval [a, b] ...
    cells: int | None = None         # ... with this many cells
    family: str | None = None        # uniform refinement family ("unit_interval", "unit_square") ...
    level: int | None = None         # ... at this level (2^level cells per side)

    def key(self) -> dict:
        """What identifies the mesh in the run ids."""
        if self.cells is not None:
            return {"interval": list(self.domain or ()), "cells": self.cells}
        if self.family is not None:
            return {"family": self.family, "level": self.level}
        return {"name": self.name, "refine": self.refine}

    def label(self) -> str:
        """A short name for tables and chain labels."""
        if self.cells is not None:
            return f"interval{self.cells}"
        if self.family is not None:
            n = 2 ** int(self.level or 0)
            return f"{self.family}_{n}" if self.family == "unit_interval" else f"{self.family}_{n}x{n}"
        base = Path(str(self.name)).stem if self.path else str(self.name)
        return base + (f"+r{self.refine}" if self.refine else "")

    def load(self):
        """The skfem mesh."""
        if self.cells is not None:
            a, b = self.domain
            return MeshLine(np.linspace(a, b, self.cells + 1))
        if self.family is not None:
            return _FAMILIES[self.family][0](self.level)
        return load_mesh(self.path or self.name, refine=self.refine)


def _family_interval(level: int):
    return MeshLine(np.linspace(0.0, 1.0, 2 ** level + 1))


def _family_square(level: int):
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
    """A mesh name or file path of the configuration as a MeshSpec (ConfigError naming ``where``)."""
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
