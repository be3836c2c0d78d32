"""Structure of the biactive set (Part III Def. 3.9 (4), Thm 3.12)."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from femot._docstrings import cite

__all__ = ["outer_structure", "pattern_components"]


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
    """
    from scipy.sparse.csgraph import connected_components

    indptr = np.asarray(indptr, dtype=np.int64)
    n1 = indptr.size - 1
    P = sp.csr_matrix((np.ones(np.asarray(indices).size), np.asarray(indices), indptr), shape=(n1, int(n2)))
    graph = sp.bmat([[None, P], [P.T, None]], format="csr") if n1 + n2 > 0 else P
    ncomp, label = connected_components(graph, directed=False)
    return int(ncomp), label
