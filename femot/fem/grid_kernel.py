"""The smoothing kernel of T^delta as an FFT convolution when nodes and atoms lie on one uniform grid.

On a lattice ``x = o + h * i`` (``i`` integer, ``h`` per axis) the kernel matrix
``K_ik = phi_delta(x_i - z_k) / s_k`` of :meth:`femot.fem.Smoother.kernel` is a convolution
with the stencil ``phi_delta(h * j)``, ``|h * j| < delta``: its products cost two real FFTs
of the grid instead of one pass over ``(number of atoms) * (nodes per ball)`` stored entries
(1e8 entries, 1.2 GB and 0.08 s per product at 66,049 nodes and delta = 32 h).  Same numbers
as the sparse matrix up to rounding (docs/smoothing.md, "Grid meshes").
"""
from __future__ import annotations

import numpy as np
import scipy.fft as sfft

__all__ = ["GridKernel", "common_lattice"]

#: Largest ratio of lattice points (bounding box of nodes and atoms) to nodes for the FFT path.
MAX_FILL = 4.0


def common_lattice(points, sources, *, tol: float = 1e-7):
    """``(origin, h, ipoints, isources, shape)`` when both point sets lie on one uniform grid, else None.

    The spacing per axis is the smallest gap between distinct coordinates of ``points``;
    every coordinate of both sets must be an integer multiple of it from the origin (up to
    ``tol`` spacings), and the grid's bounding box may hold at most ``MAX_FILL`` times as
    many lattice points as there are nodes.

    Parameters
    ----------
    points : array_like, shape (n, d)
        Quadrature nodes.
    sources : array_like, shape (k, d)
        Atom positions.
    tol : float, optional
        Admissible distance to the lattice, in spacings.

    Examples
    --------
    >>> import numpy as np, skfem
    >>> from femot.fem import common_lattice
    >>> X = skfem.MeshTri.init_sqsymmetric().refined(2).p.T  # 9 x 9 nodes, spacing 1/8
    >>> origin, h, ix, iz, shape = common_lattice(X, X[:3])
    >>> h.tolist(), shape
    ([0.125, 0.125], (9, 9))
    >>> common_lattice(X + 0.01 * np.sin(7 * X), X[:3]) is None  # not a grid
    True
    """
    X = np.asarray(points, dtype=float)
    Z = np.asarray(sources, dtype=float)
    if X.ndim != 2 or Z.ndim != 2 or X.shape[1] != Z.shape[1] or X.shape[0] < 2 or Z.shape[0] == 0:
        return None
    both = np.vstack([X, Z])
    origin = both.min(axis=0)
    h = np.empty(X.shape[1])
    for d in range(X.shape[1]):
        u = np.unique(X[:, d])
        gaps = np.diff(u)
        gaps = gaps[gaps > 1e-12 * max(1.0, float(np.abs(u).max()))]
        if gaps.size == 0:
            return None
        h[d] = gaps.min()
    r = (both - origin) / h
    idx = np.rint(r)
    if not np.all(np.abs(r - idx) <= tol):
        return None
    idx = idx.astype(np.int64)
    shape = tuple(int(m) + 1 for m in idx.max(axis=0))
    if np.prod(np.asarray(shape, dtype=float)) > MAX_FILL * X.shape[0]:
        return None
    n = X.shape[0]
    return origin, h, idx[:n], idx[n:], shape


class GridKernel:
    """``K = Phi diag(1 / s)`` of :meth:`femot.fem.Smoother.kernel` applied by FFT convolution.

    ``Phi_ik = phi_delta(x_i - z_k)`` with nodes and atoms on the lattice of
    :func:`common_lattice`; ``s_k = sum_i w_i Phi_ik`` makes every column of unit w-mass, as
    in the sparse kernel.  Supports ``K @ a``, ``K.T @ g`` and ``K.shape``, which is all
    :class:`femot.fem.SmoothingOperator` uses.

    Parameters
    ----------
    lattice : tuple
        The output of :func:`common_lattice` for (nodes, atoms).
    phi : callable
        ``phi(r2) -> values`` of the mollifier at squared distances (zero outside the ball).
    radius : float
        The support radius delta of ``phi``.
    weights : numpy.ndarray, shape (n,)
        Quadrature weights of the nodes.

    Raises
    ------
    ValueError
        If some atom has no node strictly within ``radius``.

    Examples
    --------
    >>> import numpy as np, skfem
    >>> from femot.fem import Smoother, quadrature
    >>> q = quadrature(skfem.MeshTri.init_sqsymmetric().refined(5))
    >>> S = Smoother(q, 0.2)
    >>> z = q.nodes[q.admissible(0.2)]
    >>> fft, matrix = S.operator(z, kernel="fft"), S.operator(z, kernel="sparse")
    >>> type(fft.K).__name__, fft.K.pairs == matrix.K.nnz
    ('GridKernel', True)
    >>> a = np.linspace(1.0, 2.0, z.shape[0])
    >>> bool(np.allclose(fft.apply(a), matrix.apply(a), rtol=1e-12))
    True
    """

    def __init__(self, lattice, phi, radius: float, weights):
        _, h, self._ip, self._iz, self._grid = lattice
        dim = h.size
        reach = np.floor(radius / h).astype(int)
        # the FFT length per axis: no wrap-around can reach a grid point from another one
        self._fft_shape = tuple(sfft.next_fast_len(int(g + r + 1), real=True) for g, r in zip(self._grid, reach))
        offsets = np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij")
        r2 = sum((o * hd) ** 2 for o, hd in zip(offsets, h))
        values = phi(r2)
        stencil = np.zeros(self._fft_shape)
        stencil[tuple(o % L for o, L in zip(offsets, self._fft_shape))] = values
        self._stencil_hat = sfft.rfftn(stencil)
        self._flat_p = np.ravel_multi_index(tuple(self._ip.T), self._grid)
        self._flat_z = np.ravel_multi_index(tuple(self._iz.T), self._grid)
        self.shape = (self._ip.shape[0], self._iz.shape[0])
        self.dim = dim
        #: entries the sparse kernel stores (atoms times nonzero stencil values) when every ball lies in the grid
        self.pairs = int(self.shape[1] * np.count_nonzero(values))
        s = self._convolve_at(np.asarray(weights, dtype=float), self._flat_p, self._flat_z)
        if not np.all(s > 0):
            raise ValueError("no node lies strictly within delta of some atom")
        self.column_mass = s

    def _convolve_at(self, values, flat_from, flat_to) -> np.ndarray:
        size = int(np.prod(self._grid))
        grid = np.bincount(flat_from, weights=values, minlength=size).reshape(self._grid)
        out = sfft.irfftn(sfft.rfftn(grid, s=self._fft_shape) * self._stencil_hat, s=self._fft_shape)
        return out[tuple(slice(0, g) for g in self._grid)].ravel()[flat_to]

    def matvec(self, a) -> np.ndarray:
        """``K a`` at the nodes, shape (n,), for atom masses ``a``, shape (k,)."""
        return self._convolve_at(np.asarray(a, dtype=float) / self.column_mass, self._flat_z, self._flat_p)

    def rmatvec(self, g) -> np.ndarray:
        """``K^T g`` at the atoms, shape (k,), for node values ``g``, shape (n,)."""
        return self._convolve_at(np.asarray(g, dtype=float), self._flat_p, self._flat_z) / self.column_mass

    def __matmul__(self, a):
        return self.matvec(a)

    @property
    def T(self):
        """The transpose, as an object with ``@``."""
        return _Transposed(self)


class _Transposed:
    def __init__(self, K):
        self._K = K
        self.shape = K.shape[::-1]

    def __matmul__(self, g):
        return self._K.rmatvec(g)
