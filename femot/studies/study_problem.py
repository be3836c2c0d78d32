"""The interface every study kind implements, and the context shared by the levels of a chain."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from skfem import MeshTet, MeshTri

from femot.fem import interpolate_nodal
from femot.studies.mesh_spec import MeshSpec
from femot.studies.toml_checks import ConfigError, _check_keys

__all__ = ["StudyProblem", "ChainContext", "nodal_state", "carry_nodal"]


@dataclass(kw_only=True)
class ChainContext:
    """What the levels of one chain share: the parameters, data cached per mesh, the finest mesh.

    >>> ctx = ChainContext(params={})
    >>> spec = MeshSpec(domain=(0.0, 1.0), cells=4)
    >>> ctx.per_mesh(spec, lambda mesh: mesh.p.shape[1]), len(ctx.meshes)
    (5, 1)
    """

    params: dict
    #: the study's finest mesh (total errors against its reference), set by the chain runner
    finest: MeshSpec | None = None
    meshes: dict = field(default_factory=dict)

    def per_mesh(self, spec: MeshSpec, build):
        """``build(mesh)`` for the mesh of ``spec``, computed once per chain."""
        key = repr(spec.key())
        if key not in self.meshes:
            self.meshes[key] = build(spec.load())
        return self.meshes[key]


def nodal_state(q) -> dict:
    """The nodes of a quadrature, with the cells of its mesh when the nodes are its vertices
    (lumped rules), for :func:`carry_nodal`."""
    vertices = q.mesh.p.T
    if vertices.shape == q.nodes.shape and np.array_equal(vertices, q.nodes):
        return {"q_nodes": q.nodes, "q_cells": q.mesh.t}
    return {"q_nodes": q.nodes}


def carry_nodal(warm: dict, key: str, x_new) -> np.ndarray:
    """``warm[key]``, nodal values at ``warm["q_nodes"]``, at the nodes ``x_new``
    (:func:`femot.fem.interpolate_nodal`).

    In 2D and 3D the old mesh is rebuilt from ``warm["q_cells"]`` (P1 interpolation on its
    cells); on the line the sorted nodes imply that mesh, so none is passed.

    >>> import numpy as np
    >>> from femot.fem import quadrature
    >>> from skfem import MeshTri
    >>> q = quadrature(MeshTri())
    >>> warm = dict(nodal_state(q), alpha=q.nodes.sum(axis=1))
    >>> print(f"{carry_nodal(warm, 'alpha', [[0.25, 0.5]])[0]:.2f}")
    0.75
    """
    x_old = np.asarray(warm["q_nodes"], dtype=float)
    mesh = None
    if x_old.ndim == 2 and x_old.shape[1] >= 2 and "q_cells" in warm:
        mesh = _SIMPLEX_MESHES[x_old.shape[1]](x_old.T.copy(), np.asarray(warm["q_cells"]))
    return interpolate_nodal(x_old, warm[key], x_new, mesh=mesh)


_SIMPLEX_MESHES = {2: MeshTri, 3: MeshTet}


def _domains(meshes, where):
    """The common interval [a, b] of 1D meshes."""
    seen = {}
    for spec in meshes:
        k = repr(spec.key())
        if k in seen:
            continue
        m = spec.load()
        seen[k] = (float(m.p.min()), float(m.p.max()))
    doms = set(seen.values())
    if len(doms) != 1:
        raise ConfigError(f"{where}: all meshes must cover the same interval, got {sorted(doms)}")
    return doms.pop()


class StudyProblem:
    """A kind of study: it validates its TOML table, sets up a chain and solves one level.

    Subclasses set ``name`` (the value of ``study.problem``), ``all_metrics``, ``metrics``
    (reported by default), ``primary`` (the error whose decrease is checked), ``notes`` (for
    the report) and ``KEYS`` (the keys of their table), and override the defaults below.
    """

    name = ""
    metrics: tuple = ()
    all_metrics: tuple = ()
    primary = ""
    notes = ""
    KEYS: set[str] = set()
    #: the study has a [mesh]; without one, the space dimension and why there is no mesh
    uses_mesh = True
    space_dim = 0
    mesh_note = ""
    #: the schedule's delta is used (smoothing)
    uses_delta = True
    #: the reference is also computed on the study's finest mesh (total errors)
    total_reference = False
    #: pairs (error at fixed h, total error) the report draws together
    error_kinds: tuple = ()

    def coupling_dimension(self, dim: int) -> int:
        """d = d1 + d2 of Part II (3.1): both marginals live on the study's mesh, so ``2 * dim``."""
        return 2 * int(dim)

    def validate(self, sec: dict, *, where, gammas, deltas, d, dim, meshes, base_dir) -> dict:
        """Check the kind's configuration table and fill in the defaults.

        Parameters
        ----------
        sec : dict
            The kind's table of the configuration (e.g. ``[transport]``).
        where : str
            Name of that table, the prefix of every error message.
        gammas, deltas : list of float
            The schedule, one entry per level.
        d : int
            The coupling dimension (:meth:`coupling_dimension`).
        dim : int
            Spatial dimension of the study's mesh.
        meshes : list of MeshSpec
            The meshes of all levels of all sweeps.
        base_dir : pathlib.Path
            Directory against which relative paths of the table are resolved.

        Returns
        -------
        dict
            The checked parameters with their defaults filled in (JSON-serializable: they
            define the run ids).

        Raises
        ------
        ConfigError
            (a ValueError) If a key is unknown, missing or invalid; the message names it.
        """
        raise NotImplementedError  # pragma: no cover

    def setup(self, params: dict, seed: int) -> ChainContext:
        """The data shared by all levels of one chain (random data drawn from ``seed``).

        Parameters
        ----------
        params : dict
            The parameters returned by :meth:`validate`.
        seed : int
            The chain's seed.

        Returns
        -------
        ChainContext
        """
        raise NotImplementedError  # pragma: no cover

    def solve(self, ctx, level, warm: dict | None):
        """Solve one level and measure its errors.

        Parameters
        ----------
        ctx : ChainContext
            From :meth:`setup`.
        level : femot.studies.config.Level
            The level to solve (``gamma``, ``delta``, ``mesh``, ...).
        warm : dict or None
            The state returned by the previous level of the chain; None solves cold.

        Returns
        -------
        metrics : dict
            The level's error measures (``name -> float``, see ``all_metrics``).
        info : dict
            Diagnostics of the solve (iterations, residuals, status, timings).
        state : dict of arrays
            For warm-starting the next level (stored next to the result).
        """
        raise NotImplementedError  # pragma: no cover

    def with_metrics(self, params: dict, metrics) -> dict:
        """The parameters for a report listing ``metrics`` (a kind may skip costly unlisted metrics)."""
        return params

    def _interval(self, sec: dict, where: str, dim: int, meshes, detail: str):
        """Check the table's keys (``self.KEYS``) and that the study's mesh is an interval; its domain."""
        _check_keys(sec, self.KEYS, where)
        if dim != 1:
            raise ConfigError(f"mesh: the {self.name} study is implemented on intervals ({detail}), "
                              f"got dimension {dim}")
        return _domains(meshes, "mesh")
