"""Quadrature of a meshed domain and the product quadrature of Omega_1 x Omega_2.

A :class:`Quadrature` is the data the finite-dimensional core consumes (docs/smoothing.md):
nodes ``x_i`` and weights ``w_i > 0`` with ``sum_i w_i f(x_i) ~ int_Omega f``. A
measure on Omega is then represented by its density ``m`` with respect to the
weights (mass ``sum_i w_i m_i``), and the transport plan by its density ``pi_ij``
with respect to the product weights ``w_i v_j``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from femot._validation import check_positive_scalar
from femot.core import GeometricCost
from femot.fem.meshes import boundary_distance, element_volumes, enlarged_mesh, mesh_dim

__all__ = ["Quadrature", "quadrature", "product_cost", "ProductQuadrature", "product_quadrature"]


@dataclass(eq=False)
class Quadrature:
    """Nodes (n, d) and positive weights (n,) of a quadrature rule on ``mesh``.

    ``measure`` is the discrete domain measure ``|Omega|_h = sum_i w_i`` (exact for
    polygonal domains with either rule). ``rule`` is ``"lumped"`` (nodes = mesh
    vertices, weights = vertex-lumped P1 masses) or ``"gauss"`` (element Gauss points).

    Parameters
    ----------
    nodes : numpy.ndarray, shape (n, d)
        Quadrature nodes.
    weights : numpy.ndarray, shape (n,)
        Positive weights.
    mesh : skfem.Mesh
        The mesh the rule lives on.
    rule : str, optional
        ``"lumped"`` (default) or ``"gauss"``.
    order : int, optional
        Polynomial degree of exactness (default 1).

    Notes
    -----
    Build instances with :func:`quadrature` rather than by hand.

    Examples
    --------
    >>> import numpy as np, skfem
    >>> from femot.fem import quadrature
    >>> q = quadrature(skfem.MeshLine(np.linspace(0.0, 1.0, 5)))
    >>> q.n, q.dim, q.measure
    (5, 1, 1.0)
    >>> q.integrate(q.nodes[:, 0])  # exact for affine functions
    0.5
    """

    nodes: np.ndarray
    weights: np.ndarray
    mesh: object
    rule: str = "lumped"
    order: int = 1
    _bdist: np.ndarray | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        """Number of nodes."""
        return int(self.weights.size)

    @property
    def dim(self) -> int:
        """Spatial dimension of the nodes."""
        return int(self.nodes.shape[1])

    @property
    def measure(self) -> float:
        """Discrete domain measure ``|Omega|_h = sum_i w_i``."""
        return float(self.weights.sum())

    def integrate(self, values) -> float:
        """Integral ``sum_i w_i values_i`` of the nodal ``values`` (shape ``(n,)``, else ValueError)."""
        v = np.asarray(values, dtype=float)
        if v.shape != (self.n,):
            raise ValueError(f"values must have shape ({self.n},), got {v.shape}")
        return float(self.weights @ v)

    def boundary_distance(self) -> np.ndarray:
        """Exact distance of every node to the boundary of the meshed domain (cached)."""
        if self._bdist is None:
            self._bdist = boundary_distance(self.mesh, self.nodes, signed=False)
        return self._bdist

    def admissible(self, rho: float) -> np.ndarray:
        """Indices of the nodes at distance >= rho from the boundary (Part II, (BK)).

        Parameters
        ----------
        rho : float
            Required distance to the boundary (a relative slack of 1e-12 is allowed).

        Returns
        -------
        numpy.ndarray of int
            Node indices.
        """
        return np.flatnonzero(self.boundary_distance() >= float(rho) * (1 - 1e-12))

    def enlarged(self, rho: float, h: float | None = None) -> "Quadrature":
        """The same rule on the enlarged domain of Part II, Lemma 2.4 (see ``enlarged_mesh``).

        Parameters
        ----------
        rho : float
            Enlargement, >= 0.
        h : float or None, optional
            Cell size of the enlarged mesh (see ``enlarged_mesh``); None (default) derives it
            from the mesh.

        Returns
        -------
        Quadrature
            Same ``rule`` and ``order`` on the enlarged mesh.
        """
        return quadrature(enlarged_mesh(self.mesh, rho, h), rule=self.rule, order=self.order)


def quadrature(mesh, rule: str = "lumped", order: int = 2) -> Quadrature:
    """Quadrature of a simplicial mesh.

    ``rule="lumped"``: nodes are the vertices, ``w_v = sum_{T ∋ v} |T| / (d + 1)``
    (the row sums of the P1 mass matrix; exact for affine functions).
    ``rule="gauss"``: the Gauss points of every element of a rule exact for polynomials
    of degree ``order``, weights ``|T| * reference weight``: the centroid rule (one node
    per cell) for order 1, scikit-fem's rules otherwise (if that rule has a negative
    weight, the next degree with positive weights).

    Parameters
    ----------
    mesh : skfem.Mesh
        A simplicial mesh (1D, 2D or 3D).
    rule : {"lumped", "gauss"}, optional
        The rule (default ``"lumped"``).
    order : int, optional
        Polynomial degree of the Gauss rule, >= 1 (default 2; ignored by ``"lumped"``).

    Returns
    -------
    Quadrature

    Raises
    ------
    ValueError
        If the mesh is not simplicial or has unused vertices (lumped), ``order`` is not a
        positive integer (gauss), or ``rule`` is unknown.

    Examples
    --------
    >>> import numpy as np, skfem
    >>> from femot.fem import quadrature
    >>> mesh = skfem.MeshLine(np.linspace(0.0, 1.0, 5))
    >>> quadrature(mesh).weights.tolist()
    [0.125, 0.25, 0.25, 0.25, 0.125]
    >>> quadrature(mesh, "gauss", order=1).nodes[:, 0].tolist()  # the cell midpoints
    [0.125, 0.375, 0.625, 0.875]
    """
    d = mesh_dim(mesh)
    if rule == "lumped":
        vol = element_volumes(mesh)
        w = np.bincount(mesh.t.ravel(), weights=np.tile(vol / (d + 1), d + 1), minlength=mesh.p.shape[1])
        used = w > 0
        if not np.all(used):
            raise ValueError("mesh: has vertices that belong to no cell; lumped weights would vanish")
        return Quadrature(np.ascontiguousarray(mesh.p.T, dtype=float), w, mesh, "lumped", 1)
    if rule == "gauss":
        if not isinstance(order, (int, np.integer)) or order < 1:
            raise ValueError(f"order must be a positive integer, got {order!r}")
        if order == 1:
            # Midpoint / centroid rule: one node per cell, exact for affine functions.
            cent = mesh.p[:, mesh.t].mean(axis=1).T
            return Quadrature(np.ascontiguousarray(cent), element_volumes(mesh), mesh, "gauss", 1)
        from skfem import Basis, ElementLineP1, ElementTetP1, ElementTriP1

        elem = {1: ElementLineP1, 2: ElementTriP1, 3: ElementTetP1}[d]()
        # Some rules (e.g. degree 3 on triangles) have a negative weight; take the next one.
        for k in range(int(order), int(order) + 4):
            basis = Basis(mesh, elem, intorder=k)
            w = np.asarray(basis.dx).ravel()
            if np.all(w > 0):
                break
        else:  # pragma: no cover - scikit-fem always has a positive rule nearby
            raise ValueError(f"order: no Gauss rule of degree {order}..{order + 3} with positive weights")
        x = np.asarray(basis.mapping.F(basis.X))  # (d, nel, nq)
        nodes = np.ascontiguousarray(x.reshape(d, -1).T)
        return Quadrature(nodes, w, mesh, "gauss", int(order))
    raise ValueError(f"rule must be 'lumped' or 'gauss', got {rule!r}")


def product_cost(q1, q2, beta=2.0, *, max_bytes: float = 4e9, chunk_rows: int | None = None,
                 matrix_free: bool = False):
    """Dense cost matrix ``c_ij = c(x_i, y_j)`` on the product quadrature (n1, n2).

    ``beta`` > 0 gives ``c = |x - y|^beta`` (Euclidean norm; both domains in the same
    R^d). A callable ``beta(x, y)`` with ``x`` (m, d1), ``y`` (n2, d2) must return the
    (m, n2) block of costs; it is called on row blocks so no (n1, n2, d) temporary is
    formed. Refuses (ValueError) to allocate more than ``max_bytes``.
    With ``matrix_free=True`` (``beta >= 1`` a number) a :class:`femot.GeometricCost`
    is returned instead: O(n1 + n2) memory, ``c_ij`` computed inside the solver's passes.

    Parameters
    ----------
    q1, q2 : Quadrature or array_like
        Quadratures (or node arrays of shape ``(n, d)``) of the two domains.
    beta : float or callable, optional
        Exponent of ``|x - y|^beta`` (default 2) or a callable cost ``beta(x, y)``.
    max_bytes : float, optional
        Largest dense matrix allowed, in bytes (default 4e9).
    chunk_rows : int or None, optional
        Rows per block; None (default) chooses about 2^24 entries per block.
    matrix_free : bool, optional
        Return a :class:`femot.GeometricCost` instead of a matrix (default False).

    Returns
    -------
    numpy.ndarray of shape (n1, n2) or GeometricCost

    Raises
    ------
    ValueError
        If ``beta`` is not a positive number or a callable (or, matrix-free, not a number
        >= 1), the callable returns blocks of the wrong shape or non-finite values, the
        domains differ in dimension for a numeric ``beta``, or the matrix exceeds ``max_bytes``.

    Examples
    --------
    >>> import numpy as np, skfem
    >>> from femot.fem import product_cost, quadrature
    >>> q = quadrature(skfem.MeshLine(np.linspace(0.0, 1.0, 5)))
    >>> product_cost(q, q, 2.0)[0].tolist()  # |x_0 - y_j|^2
    [0.0, 0.0625, 0.25, 0.5625, 1.0]
    """
    from scipy.spatial.distance import cdist

    x, y = _nodes(q1, "q1"), _nodes(q2, "q2")
    if matrix_free:
        if callable(beta) or not float(beta) >= 1.0:
            raise ValueError(f"beta: matrix_free=True needs a number beta >= 1 (|x - y|^beta), got {beta!r}")
        return GeometricCost(x, y, p=float(beta))
    n1, n2 = x.shape[0], y.shape[0]
    need = 8.0 * n1 * n2
    if need > max_bytes:
        raise ValueError(f"q1, q2: the dense cost matrix ({n1} x {n2}) needs {need / 2**20:.0f} MiB, "
                         f"more than max_bytes = {max_bytes / 2**20:.0f} MiB")
    c = np.empty((n1, n2))
    step = chunk_rows or max(1, int(2**24 // max(n2, 1)))
    if callable(beta):
        for s in range(0, n1, step):
            blk = np.asarray(beta(x[s:s + step], y), dtype=float)
            if blk.shape != (min(step, n1 - s), n2):
                raise ValueError(f"beta: the cost function returned shape {blk.shape} for a block of "
                                 f"{min(step, n1 - s)} x {n2} pairs")
            c[s:s + step] = blk
        if not np.all(np.isfinite(c)):
            raise ValueError("beta: the cost function returned NaN or infinite values")
        return c
    try:
        float(beta)
    except (TypeError, ValueError):
        raise ValueError(f"beta must be a positive number or a callable cost c(x, y), got {beta!r}") from None
    b = check_positive_scalar(beta, "beta")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"beta: |x - y|^beta needs both domains in the same R^d, got d1 = {x.shape[1]}, "
                         f"d2 = {y.shape[1]}; pass a callable cost")
    for s in range(0, n1, step):
        blk = c[s:s + step]
        if b == 2.0:
            blk[...] = cdist(x[s:s + step], y, "sqeuclidean")
        else:
            blk[...] = cdist(x[s:s + step], y)
            if b != 1.0:
                np.power(blk, b, out=blk)
    return c


def _nodes(q, name):
    if isinstance(q, Quadrature):
        return q.nodes
    a = np.asarray(q, dtype=float)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be a Quadrature or an (n, d) array of nodes")
    return a


@dataclass(eq=False)
class ProductQuadrature:
    """The product rule of Omega_1 x Omega_2: nodes (x_i, y_j), weights w_i v_j.

    Nothing of size n1*n2 is stored; :meth:`cost` builds the dense cost on demand.

    Parameters
    ----------
    q1 : Quadrature
        Quadrature of Omega_1 (nodes ``x_i``, weights ``w_i``).
    q2 : Quadrature
        Quadrature of Omega_2 (nodes ``y_j``, weights ``v_j``).

    Examples
    --------
    >>> import numpy as np, skfem
    >>> from femot.fem import ProductQuadrature, quadrature
    >>> q1 = quadrature(skfem.MeshLine(np.linspace(0.0, 1.0, 5)))
    >>> pq = ProductQuadrature(q1, quadrature(skfem.MeshTri()))
    >>> pq.shape, pq.dim
    ((5, 4), 3)
    >>> round(pq.integrate(np.ones(pq.shape)), 12)  # |Omega_1| |Omega_2|
    1.0
    """

    q1: Quadrature
    q2: Quadrature

    @property
    def shape(self) -> tuple[int, int]:
        """``(n1, n2)``: the numbers of nodes of the two factors."""
        return (self.q1.n, self.q2.n)

    @property
    def dim(self) -> int:
        """Dimension ``d1 + d2`` of the product domain."""
        return self.q1.dim + self.q2.dim

    def cost(self, beta=2.0, **kw) -> np.ndarray:
        """The cost on the product nodes, by :func:`product_cost`.

        Parameters
        ----------
        beta : float or callable, optional
            Exponent of ``|x - y|^beta`` (default 2) or a callable cost ``beta(x, y)``.
        **kw
            Further keywords of :func:`product_cost` (``max_bytes``, ``chunk_rows``, ``matrix_free``).

        Returns
        -------
        numpy.ndarray of shape (n1, n2) or GeometricCost
        """
        return product_cost(self.q1, self.q2, beta, **kw)

    def integrate(self, F) -> float:
        """``sum_ij w_i v_j F_ij`` of the values ``F`` at the product nodes (e.g. a plan density), dense or
        sparse; a dense ``F`` not of shape ``(n1, n2)`` raises ValueError."""
        import scipy.sparse as sp

        if sp.issparse(F):
            return float(self.q1.weights @ (F @ self.q2.weights))
        F = np.asarray(F, dtype=float)
        if F.shape != self.shape:
            raise ValueError(f"F must have shape {self.shape}, got {F.shape}")
        return float(self.q1.weights @ F @ self.q2.weights)


def product_quadrature(q1: Quadrature, q2: Quadrature) -> ProductQuadrature:
    """Product quadrature of two quadratures (the plan lives on it, docs/smoothing.md).

    Parameters
    ----------
    q1, q2 : Quadrature
        Quadratures of the two domains.

    Returns
    -------
    ProductQuadrature

    Raises
    ------
    ValueError
        If an argument is not a :class:`Quadrature`.

    Examples
    --------
    >>> import numpy as np, skfem
    >>> from femot.fem import product_quadrature, quadrature
    >>> q = quadrature(skfem.MeshLine(np.linspace(0.0, 1.0, 3)))
    >>> product_quadrature(q, q).shape
    (3, 3)
    """
    if not isinstance(q1, Quadrature) or not isinstance(q2, Quadrature):
        raise ValueError("q1 and q2 must be Quadrature objects (see femot.fem.quadrature)")
    return ProductQuadrature(q1, q2)
