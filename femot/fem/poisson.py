"""The Poisson solution operator ``G`` of Part II (eq. (3.10)) and its adjoint, and ``product_mesh``.

``-Lap y = eta`` in D, ``y = 0`` on dD, by P1/P2 Lagrange elements; measures enter through
their load vectors, the tracking objectives come with their gradients (docs/fem.md).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import skfem
import skfem.refdom
from scipy.sparse.linalg import splu
from skfem import Basis, BilinearForm, Functional, LinearForm, asm
from skfem.helpers import dot, grad

from .._docstrings import cite, fill_doc
from .._validation import as_vector, check_positive_scalar

#: points x cells per block of :meth:`PoissonOperator.probe_matrix` (memory of skfem's element finder)
PROBE_BLOCK_ENTRIES = 1.6e7

__all__ = ["PoissonOperator", "product_mesh", "element_mask"]

# the result and error headings of the load_* methods
_load_doc = fill_doc(load_returns="""
Returns
-------
numpy.ndarray, shape (ndofs,)
    The load vector ``b_i = <eta, phi_i>`` of the measure ``eta``.

Raises
------
ValueError
""")


# --------------------------------------------------------------------------
# weak forms
# --------------------------------------------------------------------------

@BilinearForm
def _laplace(u, v, w):
    return dot(grad(u), grad(v))


@BilinearForm
def _mass(u, v, w):
    return u * v


@LinearForm
def _source(v, w):
    return w["f"] * v


@Functional
def _square(w):
    return w["f"] ** 2


def _grad_power_coefficient(gy, p):
    """``p |v|^{p-2}`` at every quadrature point, set to 0 where ``v = 0``.

    This is the derivative factor of ``v -> |v|^p``; for ``1 < p < 2`` the
    function is C^1 with gradient 0 at ``v = 0``.
    """
    nrm = np.sqrt(dot(gy, gy))
    out = np.zeros_like(nrm)
    pos = nrm > 0
    out[pos] = p * nrm[pos] ** (p - 2.0)
    return out


@Functional
def _grad_power_value(w):
    gy = w["y"].grad
    return dot(gy, gy) ** (0.5 * w["p"])


@LinearForm
def _grad_power_derivative(v, w):
    gy = w["y"].grad
    return _grad_power_coefficient(gy, w["p"]) * dot(gy, grad(v))


# --------------------------------------------------------------------------
# element choice
# --------------------------------------------------------------------------

_ELEMENTS = {
    # mesh class -> (P1 element, P2 element or None)
    skfem.MeshLine1: (skfem.ElementLineP1, skfem.ElementLineP2),
    skfem.MeshTri1: (skfem.ElementTriP1, skfem.ElementTriP2),
    skfem.MeshQuad1: (skfem.ElementQuad1, skfem.ElementQuad2),
    skfem.MeshTet1: (skfem.ElementTetP1, skfem.ElementTetP2),
    skfem.MeshHex1: (skfem.ElementHex1, skfem.ElementHex2),
    skfem.MeshWedge1: (skfem.ElementWedge1, None),
}

def _default_element(mesh, order):
    for cls, pair in _ELEMENTS.items():
        if type(mesh) is cls or isinstance(mesh, cls):
            elem = pair[order - 1]
            if elem is None:
                raise ValueError(f"order={order} is not available on {type(mesh).__name__}")
            return elem()
    raise ValueError(
        f"mesh of type {type(mesh).__name__} is not supported; use a first-order scikit-fem "
        "mesh (MeshLine, MeshTri, MeshQuad, MeshTet, MeshHex, MeshWedge1)"
    )


def element_mask(mesh, subdomain, *, cells: str = "element") -> np.ndarray:
    """Boolean element mask of a subdomain of ``mesh`` (ValueError naming ``subdomain`` if invalid).

    Parameters
    ----------
    mesh : skfem.Mesh
        The mesh.
    subdomain : None, array_like or callable
        None (all elements), a boolean (or 0/1) array of length ``nelements``, or a
        callable ``chi(x)`` evaluated at the element centroids ``x`` (shape
        ``(dim, nelements)``) returning booleans.
    cells : str, optional
        What an element is called in error messages.

    Returns
    -------
    numpy.ndarray
        The mask (at least one True entry).
    """
    ne = mesh.nelements
    if subdomain is None:
        return np.ones(ne, dtype=bool)
    if callable(subdomain):
        centroids = mesh.p[:, mesh.t].mean(axis=1)
        try:
            mask = np.asarray(subdomain(centroids))
        except Exception as exc:
            raise ValueError(f"subdomain could not be evaluated at the centroids: {exc}") from exc
    else:
        mask = np.asarray(subdomain)
    if mask.shape != (ne,):
        raise ValueError(f"subdomain mask must have shape ({ne},) (one entry per {cells}), got {mask.shape}")
    if mask.dtype != bool:
        if not np.all(np.isin(mask, (0, 1))):
            raise ValueError("subdomain mask must be boolean")
        mask = mask.astype(bool)
    if not np.any(mask):
        raise ValueError(f"subdomain is empty: the mask selects no {cells}")
    return mask


# --------------------------------------------------------------------------
# the operator
# --------------------------------------------------------------------------


@cite("II")
class PoissonOperator:
    """Discrete solution operator ``G`` of ``-Lap y = eta`` in D, ``y = 0`` on dD.

    Part II, eq. (3.10) and the state equation of (OCP).  Lagrange elements of
    degree ``order`` (1 or 2) on ``mesh``; homogeneous Dirichlet values on every
    boundary facet.

    Parameters
    ----------
    mesh : skfem.Mesh
        A first-order scikit-fem mesh (MeshLine, MeshTri, MeshQuad, MeshTet,
        MeshHex; MeshWedge1 with order 1).
    order : int, optional
        Polynomial degree, 1 (default) or 2.
    element : skfem.Element, optional
        Overrides the element chosen from ``mesh`` and ``order``; must be a
        nodal (Lagrange) element with one dof per vertex.
    intorder : int, optional
        Quadrature order for assembly and for callables; default ``2*order + 2``.

    Raises
    ------
    ValueError
        If ``mesh`` is not a scikit-fem mesh, ``order`` is not 1 or 2, the mesh has no interior
        degrees of freedom, or ``element`` is not a Lagrange element with one dof per vertex.

    Notes
    -----
    Points are arrays of shape ``(npoints, dim)`` (a 1D array is accepted when
    ``dim == 1``).  Nodal vectors have length :attr:`ndofs`; vertex vectors have
    length :attr:`nvertices` (the same for P1, where dof ``i`` is vertex ``i``).
    All returned states vanish on the boundary dofs.

    Attributes
    ----------
    basis : skfem.CellBasis
        The finite-element basis.
    K, M : scipy.sparse.csr_matrix
        Stiffness and mass matrices.
    interior, boundary : numpy.ndarray
        Dof indices (Dirichlet values on ``boundary``).
    vertex_load : scipy.sparse matrix, shape (ndofs, nvertices)
        Maps vertex masses to a load.

    Examples
    --------
    >>> import numpy as np, skfem
    >>> from femot.fem import PoissonOperator
    >>> op = PoissonOperator(skfem.MeshLine(np.linspace(0.0, 1.0, 11)))
    >>> y = op.state(np.eye(11)[5])  # -y'' = delta_{1/2}, y(0) = y(1) = 0
    >>> round(float(y.max()), 6)
    0.25
    """

    def __init__(self, mesh, order: int = 1, *, element=None, intorder: int | None = None):
        if not isinstance(mesh, skfem.Mesh):
            raise ValueError(f"mesh must be a scikit-fem Mesh, got {type(mesh).__name__}")
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order!r}")
        if element is None:
            element = _default_element(mesh, order)
        if intorder is None:
            intorder = 2 * order + 2
        self.mesh = mesh
        self.order = int(order)
        self.dim = int(mesh.dim())
        self.basis = Basis(mesh, element, intorder=int(intorder))
        self.K = asm(_laplace, self.basis).tocsr()
        self.M = asm(_mass, self.basis).tocsr()
        self.ndofs = int(self.basis.N)
        self.nvertices = int(mesh.nvertices)
        self.boundary = np.unique(np.asarray(self.basis.get_dofs().flatten(), dtype=np.int64))
        mask = np.ones(self.ndofs, dtype=bool)
        mask[self.boundary] = False
        self.interior = np.flatnonzero(mask)
        if self.interior.size == 0:
            raise ValueError("mesh has no interior degrees of freedom; refine it")
        self._lu = splu(self.K[self.interior][:, self.interior].tocsc())
        vdofs = np.asarray(self.basis.nodal_dofs)
        if vdofs.shape != (1, self.nvertices):
            raise ValueError("element must be a Lagrange element with one dof per vertex")
        self.vertex_dofs = vdofs[0].astype(np.int64)
        # vertex masses -> load vector (identity for P1; vertex dofs for P2)
        self.vertex_load = sp.csr_matrix(
            (np.ones(self.nvertices), (self.vertex_dofs, np.arange(self.nvertices))),
            shape=(self.ndofs, self.nvertices),
        )
        self._subdomain_cache: tuple[bytes, object] | None = None

    # ---------------------------------------------------------------- geometry
    @property
    def vertices(self) -> np.ndarray:
        """Vertex coordinates, shape ``(nvertices, dim)``."""
        return self.mesh.p.T.copy()

    @property
    def nodes(self) -> np.ndarray:
        """Dof coordinates, shape ``(ndofs, dim)`` (the vertices for P1)."""
        return self.basis.doflocs.T.copy()

    # ----------------------------------------------------------------- solves
    def _as_load(self, load, name):
        a = np.asarray(load, dtype=float)
        if a.ndim not in (1, 2) or a.shape[0] != self.ndofs:
            raise ValueError(
                f"{name} must have shape ({self.ndofs},) or ({self.ndofs}, k), got {a.shape}"
            )
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or infinite entries")
        return a

    def _solve_interior(self, b):
        y = np.zeros(b.shape)
        y[self.interior] = self._lu.solve(np.ascontiguousarray(b[self.interior]))
        return y

    def solve(self, load) -> np.ndarray:
        """State ``y = G eta`` for the load vector ``load[i] = <eta, phi_i>``.

        Entries of ``load`` on boundary dofs are ignored (the test functions vanish
        there).  ``load`` may have shape ``(ndofs, k)`` for ``k`` right-hand sides.

        Parameters
        ----------
        load : array_like, shape (ndofs,) or (ndofs, k)
            Load vector(s) ``<eta, phi_i>``.

        Returns
        -------
        numpy.ndarray
            Nodal values of the state, same shape as ``load`` (zero on the boundary).

        Raises
        ------
        ValueError
            If the array has the wrong shape or NaN/inf entries.
        """
        return self._solve_interior(self._as_load(load, "load"))

    def solve_adjoint(self, rhs) -> np.ndarray:
        """Adjoint ``G^T rhs`` for nodal vector(s) ``rhs`` (e.g. the gradient ``grad j`` of a functional
        of the state: the gradient of ``j(G b)`` in ``b``); ``K`` is symmetric, so the same solve and
        checks as :meth:`solve`."""
        return self._solve_interior(self._as_load(rhs, "rhs"))

    # ------------------------------------------------------------ load vectors
    def _as_points(self, points, name="points"):
        x = np.asarray(points, dtype=float)
        if self.dim == 1 and x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] != self.dim or x.shape[0] == 0:
            raise ValueError(
                f"{name} must have shape (npoints, {self.dim}), got {np.shape(points)}"
            )
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} contains NaN or infinite entries")
        return x

    def probe_matrix(self, points) -> sp.csr_matrix:
        """Sparse ``(npoints, ndofs)`` matrix ``P[k, i] = phi_i(x_k)``.

        ``P @ y`` evaluates a finite-element function at the points; ``P.T @ m``
        is the load of the discrete measure ``sum_k m_k delta_{x_k}``.
        Raises ValueError naming ``points`` if a point lies outside the mesh.

        Parameters
        ----------
        points : array_like, shape (npoints, dim)
            Points in the mesh (shape ``(npoints,)`` accepted in 1D).

        Returns
        -------
        scipy.sparse.csr_matrix, shape (npoints, ndofs)
        """
        x = self._as_points(points)
        lo = self.mesh.p.min(axis=1)
        hi = self.mesh.p.max(axis=1)
        tol = 1e-12 * max(float(np.max(hi - lo)), 1.0)
        out = np.any((x < lo - tol) | (x > hi + tol), axis=1)
        if np.any(out):
            k = int(np.flatnonzero(out)[0])
            raise ValueError(f"points[{k}] = {x[k]} lies outside the mesh")
        xt = np.ascontiguousarray(np.clip(x, lo, hi).T)
        # skfem's element finder and probes hold arrays of about (points x cells): 2.1 GB for 8,000
        # points on a 4,225-node mesh in one call, 0.4 GB (and 6x faster) in blocks of 2,000
        step = max(64, int(PROBE_BLOCK_ENTRIES // max(1, self.mesh.t.shape[1])))
        finder = self.mesh.element_finder(mapping=self.basis.mapping)
        blocks = []
        for start in range(0, max(1, xt.shape[1]), step):
            part = xt[:, start:start + step]
            try:
                cells = finder(*part)
            except (ValueError, IndexError):
                raise ValueError("points: at least one point lies outside the mesh") from None
            self._check_inside(part, np.asarray(cells), offset=start)
            blocks.append(self.basis.probes(part).tocsr())
        return blocks[0] if len(blocks) == 1 else sp.vstack(blocks, format="csr")

    def _check_inside(self, xt, cells, offset: int = 0):
        """Reject points whose reference coordinates leave the reference cell (``offset``: index of xt[:, 0])."""
        X = self.basis.mapping.invF(xt[:, :, None], tind=cells)[:, :, 0]
        tol = 1e-9
        ref = self.mesh.elem.refdom
        if issubclass(ref, (skfem.refdom.RefLine, skfem.refdom.RefTri, skfem.refdom.RefTet)):
            inside = np.all(X >= -tol, axis=0) & (X.sum(axis=0) <= 1 + tol)
        elif issubclass(ref, skfem.refdom.RefWedge):
            inside = (np.all(X >= -tol, axis=0) & (X[0] + X[1] <= 1 + tol)
                      & (X[2] <= 1 + tol))
        else:  # quadrilaterals and hexahedra: the unit cube
            inside = np.all((X >= -tol) & (X <= 1 + tol), axis=0)
        if not np.all(inside):
            k = int(np.flatnonzero(~inside)[0])
            raise ValueError(f"points[{offset + k}] = {xt[:, k]} lies outside the mesh")

    @_load_doc
    def load_dirac(self, points, masses=None) -> np.ndarray:
        """Load of ``sum_k masses[k] delta_{points[k]}`` (unit masses by default).

        Parameters
        ----------
        points : array_like, shape (npoints, dim)
            Positions of the Diracs (inside the mesh).
        masses : array_like of shape (npoints,) or None, optional
            Their masses; None (default) means ones.

        %(load_returns)s
            If a point lies outside the mesh or ``points``/``masses`` are malformed.
        """
        P = self.probe_matrix(points)
        if masses is None:
            m = np.ones(P.shape[0])
        else:
            m = as_vector(masses, "masses", length=P.shape[0])
        return P.T @ m

    @_load_doc
    def load_density(self, f) -> np.ndarray:
        """Load ``b_i = int f phi_i`` of the measure with density ``f``.

        ``f`` is either a nodal vector of length ``ndofs`` (a finite-element
        function; then ``b = M f``) or a callable taking coordinates of shape
        ``(dim, ...)`` and returning values of shape ``(...)`` (integrated by
        quadrature of order ``intorder``).

        Parameters
        ----------
        f : array_like of shape (ndofs,) or callable
            The density (see above).

        %(load_returns)s
            If ``f`` has the wrong length, fails at the quadrature points, returns an array of
            the wrong shape or NaN/inf values.
        """
        if callable(f):
            vals = self._quadrature_values(f, "f")
            return asm(_source, self.basis, f=vals)
        return self.M @ as_vector(f, "f", length=self.ndofs)

    @_load_doc
    def load_nodal_masses(self, masses) -> np.ndarray:
        """Load of the discrete measure ``sum_v masses[v] delta_{vertex v}``.

        ``masses`` has length ``nvertices``.  Masses on boundary vertices do not
        act on the state (``phi_i`` vanishes on the boundary for interior ``i``).

        Parameters
        ----------
        masses : array_like, shape (nvertices,)
            Masses at the mesh vertices.

        %(load_returns)s
            If ``masses`` has the wrong length or NaN/inf entries.
        """
        m = as_vector(masses, "masses", length=self.nvertices)
        return self.vertex_load @ m

    def _quadrature_values(self, f, name):
        x = np.asarray(self.basis.global_coordinates())
        try:
            vals = np.asarray(f(x), dtype=float)
        except Exception as exc:  # the user's callable failed
            raise ValueError(f"{name} could not be evaluated at quadrature points: {exc}") from exc
        if vals.shape != x.shape[1:]:
            try:
                vals = np.broadcast_to(vals, x.shape[1:]).copy()
            except ValueError:
                raise ValueError(
                    f"{name}(x) must return an array of shape {x.shape[1:]}, got {vals.shape}"
                ) from None
        if not np.all(np.isfinite(vals)):
            raise ValueError(f"{name} returned NaN or infinite values")
        return vals

    # ------------------------------------------------ measure on vertices -> y
    def state(self, masses) -> np.ndarray:
        """Nodal values of ``y = G m``, ``m = sum_v masses[v] delta_{x_v}`` (see :meth:`load_nodal_masses`)."""
        return self.solve(self.load_nodal_masses(masses))

    def state_adjoint(self, r) -> np.ndarray:
        """Adjoint of :meth:`state`: the vertex vector ``(G o L)^T r`` of a nodal vector ``r``, so that
        ``<state(a), r> = <a, state_adjoint(r)>`` for all vertex masses ``a``."""
        p = self.solve_adjoint(r)
        return self.vertex_load.T @ p

    # -------------------------------------------------------- L2 tracking
    def target(self, y_d):
        """Precompute ``(b, c)`` with ``b_i = int y_d phi_i`` and ``c = int y_d^2``.

        ``y_d`` is a nodal vector (a finite-element function) or a callable
        (integrated by quadrature).  Then
        ``1/2 |y - y_d|^2_{L2} = 1/2 y^T M y - b^T y + c/2`` for every discrete y.

        Parameters
        ----------
        y_d : array_like of shape (ndofs,) or callable
            The desired state: a nodal vector or a callable of coordinates ``(dim, ...)``.

        Returns
        -------
        b : numpy.ndarray, shape (ndofs,)
        c : float

        Raises
        ------
        ValueError
            If ``y_d`` has the wrong length or its values are not finite.
        """
        if callable(y_d):
            vals = self._quadrature_values(y_d, "y_d")
            b = asm(_source, self.basis, f=vals)
            c = float(asm(_square, self.basis, f=vals))
            return b, c
        yd = as_vector(y_d, "y_d", length=self.ndofs)
        b = self.M @ yd
        return b, float(yd @ b)

    def tracking_value_and_gradient_load(self, load, y_d):
        """``J(b) = 1/2 |G b - y_d|^2_{L2}`` and ``dJ/db`` for a load vector ``b``.

        The gradient is the adjoint state ``p = G^T (M y - int y_d phi)``
        (one adjoint solve).  ``y_d`` as in :meth:`target`.
        Returns ``(value, gradient, y)``.

        Parameters
        ----------
        load : array_like, shape (ndofs,)
            The load vector ``b``.
        y_d : array_like of shape (ndofs,) or callable
            The desired state: a nodal vector or a callable of coordinates ``(dim, ...)``.

        Raises
        ------
        ValueError
            If ``load`` or ``y_d`` is malformed.
        """
        bd, c = self.target(y_d)
        y = self.solve(as_vector(load, "load", length=self.ndofs))
        My = self.M @ y
        val = 0.5 * float(y @ My) - float(bd @ y) + 0.5 * c
        g = self.solve_adjoint(My - bd)
        return val, g, y

    def tracking_value_and_gradient(self, masses, y_d):
        """L2 tracking of (OCP) for the discrete control on the mesh vertices: ``(value, gradient)``.

        ``J(m) = 1/2 |G m - y_d|^2_{L2(Omega_*)}`` with ``G m`` the P1/P2 state of the measure
        ``sum_v masses[v] delta_{x_v}`` (Part II, (OCP)): :meth:`tracking_value_and_gradient_load`
        of the load :meth:`load_nodal_masses` ``(masses)`` (same ``y_d``, same errors), its gradient
        (the adjoint Poisson solve ``p = K^{-1} M (y - y_d)``) restricted to the vertices, so of
        length ``nvertices`` and zero on boundary vertices.
        """
        b = self.load_nodal_masses(masses)
        val, g, _ = self.tracking_value_and_gradient_load(b, y_d)
        return val, self.vertex_load.T @ g

    # ------------------------------------------------ W^{-1,p'} tracking
    def subdomain_mask(self, subdomain) -> np.ndarray:
        """Boolean element mask of the observation set D.

        ``subdomain`` is None (all elements), a boolean array of length
        ``nelements``, or a callable ``chi(x)`` evaluated at the element
        centroids ``x`` (shape ``(dim, nelements)``) returning booleans.

        Parameters
        ----------
        subdomain : None, array_like of bool or callable
            See above.

        Returns
        -------
        numpy.ndarray of bool, shape (nelements,)
        """
        return element_mask(self.mesh, subdomain)

    def _subdomain_basis(self, mask):
        key = mask.tobytes()
        if self._subdomain_cache is not None and self._subdomain_cache[0] == key:
            return self._subdomain_cache[1]
        if np.all(mask):
            sb = self.basis
        else:
            sb = self.basis.with_elements(np.flatnonzero(mask))
        self._subdomain_cache = (key, sb)
        return sb

    def gradient_norm_value_and_gradient(self, load, p_prime, subdomain=None):
        """``F(b) = int_D |grad G b|^{p'}`` and ``dF/db`` (Part II, eq. (3.11)).

        ``b`` is the load of ``eta = pi - pi_d``; with ``y = G b`` the value is
        computed by element quadrature (exact for P1, where ``grad y`` is constant
        per element).  The derivative of ``v -> |v|^{p'}`` is ``p' |v|^{p'-2} v``
        (0 at ``v = 0``; C^1 for ``p' > 1``), so
        ``dF/db = G^T g`` with ``g_i = int_D p' |grad y|^{p'-2} grad y . grad phi_i``.

        Part II takes ``1 < p' < d/(d-1)`` so that Dirac data have finite norm in
        the continuum; the discrete functional is defined for every ``p' > 1``.
        Returns ``(value, gradient, y)``.

        Parameters
        ----------
        load : array_like, shape (ndofs,)
            The load vector ``b``.
        p_prime : float
            The exponent ``p' > 1``.
        subdomain : None, array_like of bool or callable, optional
            The observation set D (see :meth:`subdomain_mask`); None (default) is the whole mesh.

        Raises
        ------
        ValueError
            If ``p_prime <= 1`` or ``load``/``subdomain`` is malformed.
        """
        p = check_positive_scalar(p_prime, "p_prime")
        if p <= 1:
            raise ValueError(f"p_prime must be > 1, got {p_prime!r}")
        mask = self.subdomain_mask(subdomain)
        y = self.solve(as_vector(load, "load", length=self.ndofs))
        sb = self._subdomain_basis(mask)
        yw = sb.interpolate(y)
        val = float(asm(_grad_power_value, sb, y=yw, p=p))
        g = asm(_grad_power_derivative, sb, y=yw, p=p)
        return val, self.solve_adjoint(g), y


# --------------------------------------------------------------------------
# geometry helpers
# --------------------------------------------------------------------------

def _sorted_cells_1d(mesh):
    """Cells of a 1D mesh with the left vertex first."""
    t = np.asarray(mesh.t)
    swap = mesh.p[0, t[0]] > mesh.p[0, t[1]]
    t = t.copy()
    t[:, swap] = t[::-1, swap]
    return t


@cite("II")
def product_mesh(mesh1, mesh2, kind: str | None = None):
    """Mesh of ``Omega_1 x Omega_2`` whose vertex ``i*n2 + j`` is ``(x_i, y_j)``.

    ``x_i`` are the vertices of ``mesh1`` (``n1`` of them), ``y_j`` those of
    ``mesh2``.  A function sampled on the product grid, ``f[i, j]``, is therefore
    the nodal vector ``f.ravel()`` (C order) of the product mesh, so a plan on
    the product quadrature becomes a right-hand side of the Poisson problem on
    ``D = Omega_1 x Omega_2`` (Part II, eq. (3.10), dim D = d1 + d2 <= 3).

    Supported factors and ``kind``:
      * 1D x 1D: ``kind="tri"`` (default, each rectangle cut along a diagonal)
        or ``"quad"``;
      * 1D x 2D and 2D x 1D (2D factor MeshTri, or MeshQuad which is first cut
        into triangles): tetrahedra, each prism split into three tets with the
        diagonal of every side face chosen by global vertex numbers so that
        neighbouring prisms match (conforming mesh).

    Parameters
    ----------
    mesh1, mesh2 : skfem.Mesh
        The factor meshes.
    kind : str or None, optional
        ``"tri"`` (the default for None) or ``"quad"`` for 1D x 1D; None or ``"tet"`` for a
        product of dimension 3.

    Returns
    -------
    skfem.Mesh
        The product mesh of dimension ``d1 + d2``.

    Raises
    ------
    ValueError
        If a factor is not a scikit-fem mesh, ``d1 + d2 > 3``, the 2D factor is neither
        ``MeshTri`` nor ``MeshQuad``, or ``kind`` does not fit the dimension.

    Examples
    --------
    >>> import numpy as np, skfem
    >>> from femot.fem import product_mesh
    >>> line = skfem.MeshLine(np.linspace(0.0, 1.0, 5))
    >>> square = product_mesh(line, line)
    >>> square.p.shape, square.t.shape[1]
    ((2, 25), 32)
    """
    for name, m in (("mesh1", mesh1), ("mesh2", mesh2)):
        if not isinstance(m, skfem.Mesh):
            raise ValueError(f"{name} must be a scikit-fem Mesh, got {type(m).__name__}")
    d1, d2 = mesh1.dim(), mesh2.dim()
    if d1 + d2 > 3:
        raise ValueError(f"product dimension d1 + d2 = {d1 + d2} exceeds 3")
    n2 = mesh2.nvertices
    p1, p2 = mesh1.p, mesh2.p
    # product vertices in C order: (i, j) -> i*n2 + j
    P = np.vstack([
        np.repeat(p1, n2, axis=1),
        np.tile(p2, (1, mesh1.nvertices)),
    ])

    def idx(i, j):
        return i * n2 + j

    if d1 == 1 and d2 == 1:
        kind = "tri" if kind is None else kind
        t1, t2 = _sorted_cells_1d(mesh1), _sorted_cells_1d(mesh2)
        a0, a1 = (np.repeat(t1[k], t2.shape[1]) for k in (0, 1))
        b0, b1 = (np.tile(t2[k], t1.shape[1]) for k in (0, 1))
        v00, v10, v11, v01 = idx(a0, b0), idx(a1, b0), idx(a1, b1), idx(a0, b1)
        if kind == "quad":
            return skfem.MeshQuad(P, np.vstack([v00, v10, v11, v01]))
        if kind == "tri":
            t = np.hstack([np.vstack([v00, v10, v11]), np.vstack([v00, v11, v01])])
            return skfem.MeshTri(P, t)
        raise ValueError(f"kind must be 'tri' or 'quad' for a 1D x 1D product, got {kind!r}")

    if kind not in (None, "tet"):
        raise ValueError(f"kind must be 'tet' for a product of dimension 3, got {kind!r}")
    if d1 == 1:
        line, surf, line_first = mesh1, mesh2, True
    else:
        line, surf, line_first = mesh2, mesh1, False
    if isinstance(surf, skfem.MeshQuad1):
        surf = surf.to_meshtri()
    if not isinstance(surf, skfem.MeshTri1):
        raise ValueError("the 2D factor must be a MeshTri or MeshQuad")
    tl = _sorted_cells_1d(line)
    tri = np.sort(np.asarray(surf.t), axis=0)  # global order a < b < c
    a, b, c = (np.repeat(tri[k], tl.shape[1]) for k in range(3))
    l0, l1 = (np.tile(tl[k], tri.shape[1]) for k in (0, 1))

    def v(s, lev):
        return idx(lev, s) if line_first else idx(s, lev)

    # each side face u < v of a prism is cut along u(level 0) - v(level 1)
    tets = np.hstack([
        np.vstack([v(a, l0), v(b, l0), v(c, l0), v(c, l1)]),
        np.vstack([v(a, l0), v(b, l0), v(b, l1), v(c, l1)]),
        np.vstack([v(a, l0), v(a, l1), v(b, l1), v(c, l1)]),
    ])
    # positive orientation
    e = P[:, tets[1:]] - P[:, tets[0]][:, None, :]
    det = np.einsum("ik,ik->k", e[:, 0], np.cross(e[:, 1], e[:, 2], axis=0))
    neg = det < 0
    tets[[1, 2]] = np.where(neg, tets[[2, 1]], tets[[1, 2]])
    return skfem.MeshTet(P, tets)
