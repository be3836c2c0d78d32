"""Measures on meshed domains: the common interface, Diracs, samples and sums.

All measure types share one small interface (nonnegative measures, docs/smoothing.md):
``mass()``, ``atoms()``, ``support_simplices()``, ``support_distance_to_boundary(mesh)``
(Part II Assumption 2.3), ``discretize(q)`` and ``parts()`` / ``sources(q)`` (what the
smoothing convolves). Measures add (``mu + nu``) and scale by nonnegative numbers
(``0.5 * mu``). Densities live in :mod:`femot.fem.densities`, the 1D quantiles and exact
cost in :mod:`femot.fem.quantiles`.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from femot._docstrings import fill_doc
from femot._validation import as_nonnegative_vector, check_nonnegative_scalar, check_positive_scalar
from femot.fem.meshes import locate, mesh_dim, simplex_set_boundary_distance

__all__ = ["Measure", "DiracSum", "Empirical", "SumMeasure"]

# the quadrature argument of the measures' methods
_q_doc = fill_doc(q="""
q : Quadrature
    Nodal quadrature rule (:func:`femot.fem.quadrature.quadrature`) of the same dimension.
""")


class Measure:
    """Base class of nonnegative finite measures on a domain in R^dim.

    Examples
    --------
    >>> from femot.fem import DiracSum, Measure
    >>> mu = DiracSum([0.25, 0.75], [1.0, 2.0])
    >>> isinstance(mu, Measure), mu.mass()
    (True, 3.0)
    >>> (0.5 * mu).mass()
    1.5
    """

    dim: int

    def mass(self) -> float:  # pragma: no cover - abstract
        """Total mass of the measure."""
        raise NotImplementedError

    def atoms(self):
        """Dirac part as (points (k, dim), weights (k,))."""
        return np.zeros((0, self.dim)), np.zeros(0)

    def support_simplices(self) -> np.ndarray:  # pragma: no cover - abstract
        """Closed simplices covering the support, vertex coordinates of shape ``(m, k, dim)``."""
        raise NotImplementedError

    def support_extent(self):
        """Bounding box (lo, hi) of the support (of the simplices returned by support_simplices)."""
        S = self.support_simplices().reshape(-1, self.dim)
        if S.shape[0] == 0:
            return np.full(self.dim, np.nan), np.full(self.dim, np.nan)
        return S.min(axis=0), S.max(axis=0)

    def support_distance_to_boundary(self, mesh) -> float:
        """dist(supp mu, boundary of ``mesh``); negative if the support leaves the domain.

        Parameters
        ----------
        mesh : skfem.Mesh
            The domain's mesh (same dimension as the measure).

        Returns
        -------
        float
            Distance of the support to the boundary of the mesh (negative outside).

        Raises
        ------
        ValueError
            If the mesh has another dimension than the measure.
        """
        if mesh_dim(mesh) != self.dim:
            raise ValueError(f"mesh: dimension {mesh_dim(mesh)} does not match the measure's {self.dim}")
        return simplex_set_boundary_distance(mesh, self.support_simplices())

    def parts(self) -> list:
        """The summands of the measure (a list holding the measure itself unless it is a sum)."""
        return [self]

    @_q_doc
    def sources(self, q):
        """Points and masses of a discrete measure approximating mu on ``q`` (for convolution).

        Parameters
        ----------
        %(q)s

        Returns
        -------
        points : numpy.ndarray, shape (k, dim)
        masses : numpy.ndarray, shape (k,)
            Nonnegative masses summing to the measure's mass.
        """
        raise NotImplementedError  # pragma: no cover

    def discretize(self, q) -> np.ndarray:
        """Density ``m = masses(q) / q.weights`` at ``q.nodes``, so ``sum(w * m) = mass()`` (see :meth:`masses`)."""
        return self.masses(q) / q.weights

    @_q_doc
    def masses(self, q) -> np.ndarray:  # pragma: no cover - abstract
        """Masses of the measure lumped to the nodes of ``q``.

        Parameters
        ----------
        %(q)s

        Returns
        -------
        numpy.ndarray, shape (q.n,)
            Nonnegative nodal masses summing to :meth:`mass`.

        Raises
        ------
        ValueError
            If ``q`` has another dimension than the measure, or part of the measure lies outside
            its mesh.
        """
        raise NotImplementedError

    def scaled(self, c: float) -> "Measure":  # pragma: no cover - abstract
        """The measure multiplied by ``c`` (also written ``c * mu``).

        Parameters
        ----------
        c : float
            Nonnegative factor.

        Returns
        -------
        Measure
            A new measure of the same type with mass ``c * mass()``.
        """
        raise NotImplementedError

    def cdf(self, x) -> np.ndarray:  # pragma: no cover - abstract
        """Cumulative distribution function ``F(x) = mu((-inf, x])`` of a measure on an interval.

        Parameters
        ----------
        x : array_like
            Evaluation points (any shape).

        Returns
        -------
        numpy.ndarray
            ``F`` at ``x``, same shape (it increases from 0 to the mass).

        Raises
        ------
        ValueError
            If the measure is not one-dimensional.
        """
        raise NotImplementedError

    def __add__(self, other):
        if not isinstance(other, Measure):
            return NotImplemented
        return SumMeasure(self.parts() + other.parts())

    def __rmul__(self, c):
        return self.scaled(check_nonnegative_scalar(c, "scale factor"))

    __mul__ = __rmul__

    def _check_q(self, q):
        if q.dim != self.dim:
            raise ValueError(f"q: quadrature of dimension {q.dim} for a measure of dimension {self.dim}")


def _points(x, dim: int | None, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim == 1 and (dim in (None, 1)):
        a = a[:, None]
    if a.ndim != 2 or (dim is not None and a.shape[1] != dim) or a.shape[1] not in (1, 2, 3):
        raise ValueError(f"{name} must have shape (n, d) with d in 1..3, got {np.shape(x)}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite entries")
    return a


class DiracSum(Measure):
    """mu = sum_k a_k delta_{z_k} with points z (k, d) and weights a_k >= 0.

    Parameters
    ----------
    points : array_like, shape (k, d)
        Positions of the atoms (shape ``(k,)`` in 1D).
    weights : array_like of shape (k,) or None, optional
        Nonnegative masses; None (default) means ``1/k`` each.

    Raises
    ------
    ValueError
        If ``points`` is empty or malformed or a weight is negative.

    Examples
    --------
    >>> import numpy as np, skfem
    >>> from femot.fem import DiracSum, quadrature
    >>> mu = DiracSum([0.25, 0.75], [1.0, 2.0])
    >>> q = quadrature(skfem.MeshLine(np.linspace(0.0, 1.0, 5)))
    >>> mu.discretize(q).tolist()  # density w.r.t. q.weights, same mass
    [0.0, 4.0, 0.0, 8.0, 0.0]
    """

    def __init__(self, points, weights=None):
        self.points = _points(points, None, "points")
        self.dim = self.points.shape[1]
        k = self.points.shape[0]
        if k == 0:
            raise ValueError("points must not be empty")
        self.weights = np.full(k, 1.0 / k) if weights is None else \
            as_nonnegative_vector(weights, "weights", length=k)

    def mass(self) -> float:
        """Total mass ``sum_k a_k``."""
        return float(self.weights.sum())

    def atoms(self):
        """The atoms as ``(points (k, dim), weights (k,))``."""
        return self.points, self.weights

    def support_simplices(self) -> np.ndarray:
        """The atoms of positive weight as one-vertex simplices, shape ``(k, 1, dim)``."""
        return self.points[self.weights > 0][:, None, :]

    def sources(self, q):
        self._check_q(q)
        return self.points, self.weights

    def masses(self, q) -> np.ndarray:
        """Nodal masses: barycentric splitting on vertex rules (keeps first moments), nearest node on Gauss rules."""
        self._check_q(q)
        out = np.zeros(q.n)
        if q.rule == "lumped":
            cells, lam = locate(q.mesh, self.points)
            if np.any(cells < 0):
                i = int(np.flatnonzero(cells < 0)[0])
                raise ValueError(f"points: the Dirac at {self.points[i]} lies outside the mesh of q")
            np.add.at(out, q.mesh.t[:, cells].T.ravel(), (lam * self.weights[:, None]).ravel())
        else:
            if np.any(locate(q.mesh, self.points)[0] < 0):
                raise ValueError("points: a Dirac lies outside the mesh of q")
            idx = cKDTree(q.nodes).query(self.points)[1]
            np.add.at(out, idx, self.weights)
        return out

    def cdf(self, x):
        if self.dim != 1:
            raise ValueError("cdf is only defined for measures on intervals (dim 1)")
        x = np.asarray(x, dtype=float)
        order = np.argsort(self.points[:, 0])
        z, cw = self.points[order, 0], np.cumsum(self.weights[order])
        i = np.searchsorted(z, x.reshape(-1), side="right")
        return np.where(i > 0, cw[np.maximum(i - 1, 0)], 0.0).reshape(x.shape)

    def scaled(self, c: float) -> "DiracSum":
        return DiracSum(self.points, self.weights * c)

    def __repr__(self):
        return f"DiracSum(k={self.points.shape[0]}, dim={self.dim}, mass={self.mass():.6g})"


class Empirical(DiracSum):
    """Empirical measure (mass / N) sum_k delta_{X_k} of N samples X (N, d).

    Parameters
    ----------
    samples : array_like, shape (N, d)
        The sample points.
    mass : float, optional
        Total mass, > 0 (default 1).

    Raises
    ------
    ValueError
        If ``mass <= 0`` or ``samples`` is malformed.

    Examples
    --------
    >>> from femot.fem import Empirical
    >>> mu = Empirical([0.1, 0.2, 0.9], mass=3.0)
    >>> mu.mass(), mu.weights.tolist()
    (3.0, [1.0, 1.0, 1.0])
    """

    def __init__(self, samples, mass: float = 1.0):
        mass = check_positive_scalar(mass, "mass")
        pts = _points(samples, None, "samples")
        super().__init__(pts, np.full(pts.shape[0], mass / pts.shape[0]))

    @classmethod
    def from_density(cls, density, n: int, seed=0, mass: float | None = None) -> "Empirical":
        """n samples of a bounded density on its mesh by rejection sampling (seeded).

        Parameters
        ----------
        density : Density
            A bounded density on its mesh.
        n : int
            Number of samples, >= 1.
        seed : int or numpy.random.SeedSequence, optional
            Seed of ``numpy.random.default_rng`` (default 0).
        mass : float or None, optional
            Mass of the empirical measure; None (default) uses the density's mass.

        Returns
        -------
        Empirical

        Raises
        ------
        ValueError
            If ``n`` is not a positive integer or the density vanishes identically.
        """
        rng = np.random.default_rng(seed)
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        qg, vg, vv = density._samples()
        fmax = 1.2 * density._scale * max(vg.max(), vv.max())
        if fmax <= 0:
            raise ValueError("density: vanishes identically, cannot sample")
        lo, hi = density.mesh.p.min(axis=1), density.mesh.p.max(axis=1)
        out: list[np.ndarray] = []
        while sum(len(o) for o in out) < n:
            x = lo + (hi - lo) * rng.random((4 * n, density.dim))
            ok = rng.random(4 * n) * fmax < density(x)
            out.append(x[ok])
        return cls(np.concatenate(out)[:n], density.mass() if mass is None else mass)


class SumMeasure(Measure):
    """Finite sum of measures of the same dimension (e.g. a density plus Diracs).

    Parameters
    ----------
    parts : iterable of Measure
        The summands, all of the same dimension.

    Raises
    ------
    ValueError
        If ``parts`` is empty, holds a non-measure, or mixes dimensions.

    Examples
    --------
    >>> import numpy as np, skfem
    >>> from femot.fem import Density, DiracSum
    >>> mesh = skfem.MeshLine(np.linspace(0.0, 1.0, 5))
    >>> mu = DiracSum([0.5]) + Density(lambda x: np.ones(len(x)), mesh)
    >>> type(mu).__name__, mu.mass(), len(mu.parts())
    ('SumMeasure', 2.0, 2)
    """

    def __init__(self, parts):
        parts = list(parts)
        if not parts or not all(isinstance(p, Measure) for p in parts):
            raise ValueError("parts must be a nonempty list of measures")
        dims = {p.dim for p in parts}
        if len(dims) != 1:
            raise ValueError(f"parts: measures of different dimensions {sorted(dims)} cannot be added")
        self._parts = parts
        self.dim = dims.pop()

    def parts(self) -> list:
        """The summands (a new list)."""
        return list(self._parts)

    def mass(self) -> float:
        """Sum of the summands' masses."""
        return float(sum(p.mass() for p in self._parts))

    def atoms(self):
        """The Dirac parts of all summands, concatenated as ``(points, weights)``."""
        pts, w = zip(*(p.atoms() for p in self._parts))
        return np.concatenate(pts), np.concatenate(w)

    def support_simplices(self):
        """Not available for a sum (the parts have different simplex types): raises NotImplementedError."""
        raise NotImplementedError("SumMeasure has parts with different simplex types")

    def support_distance_to_boundary(self, mesh) -> float:
        return float(min(p.support_distance_to_boundary(mesh) for p in self._parts))

    def support_extent(self):
        """Bounding box ``(lo, hi)`` of the union of the summands' supports."""
        ext = [p.support_extent() for p in self._parts]
        return np.nanmin([e[0] for e in ext], axis=0), np.nanmax([e[1] for e in ext], axis=0)

    def masses(self, q):
        return sum(p.masses(q) for p in self._parts)

    def sources(self, q):
        pts, a = zip(*(p.sources(q) for p in self._parts))
        return np.concatenate(pts), np.concatenate(a)

    def cdf(self, x):
        return sum(p.cdf(x) for p in self._parts)

    def scaled(self, c: float) -> "SumMeasure":
        return SumMeasure([p.scaled(c) for p in self._parts])

    def __repr__(self):
        return "SumMeasure(" + ", ".join(repr(p) for p in self._parts) + ")"
