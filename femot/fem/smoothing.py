"""The smoothing T^delta mu = phi_delta * mu + delta / |Omega| of Part II, eq. (2.6), on a quadrature.

The discretization (columns of the kernel normalized so that the discrete mass is exactly
|mu| + delta), the adjoint and the boundary condition of Part II (3.1) are described in
docs/smoothing.md; the resolution check (``check_resolution``) refuses radii the mesh does not resolve.
"""
from __future__ import annotations

import functools

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from femot._docstrings import cite
from femot._validation import as_vector, check_positive_scalar
from femot.fem.grid_kernel import GridKernel, common_lattice
from femot.fem.measures import DiracSum
from femot.fem.meshes import element_volumes, mesh_dim
from femot.fem.quadrature import Quadrature

__all__ = [
    "mollifier_constant",
    "mollifier",
    "Smoother",
    "SmoothingOperator",
    "smooth",
    "RESOLUTION_RATIO",
    "FFT_MIN_PAIRS",
    "mesh_size",
    "mesh_spacing",
    "check_resolution",
    "resolution_problem",
]

#: Smallest kernel (atoms times nodes per ball) that ``Smoother.operator(kernel="auto")`` applies by FFT
#: on grid meshes: below it the sparse matrix is as fast and keeps exact zeros.
FFT_MIN_PAIRS = 1_000_000

#: Default number of mesh cells per smoothing radius: T^delta is resolved when h <= delta / 4.
RESOLUTION_RATIO = 4.0


@functools.lru_cache(maxsize=None)
def mollifier_constant(dim: int) -> float:
    """Normalizing constant of the standard mollifier in R^dim.

    ``C_d = 1 / int_{B(0,1)} exp(-1/(1-|x|^2)) dx``, by a radial integral with ``quad``.

    Parameters
    ----------
    dim : int
        Dimension, 1, 2 or 3.

    Returns
    -------
    float
        ``C_d``.

    Raises
    ------
    ValueError
        If ``dim`` is not 1, 2 or 3.

    Examples
    --------
    >>> from femot.fem import mollifier_constant
    >>> round(float(mollifier_constant(1)), 6)
    2.252284
    """
    from scipy.integrate import quad
    from scipy.special import gamma as Gamma

    if dim not in (1, 2, 3):
        raise ValueError(f"dim must be 1, 2 or 3, got {dim!r}")
    sphere = 2 * np.pi ** (dim / 2) / Gamma(dim / 2)  # |S^{d-1}|
    val, err = quad(lambda r: r ** (dim - 1) * np.exp(-1.0 / (1.0 - r * r)) if r < 1 else 0.0,
                    0.0, 1.0, epsabs=0.0, epsrel=1e-13, limit=200)
    return 1.0 / (sphere * val)


def _phi_of_r2(r2: np.ndarray, dim: int, delta: float) -> np.ndarray:
    """phi_delta at points with squared norm r2 (vectorized, exact zero outside the ball)."""
    s = np.asarray(r2, dtype=float) / (delta * delta)
    out = np.zeros_like(s)
    inside = s < 1.0
    out[inside] = np.exp(-1.0 / (1.0 - s[inside]))
    return out * (mollifier_constant(dim) / delta**dim)


def mollifier(x, delta: float = 1.0, dim: int | None = None) -> np.ndarray:
    """Standard mollifier phi_delta(x) with unit mass and support in B(0, delta).

    ``x`` has shape (n, d) (or (n,) in 1D); ``dim`` defaults to x.shape[1].

    Parameters
    ----------
    x : array_like, shape (n, d) or (n,)
        Points.
    delta : float, optional
        Radius of the support, > 0 (default 1).
    dim : int or None, optional
        Dimension; None (default) takes ``x.shape[1]``.

    Returns
    -------
    numpy.ndarray, shape (n,)
        ``phi_delta(x) = C_d delta^-d exp(-1/(1 - |x|^2/delta^2))`` inside the ball, 0 outside.

    Raises
    ------
    ValueError
        If ``delta <= 0`` or ``x`` does not have shape ``(n, dim)``.

    Examples
    --------
    >>> from femot.fem import mollifier
    >>> [round(float(v), 4) for v in mollifier([0.0, 0.5, 1.0], delta=1.0, dim=1)]  # zero from |x| = delta on
    [0.8286, 0.5937, 0.0]
    """
    delta = check_positive_scalar(delta, "delta")
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    d = x.shape[1] if dim is None else int(dim)
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"x must have shape (n, {d}), got {x.shape}")
    return _phi_of_r2(np.einsum("nd,nd->n", x, x), d, delta)


class SmoothingOperator:
    """The linear map a -> T^delta(sum_k a_k delta_{z_k}) on measures of mass ``mass``.

    ``apply(a) = K a + shift * (sum_k a_k) * 1`` with ``shift = delta / (mass |Omega|_h)``.
    For sum_k a_k = mass (e.g. probability vectors, mass = 1, the upper-level variable of
    Part II) this is exactly the discrete T^delta; writing the constant shift as
    proportional to the mass makes the map linear, so it has an adjoint.

    * ``adjoint(f)``: (T^delta)* f with <T^delta mu, f>_w = sum_k a_k (T^delta)* f (z_k),
      i.e. ``K^T (w f) + shift * (w . f) * 1``; the sparse part is ``adjoint_matrix``.
    * ``transpose(g)``: the Euclidean transpose (chain rule for gradients w.r.t. the
      density vector, as returned by the core's ``vjp``): ``K^T g + shift * sum(g)``.

    Parameters
    ----------
    K : scipy.sparse matrix or femot.fem.grid_kernel.GridKernel, shape (n, k)
        The kernel matrix of :meth:`Smoother.kernel`, or the same map as an FFT convolution
        (nodes and atoms on one uniform grid, :meth:`Smoother.operator`).
    weights : numpy.ndarray, shape (n,)
        Quadrature weights ``w`` of the nodes.
    shift : float
        Constant added per unit mass, ``delta / (mass |Omega|_h)``.
    source_points : numpy.ndarray, shape (k, d)
        Positions of the atoms.
    source_index : numpy.ndarray or None, optional
        Node indices of the atoms when they are quadrature nodes.

    Examples
    --------
    >>> import numpy as np, skfem
    >>> from femot.fem import Smoother, quadrature
    >>> q = quadrature(skfem.MeshLine(np.linspace(0.0, 1.0, 41)))
    >>> op = Smoother(q, 0.1).operator([[0.3], [0.6]])
    >>> op.shape
    (41, 2)
    >>> round(float(q.weights @ op.apply([0.5, 0.5])), 12)  # mass 1 + delta
    1.1
    """

    def __init__(self, K, weights, shift, source_points, source_index=None):
        self.K = K.tocsr() if sp.issparse(K) else K  # no copy when K is already CSR (Smoother.kernel)
        self.weights = weights
        self.shift = float(shift)
        self.source_points = source_points
        self.source_index = source_index

    @property
    def shape(self):
        """Shape ``(n, k)`` of the map: quadrature nodes by atoms."""
        return self.K.shape

    def apply(self, a) -> np.ndarray:
        """Density ``K a + shift * sum(a)`` at the nodes, shape (n,), of the atom masses ``a``, shape (k,)."""
        a = as_vector(a, "a", length=self.K.shape[1])
        return self.K @ a + self.shift * a.sum()

    def adjoint(self, f) -> np.ndarray:
        """The adjoint ``K^T (w f) + shift * (w^T f)``, shape (k,), in the pairing ``<., .>_w``."""
        f = as_vector(f, "f", length=self.K.shape[0])
        wf = self.weights * f
        return self.K.T @ wf + self.shift * wf.sum()

    def transpose(self, g) -> np.ndarray:
        """The Euclidean transpose ``K^T g + shift * sum(g)``, shape (k,) (chain rule for gradients)."""
        g = as_vector(g, "g", length=self.K.shape[0])
        return self.K.T @ g + self.shift * g.sum()

    def adjoint_matrix(self) -> sp.csr_matrix:
        """Sparse part K^T W of the adjoint (the shift adds the rank-one shift * 1 w^T).

        Raises
        ------
        TypeError
            If the kernel is an FFT convolution (``Smoother.operator(..., kernel="fft")``), which
            stores no matrix.
        """
        if not sp.issparse(self.K):
            raise TypeError("adjoint_matrix: this operator applies its kernel by FFT and stores no matrix; "
                            "build it with Smoother.operator(..., kernel='sparse')")
        return (self.K.T @ sp.diags(self.weights)).tocsr()

    def as_linear_operator(self):
        """The map as a scipy ``LinearOperator`` (matvec :meth:`apply`, rmatvec :meth:`transpose`)."""
        from scipy.sparse.linalg import LinearOperator

        return LinearOperator(self.K.shape, matvec=self.apply, rmatvec=self.transpose, dtype=float)


@cite("II")
class Smoother:
    """T^delta (Part II, eq. (2.6)) discretized on the quadrature ``q``.

    ``Smoother(q, delta)(mu)`` returns the density of T^delta mu at ``q.nodes`` w.r.t.
    ``q.weights``; its discrete mass is |mu| + delta. With ``check_support`` (default)
    a measure whose support comes closer than delta to the boundary is rejected.

    Parameters
    ----------
    q : Quadrature
        Nodal quadrature of the domain.
    delta : float
        Smoothing radius, > 0.
    check_support : bool, optional
        Reject measures whose support comes closer than ``delta`` to the boundary (default True).

    Raises
    ------
    ValueError
        If ``q`` is not a :class:`~femot.fem.quadrature.Quadrature` or ``delta <= 0``.

    Examples
    --------
    >>> import numpy as np, skfem
    >>> from femot.fem import DiracSum, Smoother, quadrature
    >>> q = quadrature(skfem.MeshLine(np.linspace(0.0, 1.0, 41)))
    >>> m = Smoother(q, 0.1)(DiracSum([0.5]))  # density of T^delta mu w.r.t. q.weights
    >>> round(float(q.weights @ m), 12)  # |mu| + delta
    1.1
    """

    def __init__(self, q, delta: float, *, check_support: bool = True):
        if not isinstance(q, Quadrature):
            raise ValueError("q must be a femot.fem.Quadrature")
        self.q = q
        self.delta = check_positive_scalar(delta, "delta")
        self.dim = q.dim
        self.check_support = bool(check_support)
        self._tree = cKDTree(q.nodes)

    # -- kernel ------------------------------------------------------------------
    def kernel(self, sources) -> sp.csr_matrix:
        """Sparse (n, k) matrix K_ik = phi_delta(x_i - z_k) / s_k (columns of unit w-mass).

        Parameters
        ----------
        sources : array_like, shape (k, dim)
            Atom positions ``z_k``.

        Returns
        -------
        scipy.sparse.csr_matrix, shape (n, k)
            Every column has ``w``-mass 1.

        Raises
        ------
        ValueError
            If no quadrature node lies strictly within ``delta`` of some source.
        """
        z = np.asarray(sources, dtype=float).reshape(-1, self.dim)
        n, k = self.q.n, z.shape[0]
        if k == 0:
            return sp.csr_matrix((n, 0))
        K = self._unscaled_kernel(z)
        s = self.q.weights @ K  # (k,)
        bad = np.flatnonzero(~(s > 0))
        if bad.size:
            z0 = z[bad[0]]
            dmin = self._tree.query(z0)[0]
            raise ValueError(
                f"delta = {self.delta:.4g} is too small for this quadrature: no node lies strictly within "
                f"delta of the point {z0} (nearest node at distance {dmin:.4g}); increase delta or refine")
        K.data *= (1.0 / s)[K.indices]
        return K

    def _unscaled_kernel(self, z, chunk_pairs: int = 4_000_000) -> sp.csr_matrix:
        """CSR (n, k) of phi_delta(x_i - z_k), built over blocks of nodes.

        Blocks keep the peak memory near the final matrix (about 12 bytes per entry) where one
        query of all pairs needed about 70 (e.g. 1e8 entries at 66k nodes and delta = 32 h).
        """
        n, k = self.q.n, z.shape[0]
        ztree = cKDTree(z)
        # entries per node estimated on ~200 sampled nodes: blocks of about chunk_pairs entries
        sample = self.q.nodes[:: max(1, n // 200)]
        per_node = max(1.0, ztree.count_neighbors(cKDTree(sample), self.delta) / len(sample))
        step = int(max(1, min(n, chunk_pairs // per_node)))
        indptr = np.zeros(n + 1, dtype=np.int64)
        cols, vals = [], []
        for start in range(0, n, step):
            stop = min(n, start + step)
            pairs = cKDTree(self.q.nodes[start:stop]).sparse_distance_matrix(ztree, self.delta, output_type="ndarray")
            row, col, dist = pairs["i"], pairs["j"], pairs["v"]
            order = np.lexsort((col, row))
            val = _phi_of_r2(dist[order] ** 2, self.dim, self.delta)
            keep = val != 0.0  # phi vanishes on the sphere |x - z| = delta
            row, col = row[order][keep], col[order][keep]
            vals.append(val[keep])
            cols.append(col.astype(np.int32 if k < 2**31 else np.int64))
            indptr[start + 1:stop + 1] = np.cumsum(np.bincount(row, minlength=stop - start))
            indptr[start + 1:stop + 1] += indptr[start]
        data = np.concatenate(vals) if vals else np.zeros(0)
        indices = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int32)
        return sp.csr_matrix((data, indices, indptr), shape=(n, k))

    # -- support -----------------------------------------------------------------
    def check(self, mu) -> float:
        """dist(supp mu, boundary); ValueError if it is smaller than delta (Part II (3.1)).

        Parameters
        ----------
        mu : Measure
            The measure to be smoothed.

        Returns
        -------
        float
            The distance of its support to the boundary.

        Raises
        ------
        ValueError
            If the support leaves the domain or comes closer than ``delta`` to the boundary.
        """
        dist = mu.support_distance_to_boundary(self.q.mesh)
        if dist < 0:
            raise ValueError(f"mu: the support leaves the domain of q (a support point lies {-dist:.4g} "
                             f"outside)")
        if dist < self.delta * (1 - 1e-12):
            raise ValueError(
                f"mu: the support comes within {dist:.4g} of the boundary, closer than delta = "
                f"{self.delta:.4g}; T^delta needs dist(supp mu, boundary) >= rho >= delta (Part II, "
                f"Assumption 2.3 and (3.1)). Use a smaller delta or the enlarged domain of Part II "
                f"Lemma 2.4 (q.enlarged(rho), or enlarge=True in the lower level).")
        return dist

    # -- application -------------------------------------------------------------
    def convolve(self, mu) -> np.ndarray:
        """Discrete phi_delta * mu at the nodes; its w-mass is exactly |mu| (each part corrected).

        Parameters
        ----------
        mu : Measure
            A measure of the quadrature's dimension.

        Returns
        -------
        numpy.ndarray, shape (n,)
            Density at ``q.nodes`` with respect to ``q.weights``.

        Raises
        ------
        ValueError
            If the dimension differs, the support check fails, or a part of ``mu`` has no
            mass on the nodes.
        """
        if mu.dim != self.dim:
            raise ValueError(f"mu: dimension {mu.dim} does not match the quadrature's {self.dim}")
        if self.check_support:
            self.check(mu)
        out = np.zeros(self.q.n)
        for part in mu.parts():
            z, a = part.sources(self.q)
            target = part.mass()
            if target == 0 or a.size == 0:
                continue
            c = self.kernel(z) @ a
            got = self.q.weights @ c
            if not got > 0:
                raise ValueError(f"mu: a part of mass {target:.4g} has no mass on the quadrature nodes "
                                 f"(its density vanishes at every node); refine the mesh")
            out += c * (target / got)
        return out

    def __call__(self, mu) -> np.ndarray:
        """Density of T^delta mu = phi_delta * mu + delta / |Omega| at q.nodes."""
        return self.convolve(mu) + self.delta / self.q.measure

    def operator(self, sources=None, mass: float = 1.0, kernel: str = "auto") -> SmoothingOperator:
        """T^delta on discrete measures with atoms at ``sources`` (default: the nodes of q at
        distance >= delta from the boundary), as a :class:`SmoothingOperator`.

        Parameters
        ----------
        sources : array_like of shape (k, dim) or None, optional
            Atom positions; None (default) takes the admissible nodes of ``q``.
        mass : float, optional
            Mass of the measures the operator acts on, > 0 (default 1).
        kernel : {"auto", "sparse", "fft"}, optional
            How the kernel is stored: "sparse" the matrix of :meth:`kernel`; "fft" the same map
            as an FFT convolution (:class:`femot.fem.grid_kernel.GridKernel`; nodes and atoms
            must lie on one uniform grid); "auto" (default) "fft" when they do and the matrix
            would hold at least :data:`FFT_MIN_PAIRS` entries.

        Returns
        -------
        SmoothingOperator

        Raises
        ------
        ValueError
            If ``mass <= 0``, no node is admissible, (with ``check_support``) a source lies
            closer than ``delta`` to the boundary, ``kernel`` is unknown, or ``kernel="fft"``
            and the points are not on one uniform grid.
        """
        mass = check_positive_scalar(mass, "mass")
        if kernel not in ("auto", "sparse", "fft"):
            raise ValueError(f"kernel must be 'auto', 'sparse' or 'fft', got {kernel!r}")
        index = None
        if sources is None:
            index = self.q.admissible(self.delta)
            if index.size == 0:
                raise ValueError(f"delta = {self.delta:.4g}: no node of q has distance >= delta from the boundary")
            z = self.q.nodes[index]
        else:
            z = np.asarray(sources, dtype=float).reshape(-1, self.dim)
            if self.check_support and z.size:
                self.check(DiracSum(z))
        K = self._grid_kernel(z, kernel) if kernel != "sparse" else None
        return SmoothingOperator(self.kernel(z) if K is None else K, self.q.weights,
                                 self.delta / (mass * self.q.measure), z, index)

    def _grid_kernel(self, z, kernel):
        """The FFT form of :meth:`kernel` (or None: "auto" and not worth it or not a grid)."""
        lattice = common_lattice(self.q.nodes, z)  # None also without atoms
        if lattice is None:
            if kernel == "fft":
                raise ValueError("kernel='fft' needs the quadrature nodes and the atoms on one uniform grid "
                                 "(a structured mesh); use kernel='sparse' or 'auto'")
            return None
        try:
            K = GridKernel(lattice, functools.partial(_phi_of_r2, dim=self.dim, delta=self.delta), self.delta,
                           self.q.weights)
        except ValueError:  # an atom without nodes in its ball: the sparse kernel says which
            return None
        return K if kernel == "fft" or K.pairs >= FFT_MIN_PAIRS else None


@cite("II")
def smooth(mu, q, delta: float, *, check_support: bool = True) -> np.ndarray:
    """Density of T^delta mu (Part II, eq. (2.6)) at ``q.nodes`` w.r.t. ``q.weights``.

    Its discrete mass is exactly ``mu.mass() + delta``; see :class:`Smoother`.

    Parameters
    ----------
    mu : Measure
        The measure to smooth.
    q : Quadrature
        The nodal quadrature of the domain.
    delta : float
        Smoothing radius, > 0.
    check_support : bool, optional
        Reject supports closer than ``delta`` to the boundary (default True).

    Returns
    -------
    numpy.ndarray, shape (q.n,)

    Raises
    ------
    ValueError
        As :class:`Smoother` and :meth:`Smoother.convolve`.

    Examples
    --------
    >>> import numpy as np, skfem
    >>> from femot.fem import DiracSum, quadrature, smooth
    >>> q = quadrature(skfem.MeshLine(np.linspace(0.0, 1.0, 41)))
    >>> round(float(q.weights @ smooth(DiracSum([0.5]), q, 0.1)), 12)
    1.1
    """
    return Smoother(q, delta, check_support=check_support)(mu)


def mesh_size(mesh) -> float:
    """Mesh size h = the largest cell diameter (longest edge of a simplex) of a scikit-fem
    mesh, a :class:`~femot.fem.Quadrature` with a ``mesh`` attribute, or an (n,) / (n, 1)
    array of sorted nodes on a line (largest gap).

    Parameters
    ----------
    mesh : skfem.Mesh, Quadrature or array_like
        The mesh, a quadrature with a ``mesh``, or the nodes of a line.

    Returns
    -------
    float
        ``h``.

    Raises
    ------
    ValueError
        If ``mesh`` is none of these (or fewer than two nodes).
    """
    m = getattr(mesh, "mesh", mesh)
    if hasattr(m, "p") and hasattr(m, "t"):
        p, t = np.asarray(m.p, dtype=float), np.asarray(m.t)
        h = 0.0
        for i in range(t.shape[0]):
            for j in range(i + 1, t.shape[0]):
                h = max(h, float(np.max(np.linalg.norm(p[:, t[i]] - p[:, t[j]], axis=0))))
        return h
    x = np.asarray(mesh, dtype=float)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1 or x.size < 2:
        raise ValueError("mesh must be a scikit-fem mesh, a Quadrature or the nodes of a line")
    return float(np.max(np.diff(np.sort(x))))


def mesh_spacing(mesh) -> float:
    """Node spacing of a mesh: ``max_T (d! |T|)^(1/d)`` over its cells T (d the dimension).

    The leg of the right isosceles simplex with the volume of the largest cell: on a
    structured grid of spacing a (squares or cubes cut into simplices, e.g.
    ``MeshTri.init_tensor`` or ``MeshTri().refined(k)``) it is a, where :func:`mesh_size`
    gives the diagonal ``a sqrt(d)``.  It measures how many quadrature nodes a ball of
    radius delta holds (about ``|B_delta| / h^d``), which is what resolves the discrete
    mollifier; in 1D it is the longest cell, as :func:`mesh_size`.

    Parameters
    ----------
    mesh : skfem.Mesh or Quadrature
        A simplicial scikit-fem mesh, or a quadrature with a ``mesh`` attribute.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``mesh`` is not a simplicial scikit-fem mesh (or a quadrature of one).
    """
    from math import factorial

    m = getattr(mesh, "mesh", mesh)
    if not (hasattr(m, "p") and hasattr(m, "t")):
        raise ValueError("mesh must be a scikit-fem mesh or a Quadrature with a mesh")
    d = mesh_dim(m)
    return float((factorial(d) * float(np.max(element_volumes(m)))) ** (1.0 / d))



def resolution_problem(h: float, delta: float, ratio: float = RESOLUTION_RATIO, *, what: str = "delta"):
    """The message of :func:`check_resolution` (same arguments) when h > delta / ratio, else None."""
    h = check_positive_scalar(h, "h")
    delta = check_positive_scalar(delta, "delta")
    ratio = check_positive_scalar(ratio, "ratio")
    if h > delta / ratio * (1 + 1e-12):
        return (f"{what}: delta = {delta:.4g} is not resolved by the mesh: h = {h:.4g} > delta / {ratio:g} "
                f"= {delta / ratio:.4g} (delta / h = {delta / h:.3g} cells per radius, {ratio:g} needed); "
                f"refine the mesh or use a larger delta")
    return None


def check_resolution(h: float, delta: float, ratio: float = RESOLUTION_RATIO, *, what: str = "delta") -> float:
    """Refuse a smoothing radius the mesh does not resolve: ValueError unless h <= delta / ratio.

    The discrete T^delta samples phi_delta at the nodes (see :class:`Smoother`); with fewer
    than about ``ratio`` cells per radius the kernel is a handful of node values and the
    smoothing error is a mesh artefact, not the O(delta) of Part II. Used by the studies
    (every level of a schedule) and by the demos that apply T^delta. ``what`` names the
    offending quantity in the message (e.g. ``"level 3 (schedule.deltas)"``); h is the
    longest cell edge (:func:`mesh_size`). Returns delta / h (cells per radius).

    Parameters
    ----------
    h : float
        Mesh size (longest cell edge, :func:`mesh_size`), > 0.
    delta : float
        Smoothing radius, > 0.
    ratio : float, optional
        Required cells per radius, ``delta / h`` (default ``RESOLUTION_RATIO`` = 4).
    what : str, optional
        Name of the offending quantity at the start of the message (default ``"delta"``).

    Returns
    -------
    float
        ``delta / h``.

    Raises
    ------
    ValueError
        If ``h > delta / ratio`` (or an argument is not a positive number).
    """
    msg = resolution_problem(h, delta, ratio, what=what)
    if msg is not None:
        raise ValueError(msg)
    return float(delta) / float(h)
