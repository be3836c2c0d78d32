"""Sparse linear algebra with the semismooth Newton matrix (docs/core.md).

For an active pattern P (0/1, n1 x n2) and weights w1, w2 the symmetric matrix

    K = [ diag(w1 * (P w2)) + s*diag(w1)      diag(w1) P diag(w2)           ]
        [ diag(w2) P^T diag(w1)               diag(w2 * (P^T w1)) + s*diag(w2) ]

is the Hessian of ``-gamma * Phi`` (Part III Def. 3.9 (3) with weights) plus a
shift ``s`` (gamma*eps, possibly plus a Levenberg-Marquardt term).  It is never
formed densely: small systems are factorized sparsely (SuperLU), large ones are
solved by conjugate gradients with a Jacobi preconditioner and a matrix-free
product over the pattern.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from femot.core import kernels

__all__ = ["NewtonMatrix", "DIRECT_MAX_SIZE"]

#: Largest order n1 + n2 that ``method="auto"`` factorizes (sparse LU) when the pattern is sparse.
#: Active sets of transport plans are geometric graphs whose LU fill grows fast: at n1 = n2 = 7921
#: (order 15842, 3-6 entries per row) one factorization took 0.7 s against 0.03-0.1 s for CG.
DIRECT_MAX_SIZE = 8000


class NewtonMatrix:
    """The matrix K above for a pattern given by CSR structure (indptr, indices).

    Parameters
    ----------
    indptr : array_like of int, shape (n1 + 1,)
        CSR row pointer of the pattern P.
    indices : array_like of int
        CSR column indices of P.
    n2 : int
        Number of columns.
    w1 : numpy.ndarray, shape (n1,)
        Row weights.
    w2 : numpy.ndarray, shape (n2,)
        Column weights.
    shift : float
        The diagonal shift ``s`` (``gamma * eps``, possibly plus a regularization term).
    """

    def __init__(self, indptr, indices, n2, w1, w2, shift):
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int32)
        self.n1 = self.indptr.size - 1
        self.n2 = int(n2)
        self.w1, self.w2 = w1, w2
        self.shift = float(shift)
        self.tptr, self.tind = kernels.transpose_pattern(self.indptr, self.indices, self.n2)
        self.deg1 = kernels.csr_matvec(self.indptr, self.indices, w2)  # P w2
        self.deg2 = kernels.csr_matvec(self.tptr, self.tind, w1)  # P^T w1
        self.diag = np.concatenate([w1 * (self.deg1 + shift), w2 * (self.deg2 + shift)])
        self.nnz = int(self.indices.size)

    @property
    def size(self) -> int:
        """Order ``n1 + n2`` of the matrix."""
        return self.n1 + self.n2

    def sparse(self) -> sp.csc_matrix:
        """K as a scipy sparse matrix (nnz = 2|P| + n1 + n2).

        Assembled directly from the pattern and its transpose (K is symmetric, so its CSR
        arrays are its CSC arrays); scipy's products and ``bmat`` took as long as the LU.

        Examples
        --------
        >>> import numpy as np
        >>> K = NewtonMatrix([0, 1, 2], [0, 1], 2, np.ones(2), np.ones(2), 0.5)
        >>> K.sparse().toarray()
        array([[1.5, 0. , 1. , 0. ],
               [0. , 1.5, 0. , 1. ],
               [1. , 0. , 1.5, 0. ],
               [0. , 1. , 0. , 1.5]])
        """
        n1, n2, nnz = self.n1, self.n2, self.nnz
        rows = np.repeat(np.arange(n1), np.diff(self.indptr))
        cols = np.repeat(np.arange(n2), np.diff(self.tptr))
        # row i: its diagonal, then its pattern entries; row n1 + j: its transposed entries, then its diagonal
        ptr = np.concatenate([self.indptr + np.arange(n1 + 1), nnz + n1 + self.tptr[1:] + np.arange(1, n2 + 1)])
        ind = np.empty(2 * nnz + n1 + n2, dtype=np.int64)
        val = np.empty(ind.size)
        first = ptr[:n1]
        ind[first], val[first] = np.arange(n1), self.diag[:n1]
        pos = np.arange(nnz) + rows + 1
        ind[pos], val[pos] = n1 + self.indices, self.w1[rows] * self.w2[self.indices]
        pos = n1 + nnz + np.arange(nnz) + cols
        ind[pos], val[pos] = self.tind, self.w2[cols] * self.w1[self.tind]
        last = ptr[n1 + 1:] - 1
        ind[last], val[last] = n1 + np.arange(n2), self.diag[n1:]
        return sp.csc_matrix((val, ind, ptr), shape=(n1 + n2, n1 + n2))

    def solve(self, rhs, method: str = "auto", rtol: float = 1e-10, maxiter: int | None = None):
        """Solve ``K x = rhs`` with the Newton matrix.

        Parameters
        ----------
        rhs : numpy.ndarray, shape (n1 + n2,)
            Right-hand side, row part first.
        method : {"auto", "direct", "cg"}, optional
            ``"direct"``: sparse LU (falls back to CG on a numerically singular pivot);
            ``"cg"``: Jacobi-preconditioned CG on the Schur complement of the row block;
            ``"auto"`` (default): direct for small systems, and for very sparse ones up to order
            :data:`DIRECT_MAX_SIZE`; else CG.
        rtol : float, optional
            Relative residual tolerance of CG (default 1e-10).
        maxiter : int or None, optional
            CG iteration limit; None (default) means ``min(3000, 10 (n1 + n2))``.

        Returns
        -------
        x : numpy.ndarray, shape (n1 + n2,)
            The solution.
        info : int
            Linear iterations (0 for the direct solve).

        Raises
        ------
        ValueError
            If ``method`` is not one of the three names.
        """
        if method == "auto":
            # Sparse LU fills in badly on banded active sets and, at large orders, on sparse
            # geometric ones too; CG wins there.
            sparse = self.nnz <= 4 * self.size and self.size <= DIRECT_MAX_SIZE
            method = "direct" if self.size <= 300 or sparse else "cg"
        if method == "direct":
            try:
                # K is SPD (shift > 0): symmetric ordering, diagonal pivots (3-6 times faster
                # than partial pivoting on transport patterns, same fill)
                lu = spla.splu(self.sparse(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                               options={"SymmetricMode": True})
            except RuntimeError:  # numerically singular pivot: CG still copes (K is PSD)
                return self._schur_pcg(rhs, rtol, maxiter or min(3000, 10 * self.size))
            return lu.solve(rhs), 0
        if method != "cg":
            raise ValueError(f"linear_solver must be 'auto', 'direct' or 'cg', got {method!r}")
        return self._schur_pcg(rhs, rtol, maxiter or min(3000, 10 * self.size))

    def _schur_pcg(self, rhs, rtol, maxiter):
        """CG on the Schur complement S = C - B^T A^{-1} B of the diagonal block A.

        K = [[A, B], [B^T, C]] with A, C diagonal and B = diag(w1) P diag(w2):
        eliminating the first block leaves an n2 x n2 SPD system whose matrix is
        applied matrix-free (two sparse products), Jacobi-preconditioned.
        """
        n1 = self.n1
        A = self.diag[:n1]
        C = self.diag[n1:]
        w1, w2 = self.w1, self.w2

        def B(x2):
            return w1 * kernels.csr_matvec(self.indptr, self.indices, w2 * x2)

        def Bt(x1):
            return w2 * kernels.csr_matvec(self.tptr, self.tind, w1 * x1)

        def S(x2):
            return C * x2 - Bt(B(x2) / A)

        b1, b2 = rhs[:n1], rhs[n1:]
        b = b2 - Bt(b1 / A)
        # diag(S)_j = C_j - w2_j^2 sum_i P_ij w1_i^2 / A_i
        sdiag = C - w2 * w2 * kernels.csr_matvec(self.tptr, self.tind, w1 * w1 / A)
        sdiag = np.maximum(sdiag, 1e-3 * C)
        x2, it = _pcg(S, b, 1.0 / sdiag, rtol, maxiter)
        x1 = (b1 - B(x2)) / A
        return np.concatenate([x1, x2]), it



def _pcg(op, b, dinv, rtol, maxiter):
    """Preconditioned conjugate gradients for an SPD operator ``op`` (diagonal preconditioner).

    The inner products use ``kernels.dot`` (fixed summation order), so the
    iterates do not depend on the BLAS thread count.
    """
    dot = kernels.dot
    x = np.zeros_like(b)
    bnorm = np.sqrt(dot(b, b))
    if bnorm == 0:
        return x, 0
    r = b.copy()
    z = dinv * r
    p = z.copy()
    rz = dot(r, z)
    it = 0
    for it in range(1, maxiter + 1):
        Kp = op(p)
        a = rz / dot(p, Kp)
        x += a * p
        r -= a * Kp
        if np.sqrt(dot(r, r)) <= rtol * bnorm:
            break
        z = dinv * r
        rz_new = dot(r, z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, it
