"""Derivatives of the solution map of :func:`femot.solve_qrot` (Part III Section 3).

Functions of a :class:`~femot.core.QROTResult` (implicit differentiation of the dual
equations at the computed solution; the result's methods ``jvp``, ``dual_jvp``, ``vjp``
and ``biactive`` call them), and the structure of the biactive set (Part III Def. 3.9 (4),
Thm 3.12).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.optimize import linprog

from femot._docstrings import cite, fill_doc
from femot._validation import as_vector, mass_rtol
from femot.core import kernels
from femot.core.linalg import NewtonMatrix

__all__ = ["jvp", "dual_jvp", "vjp", "biactive", "outer_structure", "pattern_components"]

# the solve the examples differentiate
_example = fill_doc(solved='''
>>> import numpy as np
>>> from femot import solve_qrot
>>> x = np.array([0.0, 1.0, 2.0])
>>> res = solve_qrot((x[:, None] - x[None, :]) ** 2, [0.2, 0.5, 0.3], [0.3, 0.3, 0.4], 0.5)
''')
# dual_jvp factorizes the Newton matrix up to this many pattern entries (CG beyond)
_DUAL_LU_MAX_NNZ = 5_000_000


@cite("III")
def outer_structure(A, B):
    """Test whether ``A ⊂ B`` has an outer structure w.r.t. ``B`` (Part III Def. 3.9 (4)).

    ``A`` and ``B`` are pairs (rows, cols) of index arrays.  Outer structure means
    there are vectors v1, v2 with ``v1_i + v2_j > 0`` on A and ``< 0`` on B \\ A.
    By homogeneity this is the LP  max s  s.t.  v1_i + v2_j >= s on A,
    v1_i + v2_j <= -s on B \\ A,  s <= 1,  |v| <= 1, which is feasible with
    s > 0 exactly when the structure exists.

    Returns ``(has_structure, v1, v2)`` where v1, v2 are dicts index -> value
    (rows and columns touched by B); the witness direction realizes the
    Bouligand element of Thm 3.12 as the limit along (alpha, beta) + t (v1, v2).

    Parameters
    ----------
    A : tuple of two int arrays
        ``(rows, cols)`` of the candidate subset.
    B : tuple of two int arrays
        ``(rows, cols)`` of the set, typically the biactive set Omega_0.

    Raises
    ------
    ValueError
        If ``A`` is not a subset of ``B``.
    RuntimeError
        If the LP solver fails.

    Examples
    --------
    >>> outer_structure(([0], [0]), ([0, 1], [0, 1]))[0]  # two separate pairs: yes
    True
    >>> outer_structure(([0, 1], [0, 1]), ([0, 0, 1, 1], [0, 1, 0, 1]))[0]  # a diagonal of a full block: no
    False
    """
    ra, ca = (np.asarray(x, dtype=np.int64) for x in A)
    rb, cb = (np.asarray(x, dtype=np.int64) for x in B)
    inB = {(int(i), int(j)) for i, j in zip(rb, cb)}
    inA = {(int(i), int(j)) for i, j in zip(ra, ca)}
    if not inA <= inB:
        raise ValueError("A must be a subset of B")
    rows = sorted({i for i, _ in inB})
    cols = sorted({j for _, j in inB})
    if not inB:
        return True, {}, {}
    ri = {i: k for k, i in enumerate(rows)}
    ci = {j: len(rows) + k for k, j in enumerate(cols)}
    nv = len(rows) + len(cols)
    # variables: v (nv), s ; minimize -s
    data, ii, jj, rhs = [], [], [], []
    for k, (i, j) in enumerate(sorted(inB)):
        sgn = -1.0 if (i, j) in inA else 1.0  # A: -(v_i + v_j) + s <= 0 ; B\A: v_i + v_j + s <= 0
        ii += [k, k, k]
        jj += [ri[i], ci[j], nv]
        data += [sgn, sgn, 1.0]
        rhs.append(0.0)
    M = sp.csr_matrix((data, (ii, jj)), shape=(len(inB), nv + 1))
    cvec = np.zeros(nv + 1)
    cvec[-1] = -1.0
    bounds = [(-1.0, 1.0)] * nv + [(None, 1.0)]
    res = linprog(cvec, A_ub=M, b_ub=np.array(rhs), bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(f"outer-structure LP failed: {res.message}")
    s = -res.fun
    x = res.x
    v1 = {i: float(x[ri[i]]) for i in rows}
    v2 = {j: float(x[ci[j]]) for j in cols}
    return bool(s > 1e-9), v1, v2


def pattern_components(indptr, indices, n2):
    """Connected components of the bipartite graph of a CSR pattern (rows and columns).

    Returns ``(ncomp, label)`` with ``label`` of length ``n1 + n2`` (rows first).  For
    eps = 0 every component carries one kernel vector (1 on its rows, -1 on its columns)
    of the Newton matrix, i.e. one free shift of the dual potentials.

    Parameters
    ----------
    indptr : array_like of int, shape (n1 + 1,)
        CSR row pointer of the pattern.
    indices : array_like of int
        CSR column indices.
    n2 : int
        Number of columns.

    Examples
    --------
    >>> ncomp, label = pattern_components([0, 1, 2], [0, 1], 2)  # the diagonal of a 2 x 2 pattern
    >>> ncomp, [int(v) for v in label]
    (2, [0, 1, 0, 1])
    """
    from scipy.sparse.csgraph import connected_components

    indptr = np.asarray(indptr, dtype=np.int64)
    n1 = indptr.size - 1
    P = sp.csr_matrix((np.ones(np.asarray(indices).size), np.asarray(indices), indptr), shape=(n1, int(n2)))
    graph = sp.bmat([[None, P], [P.T, None]], format="csr") if n1 + n2 > 0 else P
    ncomp, label = connected_components(graph, directed=False)
    return int(ncomp), label


def _z_on(result, rows, cols):
    return result.alpha[rows] + result.beta[cols] - result._cost.entries(rows, cols)


@_example
def biactive(result, tol: float | None = None):
    """Index arrays (rows, cols) of the biactive set Omega_0 = {alpha_i + beta_j = c_ij}.

    Entries with ``|z_ij| <= tol`` count as biactive; the default tolerance
    is the rounding level ``64 u max(|c|, |alpha|+|beta|)``.

    Parameters
    ----------
    result : QROTResult
        A solution of :func:`femot.solve_qrot`.
    tol : float or None, optional
        Entries with ``|alpha_i + beta_j - c_ij| <= tol`` are counted; None (default) uses the
        rounding level of the solution.

    Returns
    -------
    rows, cols : numpy.ndarray
        ``int64`` index arrays of equal length, the biactive pairs.

    Examples
    --------
    %(solved)s
    >>> rows, cols = biactive(res, tol=0.1)  # pairs with |alpha_i + beta_j - c_ij| <= 0.1
    >>> [(int(i), int(j)) for i, j in zip(rows, cols)]
    [(0, 0), (1, 0), (1, 2)]
    """
    if tol is None:
        tol = result._ztol
    ip, ind, z = result._cost.active(result.alpha, result.beta, threshold=-tol)
    rows = np.repeat(np.arange(ip.size - 1), np.diff(ip))
    keep = z <= tol
    return rows[keep], ind[keep].astype(np.int64)


def _pattern(result, A):
    """CSR structure of Omega_+ united with the chosen A ⊂ Omega_0."""
    P = result.plan
    if A is None:
        return P.indptr, P.indices
    rows, cols = (np.asarray(a, dtype=np.int64) for a in A)
    if rows.shape != cols.shape:
        raise ValueError("A must be a pair (rows, cols) of equal-length index arrays")
    n1, n2 = P.shape
    if rows.size and (rows.min() < 0 or rows.max() >= n1 or cols.min() < 0 or cols.max() >= n2):
        raise ValueError("A contains indices outside the plan's shape")
    zA = _z_on(result, rows, cols)
    if np.any(np.abs(zA) > result._ztol):
        raise ValueError("A must be a subset of the biactive set Omega_0 (alpha_i + beta_j = c_ij)")
    pat = sp.csr_matrix((np.ones(P.nnz), P.indices, P.indptr), shape=P.shape)
    pat = pat + sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=P.shape)
    pat.sort_indices()
    return pat.indptr, pat.indices


def _system(result, A):
    ip, ind = _pattern(result, A)
    kappa = result.gamma * result.eps
    # eps = 0: K is singular along (1, -1) per connected component; a tiny
    # shift selects the minimum-norm solution without changing the plan.
    shift = kappa if kappa > 0 else 1e-12
    return NewtonMatrix(ip, ind, result.plan.shape[1], result.w1, result.w2, shift), ip, ind


@cite("III")
@_example
def jvp(result, h1, h2, A=None):
    """Directional derivative ``S'(mu; h)`` of the plan (Part III Thm 3.11).

    At a differentiable point (Omega_0 empty) this is the derivative; with a
    set ``A ⊂ Omega_0`` (pair of index arrays) having outer structure it is
    the Bouligand element of Thm 3.12.  With weights the linearized
    equations read ``K eta = gamma * diag(w1, w2) h`` and the result is
    ``chi ∘ (eta_1 (+) eta_2) / gamma``, returned as CSR on the pattern.
    One sparse solve with the Newton matrix.

    With eps = 0, S is defined only on marginals of equal mass, so the
    direction must keep the masses equal: ``sum w1 h1 == sum w2 h2`` (up to
    1e-9 relative to ``sum w1 |h1| + sum w2 |h2|``), else ValueError.

    Parameters
    ----------
    result : QROTResult
        A solution of :func:`femot.solve_qrot`.
    h1 : array_like, shape (n1,)
        Direction of the first marginal (nodal values, like ``mu1``).
    h2 : array_like, shape (n2,)
        Direction of the second marginal.
    A : tuple of two int arrays or None, optional
        A subset ``(rows, cols)`` of the biactive set Omega_0 joined to the active set
        (Part III Thm 3.12); None (default) uses Omega_+ alone.

    Returns
    -------
    scipy.sparse.csr_matrix, shape (n1, n2)
        The derivative of the plan density on the pattern Omega_+ (plus ``A``).

    Raises
    ------
    ValueError
        If ``h1``/``h2`` have the wrong length or hold NaN/inf, if eps = 0 and the direction
        does not keep the masses equal, or if ``A`` is malformed, out of range or not
        contained in Omega_0.

    Examples
    --------
    %(solved)s
    >>> d = jvp(res, [0.1, -0.1, 0.0], [0.0, 0.1, -0.1])  # also res.jvp(...)
    >>> print(f"{d[1, 1]:.4f} {d[0, 0]:.4f}")
    0.1000 0.1000
    """
    n1, n2 = result.plan.shape
    rtol = mass_rtol(h1, h2)
    h1 = as_vector(h1, "h1", length=n1)
    h2 = as_vector(h2, "h2", length=n2)
    if result.eps == 0.0:
        a, b = float(result.w1 @ h1), float(result.w2 @ h2)
        size = float(result.w1 @ np.abs(h1) + result.w2 @ np.abs(h2))
        if abs(a - b) > rtol * size:
            raise ValueError(
                f"h1 and h2 must change the masses equally when eps = 0: sum w1*h1 = {a:.6g} != "
                f"sum w2*h2 = {b:.6g} (S is defined only on marginals of equal mass; use eps > 0 "
                f"for unbalanced perturbations)")
    K, ip, ind = _system(result, A)
    rhs = np.concatenate([result.w1 * h1, result.w2 * h2])
    eta, _ = K.solve(rhs, result.linear_solver, rtol=1e-13)
    rows = np.repeat(np.arange(n1), np.diff(ip))
    vals = eta[rows] + eta[n1 + ind]
    return sp.csr_matrix((vals, ind, ip), shape=(n1, n2))


def _dual_solver(result, A):
    """``(solve, ncomp, label)`` for the Newton matrix on Omega_+ ∪ A, cached for A = None.

    ``solve(rhs)`` applies K^{-1} (sparse LU, factorized once, for small or sparse
    systems; Jacobi-PCG on the Schur complement otherwise); ``label`` are the connected
    components of the pattern (rows first), computed for eps = 0 only.
    """
    cache = result.__dict__.get("_dual_cache")
    if A is None and cache is not None:
        return cache
    K, ip, ind = _system(result, A)
    ncomp, label = 1, None
    if result.eps == 0.0:
        ncomp, label = pattern_components(ip, ind, result.plan.shape[1])
    # one factorization serves every product at this solution (and eps = 0 makes K
    # singular along (1, -1), where CG on the Schur complement crawls): sparse LU unless
    # the pattern is too large to factorize
    method = result.get("linear_solver", "auto")
    direct = method == "direct" or (method == "auto" and K.nnz <= _DUAL_LU_MAX_NNZ)
    lu = None
    if direct:
        try:
            # symmetric ordering and diagonal pivots: K + shift is SPD (3-6 times faster than
            # partial pivoting on transport patterns, same fill)
            lu = spla.splu(K.sparse(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                           options={"SymmetricMode": True})
        except RuntimeError:  # numerically singular pivot: CG copes (K is PSD)
            lu = None
    if lu is not None:
        solve = lu.solve
    else:
        def solve(rhs):
            return K.solve(rhs, "cg", rtol=1e-13)[0]
    out = (solve, ncomp, label)
    if A is None:
        result.__dict__["_dual_cache"] = out
    return out


@cite("III")
@_example
def dual_jvp(result, h1, h2, A=None):
    """Derivative ``(dalpha, dbeta)`` of the dual potentials along marginal directions (h1, h2).

    Differentiates the (doubly) regularized dual system of Part III
    (3.1) (weighted),

        sum_j w2_j (alpha_i + beta_j - c_ij)_+ + gamma*eps*alpha_i = gamma*mu1_i
        sum_i w1_i (alpha_i + beta_j - c_ij)_+ + gamma*eps*beta_j  = gamma*mu2_j,

    on the active pattern ``Omega_+`` (plus a chosen ``A ⊂ Omega_0`` at kinks, as
    in :func:`jvp`, Part III Thm 3.11 / 3.12): ``(dalpha, dbeta)`` solves

        K (dalpha, dbeta) = gamma * (w1 * h1, w2 * h2),

    with ``K`` the symmetric Newton matrix (the Hessian of ``-gamma*Phi``).  One sparse
    solve, the same matrix as :func:`jvp` (whose plan derivative is
    ``chi ∘ (dalpha (+) dbeta) / gamma``).  Since ``w1 * alpha`` is the gradient of the
    optimal value V(mu1, mu2) = max Phi with respect to mu1 (envelope theorem), this
    gives Hessian-vector products of V: ``d(w1 * alpha) = w1 * dalpha``.

    eps = 0: the potentials are unique only up to ``(alpha + t, beta - t)`` (per
    connected component of the active pattern), so the directions must preserve mass,
    ``<w1, h1> = <w2, h2>`` (ValueError otherwise), and the returned derivative is the
    one of the normalized potentials with equal weighted means on every connected
    component C of the pattern: ``<w1, dalpha>_C / |w1|_C = <w2, dbeta>_C / |w2|_C``.
    If the pattern is disconnected (degenerate points only) and (h1, h2) does not
    balance the mass on each component, no derivative exists along (h1, h2) (the
    support must change); the direction is then balanced on each component C by a
    constant correction ``(h1 - s_C, h2 + s_C)`` before the solve.  eps > 0: the
    solution is unique and any direction is allowed.

    Parameters
    ----------
    result : QROTResult
        A solution of :func:`femot.solve_qrot`.
    h1 : array_like, shape (n1,)
        Direction of the first marginal.
    h2 : array_like, shape (n2,)
        Direction of the second marginal.
    A : tuple of two int arrays or None, optional
        A subset ``(rows, cols)`` of the biactive set Omega_0 joined to the pattern, as in
        :func:`jvp`; None (default) uses Omega_+ alone.

    Raises
    ------
    ValueError
        If ``h1``/``h2`` have the wrong length or hold NaN/inf, if eps = 0 and
        ``<w1, h1> != <w2, h2>`` (relative 1e-10), or if ``A`` is not a subset of Omega_0.

    Returns
    -------
    dalpha : ndarray (n1,), dbeta : ndarray (n2,)

    Examples
    --------
    %(solved)s
    >>> da, db = dual_jvp(res, [0.1, -0.1, 0.0], [0.0, 0.1, -0.1])  # also res.dual_jvp(...)
    >>> print(f"{da[0]:.4f} {db[1]:.4f}")
    0.0667 0.0833
    """
    n1, n2 = result.plan.shape
    h1 = as_vector(h1, "h1", length=n1)
    h2 = as_vector(h2, "h2", length=n2)
    w1, w2 = result.w1, result.w2
    if result.eps == 0.0:
        imbalance = float(w1 @ h1 - w2 @ h2)
        size = float(np.abs(w1 * h1).sum() + np.abs(w2 * h2).sum())
        if abs(imbalance) > 1e-10 * max(size, 1e-300):
            raise ValueError(f"h1, h2 must preserve mass when eps = 0 (<w1, h1> - <w2, h2> = {imbalance:.3e}): "
                             f"the potentials are defined only on equal masses")
    rhs = result.gamma * np.concatenate([w1 * h1, w2 * h2])
    with kernels.threads_for(int(result.plan.nnz) * 8):
        solve, ncomp, label = _dual_solver(result, A)
        if result.eps == 0.0:
            sign = np.concatenate([np.ones(n1), -np.ones(n2)])
            wt = np.concatenate([w1, w2])
            # the range of K is orthogonal to every kernel vector (1 on the rows, -1 on the
            # columns of one component): remove the (rounding-level) inconsistent part
            bal = np.bincount(label, sign * rhs, minlength=ncomp)
            mass = np.bincount(label, wt, minlength=ncomp)
            rhs = rhs - (bal / mass)[label] * wt * sign
        d = solve(rhs)
    if result.eps == 0.0:
        # fix the free shift on every component: equal weighted means of both parts
        mean1 = np.bincount(label[:n1], w1 * d[:n1], minlength=ncomp)
        mean2 = np.bincount(label[n1:], w2 * d[n1:], minlength=ncomp)
        m1w = np.bincount(label[:n1], w1, minlength=ncomp)
        m2w = np.bincount(label[n1:], w2, minlength=ncomp)
        both = (m1w > 0) & (m2w > 0)
        # only components with both rows and columns have the (1, -1) freedom
        t = np.zeros(ncomp)
        t[both] = 0.5 * (mean1[both] / m1w[both] - mean2[both] / m2w[both])
        d = d - sign * t[label]
    return d[:n1].copy(), d[n1:].copy()


@cite("III")
@_example
def vjp(result, G, A=None):
    """Adjoint of the plan derivative: gradients of ``<G, pi>`` w.r.t. (mu1, mu2).

    ``<G, pi> = sum_ij G_ij pi_ij`` (entrywise).  Following Part III
    Prop. 3.14: with b = (row sums, column sums) of ``G`` masked to
    ``Omega_+ ∪ A``, ``(p1, p2) = diag(w1, w2) K^{-1} b``.  For a smooth
    upper objective J(pi, mu1), ``p1 + grad_mu1 J`` is a Clarke subgradient
    of the reduced objective.  One sparse solve.

    Parameters
    ----------
    result : QROTResult
        A solution of :func:`femot.solve_qrot`.
    G : array_like or scipy.sparse matrix, shape (n1, n2)
        The weight of the linear functional ``<G, pi>``, e.g. the gradient of an upper-level
        objective with respect to the plan; only its entries on the pattern are read.
    A : tuple of two int arrays or None, optional
        A subset ``(rows, cols)`` of the biactive set Omega_0 joined to the pattern, as in
        :func:`jvp`; None (default) uses Omega_+ alone.

    Returns
    -------
    p1 : numpy.ndarray, shape (n1,)
        Gradient of ``<G, pi>`` with respect to ``mu1``.
    p2 : numpy.ndarray, shape (n2,)
        Gradient of ``<G, pi>`` with respect to ``mu2``.

    Raises
    ------
    ValueError
        If ``G`` has the wrong shape or NaN/inf entries on the pattern, or ``A`` is invalid.

    Examples
    --------
    %(solved)s
    >>> p1, p2 = vjp(res, np.ones((3, 3)))  # <1, pi> is the mass: gradients 1/2 (shared)
    >>> print([round(float(v), 6) for v in p1])
    [0.5, 0.5, 0.5]
    """
    n1, n2 = result.plan.shape
    K, ip, ind = _system(result, A)
    rows = np.repeat(np.arange(n1), np.diff(ip))
    if sp.issparse(G):
        if G.shape != (n1, n2):
            raise ValueError(f"G has shape {G.shape}, expected {(n1, n2)}")
        # G restricted to the (row-sorted) pattern, matched through linear keys
        H = sp.csr_matrix(G).tocoo()
        keys = rows.astype(np.int64) * n2 + ind
        hk = H.row.astype(np.int64) * n2 + H.col
        pos = np.searchsorted(keys, hk)
        pos = np.minimum(pos, max(keys.size - 1, 0))
        hit = keys.size > 0
        Gv = np.zeros(keys.size)
        if hit:
            ok = keys[pos] == hk
            np.add.at(Gv, pos[ok], H.data[ok].astype(float))
    else:
        G = np.asarray(G, dtype=float)
        if G.shape != (n1, n2):
            raise ValueError(f"G has shape {G.shape}, expected {(n1, n2)}")
        Gv = G[rows, ind]
    if not np.all(np.isfinite(Gv)):
        raise ValueError("G contains NaN or infinite entries")
    b = np.concatenate([np.bincount(rows, Gv, minlength=n1), np.bincount(ind, Gv, minlength=n2)])
    u, _ = K.solve(b, result.linear_solver, rtol=1e-13)
    return result.w1 * u[:n1], result.w2 * u[n1:]
