"""Cost objects consumed by the transport core.

The solver never touches the cost matrix directly: it asks a cost object for
the few fused passes it needs (sums over the active set, the active set as a
sparse pattern, line-search candidates).  ``DenseCost`` implements them over a
stored matrix; a blockwise or on-the-fly cost only has to provide the same
methods, and callers keep passing it where they pass an array today.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from femot.core import kernels
from femot.core._docs import pass_doc
from femot.core.geometric import PointTree

__all__ = ["Cost", "DenseCost", "GeometricCost", "as_cost", "certify_working_set"]


@runtime_checkable
class Cost(Protocol):
    """What :func:`femot.solve_qrot` and :class:`femot.QROTResult` need from a cost.

    ``z_ij = alpha_i + beta_j - c_ij`` below; every pass must treat all n1*n2
    pairs (a pair left out must provably fail the pass's test), so that the
    solver's results are those of the full matrix.  :class:`DenseCost` (a stored
    matrix) and :class:`GeometricCost` (``|x - y|^p`` from coordinates, k-d tree
    searches) implement it; a user's cost object only has to provide the same
    members to be accepted wherever a matrix is.

    Attributes
    ----------
    shape : tuple of int
        ``(n1, n2)``.
    max_abs : float
        ``max_ij |c_ij|`` (or an upper bound close to it: it sets the rounding floor).

    Examples
    --------
    >>> import numpy as np
    >>> from femot.core import DenseCost, GeometricCost
    >>> isinstance(DenseCost(np.zeros((2, 3))), Cost), isinstance(GeometricCost([0.0], [1.0]), Cost)
    (True, True)
    """

    shape: tuple
    max_abs: float

    @pass_doc
    def evaluate(self, alpha, beta, w1, w2, dalpha=None, dbeta=None, t=0.0):
        """``(rowsum, colsum, count, dsum)`` of ``z_+`` at ``(alpha + t dalpha, beta + t dbeta)``.

        The four results are ``sum_j w2_j z_ij^+``, ``sum_i w1_i z_ij^+``, ``#{j : z_ij > 0}`` per
        row and ``sum_ij w1_i w2_j z_ij^+ (dalpha_i + dbeta_j)``, with
        ``z_ij = alpha_i + beta_j - c_ij`` at the shifted potentials.

        Parameters
        ----------
        %(potentials)s
        %(weights)s
        dalpha, dbeta : numpy.ndarray or None, optional
            Search direction of the potentials; None (default) means zero.
        t : float, optional
            Step along the direction (default 0).

        Returns
        -------
        rowsum : numpy.ndarray, shape (n1,)
        colsum : numpy.ndarray, shape (n2,)
        count : numpy.ndarray, shape (n1,)
            Number of positive entries per row.
        dsum : float
            Directional term (0 without a direction).
        """

    @pass_doc
    def active(self, alpha, beta, count=None, threshold: float = 0.0):
        """CSR ``(indptr, indices, z)`` of the pairs with ``z_ij > threshold`` (columns sorted per row).

        Parameters
        ----------
        %(potentials)s
        count : numpy.ndarray or None, optional
            Per-row counts from :meth:`count_above` at the same threshold, if known (saves a pass).
        threshold : float, optional
            The pairs with ``z_ij > threshold`` are selected (default 0: the active set).

        Returns
        -------
        indptr, indices : numpy.ndarray
            CSR structure of the selected pairs.
        z : numpy.ndarray
            ``alpha_i + beta_j - c_ij`` on them.
        """

    @pass_doc
    def count_above(self, alpha, beta, threshold: float = 0.0):
        """Per-row counts of the pairs with ``z_ij > threshold``.

        Parameters
        ----------
        %(potentials)s
        threshold : float, optional
            The pairs with ``z_ij > threshold`` are selected (default 0: the active set).

        Returns
        -------
        numpy.ndarray, shape (n1,)
            The counts.
        """

    @pass_doc
    def candidates(self, alpha, beta, threshold: float, max_count=None):
        """CSR ``(indptr, indices, c values)`` of the pairs with ``z_ij > threshold``; None above ``max_count``.

        Parameters
        ----------
        %(potentials)s
        threshold : float
            The pairs with ``z_ij > threshold`` are selected.
        %(max_count)s

        Returns
        -------
        tuple or None
            ``(indptr, indices, c)``: CSR structure and the cost values of the selected pairs,
            or None if there are more than ``max_count`` of them.
        """

    @pass_doc
    def line_candidates(self, alpha, beta, dalpha, dbeta, tmax, w1, w2, max_count=None):
        """``(z, dz, w1_i w2_j)`` of the pairs positive somewhere on ``t in [0, tmax]``; None above ``max_count``.

        Parameters
        ----------
        %(potentials)s
        %(direction)s
        tmax : float
            Largest step of the line search.
        %(weights)s
        %(max_count)s

        Returns
        -------
        tuple or None
            Flat arrays ``(z, dz, w)`` over the pairs with ``z_ij + t dz_ij > 0`` for some
            ``t`` in ``[0, tmax]`` (``dz_ij = dalpha_i + dbeta_j``, ``w = w1_i w2_j``), or None
            if there are more than ``max_count``.
        """

    def entries(self, rows, cols):
        """``c`` at the index pairs ``(rows[k], cols[k])``.

        Parameters
        ----------
        rows : array_like of int
            Row indices.
        cols : array_like of int
            Column indices, same length as ``rows``.

        Returns
        -------
        numpy.ndarray
            ``c[rows[k], cols[k]]`` for every ``k``.
        """

    @pass_doc
    def weighted_sums(self, w1, w2):
        """``(c @ w2, w1 @ c)``: the weighted row and column sums of the cost.

        Parameters
        ----------
        %(weights)s

        Returns
        -------
        numpy.ndarray, numpy.ndarray
            Shapes ``(n1,)`` and ``(n2,)``.
        """


class _StreamedCost:
    """The passes the solver needs, over a cost operand read by ``kernels._cval``.

    Subclasses set ``shape``, ``max_abs``, ``_op`` (a matrix, or coordinates
    ``(X1, X2, p)``) and ``_nchunk``.
    """

    shape: tuple
    max_abs: float
    _op: Any
    _nchunk: int

    # -- passes used by the solver -------------------------------------------
    def evaluate(self, alpha, beta, w1, w2, dalpha=None, dbeta=None, t=0.0):
        """(rowsum, colsum, count, dsum) of z_+ at alpha + t dalpha, beta + t dbeta."""
        if dalpha is None:
            dalpha = np.zeros_like(alpha)
            dbeta = np.zeros_like(beta)
        return kernels.evaluate(self._op, alpha, beta, dalpha, dbeta, float(t), w1, w2, self._nchunk)

    def active(self, alpha, beta, count=None, threshold: float = 0.0):
        """CSR arrays (indptr, indices, z) of the entries with z > threshold."""
        if count is None or threshold != 0.0:
            count = kernels.count_above(self._op, alpha, beta, float(threshold))
        ip, ind, z, bad = kernels.active_csr(self._op, alpha, beta, count, float(threshold))
        if bad:  # counts came from a differently rounded point: recount
            count = kernels.count_above(self._op, alpha, beta, float(threshold))
            ip, ind, z, bad = kernels.active_csr(self._op, alpha, beta, count, float(threshold))
        return ip, ind, z

    def line_candidates(self, alpha, beta, dalpha, dbeta, tmax, w1, w2, max_count=None):
        """(z, dz, weight) of the entries positive somewhere on t in [0, tmax];
        None when there are more than ``max_count`` (nothing is allocated then)."""
        count = kernels.count_line_candidates(self._op, alpha, beta, dalpha, dbeta, float(tmax))
        if max_count is not None and count.sum() > max_count:
            return None
        return kernels.line_candidates(self._op, alpha, beta, dalpha, dbeta, float(tmax), w1, w2, count)

    def count_above(self, alpha, beta, threshold: float = 0.0):
        """Per-row counts of the entries with ``z_ij > threshold``."""
        return kernels.count_above(self._op, alpha, beta, float(threshold))

    def candidates(self, alpha, beta, threshold: float, max_count=None):
        """CSR (indptr, indices, cvals) of the entries with z > threshold; None when
        there are more than ``max_count`` of them (nothing is allocated then)."""
        count = kernels.count_above(self._op, alpha, beta, float(threshold))
        if max_count is not None and count.sum() > max_count:
            return None
        return kernels.candidates(self._op, alpha, beta, float(threshold), count)

    def weighted_sums(self, w1, w2):
        """``(c @ w2, w1 @ c)`` (one streaming pass)."""
        return kernels.weighted_sums(self._op, w1, w2, self._nchunk)

    def is_monge(self) -> bool:
        """c_ij + c_{i+1,j+1} <= c_{i,j+1} + c_{i+1,j} on all adjacent 2x2 minors (up to rounding)."""
        return bool(kernels.is_monge(self._op, 1e-12 * max(self.max_abs, 1.0)))

    @property
    def kernel_operand(self):
        """What the numba passes read the cost from (see ``kernels._cval``)."""
        return self._op


class DenseCost(_StreamedCost):
    """A cost stored as a dense, C-contiguous ``(n1, n2)`` float array.

    Parameters
    ----------
    c : array_like, shape (n1, n2)
        The cost matrix (finite, nonempty).
    name : str, optional
        Name of the argument in error messages (default ``"c"``).

    Raises
    ------
    ValueError
        If ``c`` is complex or not numeric, not a nonempty 2D array, or holds NaN/inf.

    Examples
    --------
    >>> C = DenseCost([[0.0, 1.0], [4.0, 0.5]])
    >>> C.shape, float(C.max_abs)
    ((2, 2), 4.0)
    """

    def __init__(self, c, name: str = "c"):
        if np.iscomplexobj(c):  # the cast would drop the imaginary part with only a warning
            raise ValueError(f"{name} must be real, got complex values")
        try:
            m = np.ascontiguousarray(c, dtype=float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be a numeric matrix: {exc}") from None
        if m.ndim != 2 or m.size == 0:
            raise ValueError(f"{name} must be a nonempty 2D array, got shape {m.shape}")
        finite, max_abs = kernels.finite_absmax(m)  # one pass, no n1*n2 temporaries
        if not finite:
            raise ValueError(f"{name} contains NaN or infinite entries")
        self.matrix = m
        self._op = m
        self.shape = m.shape
        self.max_abs = float(max_abs)
        self._nchunk = kernels.num_chunks(self.shape[0])

    def entries(self, rows, cols):
        """See :meth:`Cost.entries`."""
        return self.matrix[rows, cols]

    def weighted_sums(self, w1, w2):
        """See :meth:`Cost.weighted_sums`."""
        return self.matrix @ w2, w1 @ self.matrix

    def dense(self) -> np.ndarray:
        """The stored cost matrix (no copy)."""
        return self.matrix


def _coords(x, name):
    try:
        X = np.array(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array of points: {exc}") from None
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} must be a nonempty (n,) or (n, d) array of points, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return np.ascontiguousarray(X)


class GeometricCost(_StreamedCost):
    """The cost ``c_ij = |x_i - y_j|^p`` (Euclidean norm) computed on the fly.

    Implements the same passes as :class:`DenseCost` (the solver's cost
    protocol), but every pass evaluates ``c_ij`` from the coordinates inside
    its fused loop: the memory is O(n1 + n2) plus the solver's working sets,
    never n1*n2.  ``solve_qrot``, ``QROTResult.jvp``/``vjp``/``biactive`` accept
    it wherever they accept a matrix, and the plan equals the one for the
    matrix ``c = cdist(x1, x2)**p`` (computed in the same floating-point order).

    Parameters
    ----------
    x1 : array_like, shape (n1,) or (n1, d)
        The points of the first marginal.
    x2 : array_like, shape (n2,) or (n2, d)
        The points of the second marginal (same d).
    p : float, optional
        Exponent, ``p >= 1`` (default 2, the squared distance, is the fast path).
    search : {'tree', 'full'}, optional
        How the threshold passes find the pairs: a k-d tree search over ``x2`` (default)
        or a streaming pass over all n1*n2 pairs.

    Raises
    ------
    ValueError
        If ``search`` is unknown, the points are malformed or of different dimensions,
        or ``p`` is not a finite number >= 1.

    Notes
    -----
    For ``d = 1`` and both point sets sorted the cost is Monge (p >= 1), so the
    solver's north-west-corner cold start applies.  ``max_abs`` is the largest
    distance to the p, found among pairs of convex-hull vertices.

    Examples
    --------
    >>> import numpy as np
    >>> from femot import solve_qrot
    >>> x = np.linspace(0.0, 1.0, 5)
    >>> G = GeometricCost(x, x + 0.5)  # c_ij = |x_i - (x_j + 0.5)|^2, never stored
    >>> res = solve_qrot(G, np.full(5, 0.2), np.full(5, 0.2), 1e-3)
    >>> G.shape, res.success, f"{res.transport_cost():.4f}"
    ((5, 5), True, '0.2500')
    """

    def __init__(self, x1, x2, p: float = 2.0, search: str = "tree"):
        if search not in ("tree", "full"):
            raise ValueError(f"search must be 'tree' or 'full', got {search!r}")
        X1 = _coords(x1, "x1")
        X2 = _coords(x2, "x2")
        if X1.shape[1] != X2.shape[1]:
            raise ValueError(f"x1 and x2 must have the same dimension, got {X1.shape[1]} and {X2.shape[1]}")
        try:
            p = float(p)
        except (TypeError, ValueError):
            raise ValueError(f"p must be a number >= 1, got {p!r}") from None
        if not (p >= 1.0 and np.isfinite(p)):
            raise ValueError(f"p must be a finite number >= 1, got {p!r}")
        self.x1, self.x2, self.p = X1, X2, p
        self._op = (X1, X2, p)
        self.shape = (X1.shape[0], X2.shape[0])
        self.dim = X1.shape[1]
        self._nchunk = kernels.num_chunks(self.shape[0])
        self.max_abs = self._max_abs()
        self.search = search
        self._tree = None
        #: Largest candidate set a pass may allocate (entries); beyond it the pass
        #: returns None and the solver takes its streaming fallback.
        self.max_candidates = int(max(2_000_000, 200 * (self.shape[0] + self.shape[1])))

    @property
    def screening(self) -> bool:
        """Whether the solver should keep a screening band (only without the tree search)."""
        return self.search == "full"

    def _too_many(self, count_rows, max_count):
        """Estimate from 256 evenly spaced rows whether a candidate set exceeds max_count."""
        n1 = self.shape[0]
        if n1 < 4096:
            return False
        rows = np.unique(np.linspace(0, n1 - 1, 256).astype(np.int64))
        return count_rows(rows).sum() * (n1 / rows.size) > 2.0 * max_count

    # -- the threshold passes: k-d tree search (femot.core.geometric) or full streaming --
    @property
    def tree(self):
        """The k-d tree over ``x2`` used by the passes (built on first use, O(n2 log^2 n2))."""
        if self._tree is None:
            self._tree = PointTree(self.x1, self.x2, self.p, self.max_abs)
        return self._tree

    def evaluate(self, alpha, beta, w1, w2, dalpha=None, dbeta=None, t=0.0):
        """See :meth:`Cost.evaluate` (pairs found by the k-d tree search unless ``search="full"``)."""
        if self.search == "full":
            return super().evaluate(alpha, beta, w1, w2, dalpha, dbeta, t)
        if dalpha is None:
            dalpha = np.zeros_like(alpha)
            dbeta = np.zeros_like(beta)
        return self.tree.evaluate(alpha, beta, dalpha, dbeta, float(t), w1, w2)

    def count_above(self, alpha, beta, threshold: float = 0.0):
        """See :meth:`Cost.count_above` (by the k-d tree search unless ``search="full"``)."""
        if self.search == "full":
            return super().count_above(alpha, beta, threshold)
        return self.tree.count_above(alpha, beta, float(threshold))

    def active(self, alpha, beta, count=None, threshold: float = 0.0):
        """See :meth:`Cost.active` (by the k-d tree search unless ``search="full"``)."""
        if self.search == "full":
            return super().active(alpha, beta, count, threshold)
        if threshold != 0.0:
            count = None
        ip, ind, z, _ = self.tree.above(alpha, beta, float(threshold), count)
        return ip, ind, z

    def candidates(self, alpha, beta, threshold: float, max_count=None):
        """See :meth:`Cost.candidates` (by the k-d tree search unless ``search="full"``)."""
        if self.search == "full":
            return super().candidates(alpha, beta, threshold, max_count)
        max_count = min(self.max_candidates, np.inf if max_count is None else max_count)
        if self._too_many(lambda rows: self.tree.count_above(alpha, beta, float(threshold), rows), max_count):
            return None
        count = self.tree.count_above(alpha, beta, float(threshold))
        if max_count is not None and count.sum() > max_count:
            return None
        ip, ind, _, cv = self.tree.above(alpha, beta, float(threshold), count)
        return ip, ind, cv

    def line_candidates(self, alpha, beta, dalpha, dbeta, tmax, w1, w2, max_count=None):
        """See :meth:`Cost.line_candidates` (by the k-d tree search unless ``search="full"``)."""
        if self.search == "full":
            return super().line_candidates(alpha, beta, dalpha, dbeta, tmax, w1, w2, max_count)
        max_count = min(self.max_candidates * 4, np.inf if max_count is None else max_count)
        if self._too_many(lambda rows: self.tree.count_line(alpha, beta, dalpha, dbeta, float(tmax), rows),
                          max_count):
            return None
        count = self.tree.count_line(alpha, beta, dalpha, dbeta, float(tmax))
        if max_count is not None and count.sum() > max_count:
            return None
        return self.tree.line(alpha, beta, dalpha, dbeta, float(tmax), w1, w2, count)

    def _max_abs(self) -> float:
        """max_ij |x_i - y_j|^p: the farthest pair is a pair of convex-hull vertices."""
        h1, h2 = _hull_vertices(self.x1), _hull_vertices(self.x2)
        if h1 is None or h2 is None:
            return float(kernels.cost_absmax(self._op))
        return float(kernels.cost_absmax((np.ascontiguousarray(self.x1[h1]),
                                          np.ascontiguousarray(self.x2[h2]), self.p)))

    def entries(self, rows, cols):
        """See :meth:`Cost.entries`."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        cols = np.asarray(cols, dtype=np.int64).ravel()
        return kernels.cost_entries(self._op, rows, cols)

    def is_monge(self) -> bool:
        # |x - y|^p = h(x - y), h convex: Monge on sorted 1D points
        """True if the cost is known to be Monge: 1D points sorted increasingly on both sides."""
        return self.dim == 1 and bool(np.all(np.diff(self.x1[:, 0]) >= 0) and np.all(np.diff(self.x2[:, 0]) >= 0))

    def dense(self) -> np.ndarray:
        """The full matrix (n1*n2 floats; for small problems and tests)."""
        n1, n2 = self.shape
        rows = np.repeat(np.arange(n1, dtype=np.int64), n2)
        cols = np.tile(np.arange(n2, dtype=np.int64), n1)
        return self.entries(rows, cols).reshape(n1, n2)


def _hull_vertices(X):
    """Indices of a superset of the extreme points of X (None: use all points)."""
    n, d = X.shape
    if d == 1:
        return np.unique([int(np.argmin(X[:, 0])), int(np.argmax(X[:, 0]))])
    if n <= 64:
        return None
    if d > 6:
        return None
    try:
        from scipy.spatial import ConvexHull

        return ConvexHull(X).vertices
    except Exception:  # degenerate (flat) point sets: stream over all pairs
        return None


def as_cost(c, shape=None):
    """Wrap an array (or pass through a cost object) after validating it.

    Parameters
    ----------
    c : array_like or Cost
        A dense cost matrix (wrapped in a :class:`DenseCost`), a :class:`DenseCost` or
        :class:`GeometricCost`, or any object implementing the :class:`Cost` protocol.
    shape : tuple of int or None, optional
        Required shape ``(n1, n2)``; None (default) accepts any.

    Returns
    -------
    Cost
        The cost object.

    Raises
    ------
    ValueError
        If a matrix is not finite/2D (see :class:`DenseCost`) or the shape differs from ``shape``.

    Examples
    --------
    >>> type(as_cost([[0.0, 1.0], [1.0, 0.0]])).__name__
    'DenseCost'
    """
    if isinstance(c, (DenseCost, GeometricCost)):
        cost = c
    elif isinstance(c, Cost):
        cost = c  # a user-provided cost object with the same protocol
    else:
        cost = DenseCost(c)
    if shape is not None and tuple(cost.shape) != tuple(shape):
        raise ValueError(f"c has shape {tuple(cost.shape)}, expected {tuple(shape)}")
    return cost


def certify_working_set(cost, alpha, beta, indptr, indices, threshold: float = 0.0, full: bool = False):
    """Rows where some pair outside the working set has ``z_ij > threshold``.

    ``z_ij = alpha_i + beta_j - c_ij``; the working set is given in CSR form
    (``indptr``, ``indices``).  The pairs above the threshold are counted per
    row over *all* n1*n2 pairs; the working set's own pairs above it are a
    subset, so equal counts prove that no pair outside the set is above the
    threshold (with ``threshold = 0``: no active pair was left out, so the
    potentials solve the dual equations of the full problem, not only of the
    problem restricted to the set).  Returns the indices of the rows that fail
    (empty: certified).

    The count is ``cost.count_above``: for a :class:`~femot.core.cost.GeometricCost`
    a k-d tree search whose node bound ``alpha_i + max_node beta - dist(x_i, box)^p``
    proves, node by node, that the skipped pairs are not above the threshold
    (``femot.core.geometric``), so the certificate costs about as much as the
    pairs it counts.  ``full=True`` counts with one streaming pass over every
    pair instead (an independent check; n1*n2 cost evaluations).

    Parameters
    ----------
    cost : Cost
        The full cost (a :class:`~femot.core.cost.Cost`).
    alpha : numpy.ndarray, shape (n1,)
        Dual potential of the first marginal.
    beta : numpy.ndarray, shape (n2,)
        Dual potential of the second marginal.
    indptr, indices : numpy.ndarray
        CSR structure of the working set.
    threshold : float, optional
        Pairs with ``z_ij > threshold`` count (default 0).
    full : bool, optional
        Count over all pairs with a streaming pass instead of ``cost.count_above`` (default False).

    Returns
    -------
    numpy.ndarray
        Indices of the rows with a pair above the threshold outside the working set.

    Examples
    --------
    >>> import numpy as np
    >>> from femot import GeometricCost, solve_qrot
    >>> x = np.linspace(0.0, 1.0, 30)
    >>> cost = GeometricCost(x, x)
    >>> res = solve_qrot(cost, np.ones(30), np.ones(30), 1e-3)
    >>> P = res.plan
    >>> certify_working_set(cost, res.alpha, res.beta, P.indptr, P.indices).size == 0
    True
    """
    n1 = len(indptr) - 1
    if full or not hasattr(cost, "count_above"):
        full_count = kernels.count_above(cost.kernel_operand, alpha, beta, float(threshold))
    else:
        full_count = cost.count_above(alpha, beta, float(threshold))
    rows = np.repeat(np.arange(n1), np.diff(indptr))
    z = alpha[rows] + beta[indices] - cost.entries(rows, indices)
    inside = np.bincount(rows[z > threshold], minlength=n1)
    return np.nonzero(full_count != inside)[0]
