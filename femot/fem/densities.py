"""Measures with a density on a mesh: ``Density`` (a function) and ``FEFunction`` (a finite-element field).

Both are extended by zero outside their mesh and share the interface of
:class:`femot.fem.Measure`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from femot._validation import check_nonnegative_scalar
from femot.fem.measures import Measure, _points
from femot.fem.meshes import cell_simplices, locate, mesh_dim
from femot.fem.quadrature import quadrature

__all__ = ["Density", "FEFunction", "basis_probe"]


class _FunctionMeasure(Measure):
    """Common part of densities given by point values on a mesh (extended by zero)."""

    #: The skfem mesh the density lives on (set by the subclasses' constructors).
    mesh: Any = None
    order = 6
    _scale = 1.0

    def _raw(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x) -> np.ndarray:
        """Density values at points x (n, dim); zero outside the measure's mesh."""
        x = _points(x, self.dim, "x")
        out = np.zeros(x.shape[0])
        inside = locate(self.mesh, x)[0] >= 0
        if np.any(inside):
            v = np.asarray(self._raw(x[inside]), dtype=float).reshape(-1)
            if v.shape[0] != int(inside.sum()):
                raise ValueError(f"f: returned {v.shape[0]} values for {int(inside.sum())} points")
            if not np.all(np.isfinite(v)):
                raise ValueError("f: returned NaN or infinite values")
            if np.any(v < 0):
                raise ValueError(f"f: the density must be nonnegative, got the value {v.min():.3g}")
            out[inside] = v
        return self._scale * out

    def _on_own_nodes(self, x):
        v = np.asarray(self._raw(x), dtype=float).reshape(-1)
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            raise ValueError("f: the density must be finite and nonnegative on its mesh")
        return self._scale * v

    def _samples(self):
        """Unscaled values at the Gauss points and vertices of the own mesh (cached)."""
        if getattr(self, "_sample_cache", None) is None:
            qg = quadrature(self.mesh, "gauss", self.order)
            vg = np.asarray(self._raw(qg.nodes), dtype=float).reshape(-1)
            vv = np.asarray(self._raw(self.mesh.p.T), dtype=float).reshape(-1)
            for v in (vg, vv):
                if not np.all(np.isfinite(v)) or np.any(v < 0):
                    raise ValueError("f: the density must be finite and nonnegative on its mesh")
            self._sample_cache = (qg, vg, vv)
        return self._sample_cache

    def _integral(self) -> float:
        """int f over the own mesh, unscaled (Gauss rule of degree ``order``)."""
        qg, vg, _ = self._samples()
        return float(qg.weights @ vg)

    def support_cells(self) -> np.ndarray:
        """Cells of the own mesh on which the density is positive at a vertex or Gauss point."""
        qg, vg, vv = self._samples()
        nel = self.mesh.t.shape[1]
        pos = (vg.reshape(nel, -1) > 0).any(axis=1)
        pos |= (vv[self.mesh.t] > 0).any(axis=0)
        return np.flatnonzero(pos) if self._scale > 0 else np.zeros(0, dtype=np.int64)

    def support_simplices(self) -> np.ndarray:
        return cell_simplices(self.mesh, self.support_cells())

    def masses(self, q) -> np.ndarray:
        self._check_q(q)
        v = self(q.nodes) if q.mesh is not self.mesh else self._on_own_nodes(q.nodes)
        raw = q.weights * v
        tot = raw.sum()
        # Correct the quadrature error explicitly: the discrete mass is the exact mass.
        return raw * (self.mass() / tot) if tot > 0 else raw

    def sources(self, q):
        self._check_q(q)
        v = self(q.nodes) if q.mesh is not self.mesh else self._on_own_nodes(q.nodes)
        a = q.weights * v
        keep = a > 0
        return q.nodes[keep], a[keep]

    def cdf(self, x) -> np.ndarray:
        """F(x) = mu((-inf, x]) in 1D.

        On every cell of the own mesh the density is interpolated at 24 Gauss-Legendre
        points by a Legendre series, integrated exactly (accurate to rounding for
        densities that are smooth on each cell) and summed over the cells to the left.
        """
        from numpy.polynomial import legendre as L

        if self.dim != 1:
            raise ValueError("cdf is only defined for measures on intervals (dim 1)")
        x = np.asarray(x, dtype=float)
        if getattr(self, "_cdf_cache", None) is None:
            g, _ = L.leggauss(24)
            v = np.unique(self.mesh.p[0])
            a, b = v[:-1], v[1:]
            pts = (a[:, None] + b[:, None]) / 2 + (b - a)[:, None] / 2 * g[None]
            vals = self(pts.reshape(-1)).reshape(pts.shape)  # (nel, 24)
            coef = np.linalg.solve(L.legvander(g, 23), vals.T)  # (24, nel)
            anti = L.legint(coef, lbnd=-1, axis=0) * ((b - a) / 2)[None]  # int_a^x in s-variable
            cum = np.concatenate([[0.0], np.cumsum(L.legval(1.0, anti))])
            self._cdf_cache = (v, cum, anti)
        v, cum, anti = self._cdf_cache
        xf = x.reshape(-1)
        xc = np.clip(xf, v[0], v[-1])
        e = np.clip(np.searchsorted(v, xc, side="right") - 1, 0, v.size - 2)
        s = 2 * (xc - v[e]) / (v[e + 1] - v[e]) - 1
        out = cum[e] + L.legval(s, anti[:, e], tensor=False)
        out = np.where(xf < v[0], 0.0, np.where(xf >= v[-1], cum[-1], out))
        return out.reshape(x.shape)


class Density(_FunctionMeasure):
    """Absolutely continuous measure mu = f dx on the domain of ``mesh``.

    ``f(x)`` takes points of shape (n, d) and returns n nonnegative values; outside the
    mesh the density is extended by zero (the mu^rho of Part II, Lemma 2.4). ``mass``
    may be given exactly (e.g. a normalized density); otherwise it is the Gauss rule of
    degree ``order`` on the mesh. The support is taken as the union of the mesh cells
    where f is positive at a vertex or Gauss point (exact when f vanishes on whole
    cells, e.g. for a bump whose support is a union of cells). In 1D ``cdf`` may be given
    in closed form; otherwise it is computed by Gauss-Legendre quadrature.

    Parameters
    ----------
    f : callable
        ``f(x)`` for points ``x`` of shape ``(n, d)``, returning ``n`` nonnegative values.
    mesh : skfem.Mesh
        Simplicial mesh of the domain.
    mass : float or None, optional
        Exact mass, >= 0; None (default) integrates ``f`` with the Gauss rule.
    cdf : callable or None, optional
        Closed-form CDF ``F(x)`` (1D only).
    order : int, optional
        Degree of the Gauss rule used for the mass and the support, >= 1 (default 6).

    Raises
    ------
    ValueError
        If ``f`` or ``cdf`` is not callable, ``order`` is not a positive integer, ``mass`` is
        negative, ``cdf`` is given in more than one dimension, or the mesh is not simplicial.

    Examples
    --------
    >>> import numpy as np, skfem
    >>> from femot.fem import Density
    >>> mu = Density(lambda x: 2.0 * x[:, 0], skfem.MeshLine(np.linspace(0.0, 1.0, 5)))
    >>> round(mu.mass(), 12)
    1.0
    >>> mu([[0.25], [2.0]]).tolist()  # zero outside the mesh
    [0.5, 0.0]
    """

    def __init__(self, f, mesh, *, mass: float | None = None, cdf=None, order: int = 6):
        if not callable(f):
            raise ValueError("f must be a callable f(x) with x of shape (n, d)")
        self.f = f
        self.mesh = mesh
        self.dim = mesh_dim(mesh)
        if not isinstance(order, (int, np.integer)) or order < 1:
            raise ValueError(f"order must be a positive integer, got {order!r}")
        self.order = int(order)
        self._mass = None if mass is None else check_nonnegative_scalar(mass, "mass")
        if cdf is not None and not callable(cdf):
            raise ValueError("cdf must be a callable F(x) or None")
        if cdf is not None and self.dim != 1:
            raise ValueError("cdf can only be given for densities on intervals (dim 1)")
        self._cdf = cdf

    def _raw(self, x):
        return self.f(x)

    def mass(self) -> float:
        """Total mass: the given exact mass, or the Gauss-rule integral of ``f``, times the scale."""
        return self._scale * (self._mass if self._mass is not None else self._integral())

    def cdf(self, x):
        """The ``cdf`` given to the constructor if any, else the cell-wise integral of the base class."""
        if self._cdf is not None:
            return self._scale * np.asarray(self._cdf(np.asarray(x, dtype=float)), dtype=float)
        return super().cdf(x)

    def scaled(self, c: float) -> "Density":
        new = Density(self.f, self.mesh, mass=self._mass, cdf=self._cdf, order=self.order)
        new._scale = self._scale * c
        return new

    def __repr__(self):
        return f"Density(dim={self.dim}, mass={self.mass():.6g})"


class FEFunction(_FunctionMeasure):
    """Measure with a finite-element density u_h = sum_k u_k phi_k (scikit-fem basis).

    The mass is int u_h computed with the basis' own quadrature; the support is the union
    of the cells on which u_h does not vanish identically (exact). u_h must be
    nonnegative at the degrees of freedom and quadrature points.

    Parameters
    ----------
    basis : skfem.CellBasis
        The finite-element basis.
    u : array_like, shape (basis.N,)
        Nonnegative degrees of freedom.

    Raises
    ------
    ValueError
        If ``u`` has the wrong length, holds NaN/inf or negative values, or the function is
        negative at a quadrature point.

    Examples
    --------
    >>> import numpy as np, skfem
    >>> from femot.fem import FEFunction
    >>> mesh = skfem.MeshLine(np.linspace(0.0, 1.0, 5))
    >>> mu = FEFunction(skfem.Basis(mesh, skfem.ElementLineP1()), 2.0 * mesh.p[0])
    >>> round(mu.mass(), 12), mu([[0.25]]).tolist()
    (1.0, [0.5])
    """

    def __init__(self, basis, u):
        self.basis = basis
        self.mesh = basis.mesh
        self.dim = mesh_dim(self.mesh)
        self.u = np.asarray(u, dtype=float).reshape(-1)
        if self.u.shape[0] != basis.N:
            raise ValueError(f"u has length {self.u.shape[0]}, the basis has {basis.N} degrees of freedom")
        if not np.all(np.isfinite(self.u)):
            raise ValueError("u contains NaN or infinite entries")
        if np.any(self.u < 0):
            raise ValueError(f"u must be nonnegative (a density), got the value {self.u.min():.3g}")
        vq = np.asarray(basis.interpolate(self.u))
        if np.any(vq < -1e-12 * max(1.0, np.abs(self.u).max())):
            raise ValueError("u: the finite-element function is negative at a quadrature point")
        self._mass_value = float((np.asarray(basis.dx) * vq).sum())

    def _raw(self, x):
        return basis_probe(self.basis, x) @ self.u

    def mass(self) -> float:
        """Total mass ``int u_h`` (basis quadrature) times the scale."""
        return self._scale * self._mass_value

    def support_cells(self) -> np.ndarray:
        """Indices of the cells on which ``u_h`` does not vanish identically."""
        dofs = np.asarray(self.basis.element_dofs)
        return np.flatnonzero((self.u[dofs] != 0).any(axis=0))

    def scaled(self, c: float) -> "FEFunction":
        new = FEFunction(self.basis, self.u)
        new._scale = self._scale * c
        return new

    def __repr__(self):
        return f"FEFunction(dim={self.dim}, N={self.basis.N}, mass={self.mass():.6g})"


def basis_probe(basis, x):
    """Sparse matrix evaluating FE functions of ``basis`` at points x (n, d) inside the mesh.

    P1 elements use barycentric coordinates from :func:`locate` (fast); other elements
    use scikit-fem's ``probes``.

    Parameters
    ----------
    basis : skfem.CellBasis
        The finite-element basis.
    x : array_like, shape (n, d)
        Points inside the basis' mesh.

    Returns
    -------
    scipy.sparse matrix, shape (n, basis.N)
        Row ``k`` evaluates a coefficient vector at ``x[k]``.

    Raises
    ------
    ValueError
        If a point lies outside the mesh (P1 elements).
    """
    import scipy.sparse as sp
    from skfem import ElementLineP1, ElementTetP1, ElementTriP1

    x = np.asarray(x, dtype=float)
    if isinstance(basis.elem, (ElementLineP1, ElementTriP1, ElementTetP1)):
        cells, lam = locate(basis.mesh, x)
        if np.any(cells < 0):
            raise ValueError("x: a point lies outside the mesh of the finite-element function")
        dofs = np.asarray(basis.element_dofs)[:, cells].T  # (n, d+1), local order = vertex order
        rows = np.repeat(np.arange(x.shape[0]), lam.shape[1])
        return sp.csr_matrix((lam.ravel(), (rows, dofs.ravel())), shape=(x.shape[0], basis.N))
    return basis.probes(x.T)
