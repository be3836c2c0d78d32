"""Transportation identification (Part III, Section 4): recover a source marginal and its plan.

The reduced problem (RTI_gamma^eps) over the simplex ``{mu1 >= 0, sum mu1 = sum mu2_d}``,

    min f(mu1) = J(S_{gamma,eps}(mu1, mu2_d), mu1),
    J(pi, mu1) = 1/2 |pi - pi_d|_D^2 + lam/2 |mu1 - mu1_d|_{D1}^2    (Part III, (4.1)),

with the lower level in the Hitchcock case (unit weights).  docs/problems.md derives the
subgradient and the Bouligand elements used here.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from femot._docstrings import cite
from femot._validation import (
    as_finite_matrix,
    as_nonnegative_vector,
    as_vector,
    check_nonnegative_scalar,
    check_positive_scalar,
)
from femot.core import DenseCost, QROTResult, kernels
from femot.core.sensitivity import outer_structure
from femot.problems.identification_paths import IdentificationResult, _solve
from femot.problems.plan_maps import MarginalToPlan
from femot.problems.protocol import UniformStart, _cite

__all__ = [
    "TransportIdentification",
    "IdentificationResult",
    "identification_errors",
    "as_plan_mask",
    "as_marginal_mask",
    "band_mask",
]


# --------------------------------------------------------------------------
# input helpers
# --------------------------------------------------------------------------
def _dense(x):
    """Dense float array from an array-like or a scipy.sparse matrix."""
    if sp.issparse(x):
        return np.asarray(x.toarray(), dtype=float)
    return x


@cite("III")
def as_plan_mask(D, shape, name: str = "D") -> np.ndarray:
    """Observation domain ``D ⊂ Omega`` as a boolean (n1, n2) array.

    ``None`` means all of Omega.  Accepts a boolean or 0/1 array (dense or sparse)
    of the plan's shape; anything else, and an empty mask, raises ValueError.

    Parameters
    ----------
    D : array_like, scipy.sparse matrix or None
        The mask.
    shape : tuple of int
        The plan's shape (n1, n2).
    name : str
        The argument's name in error messages.
    """
    def fit(a: np.ndarray) -> np.ndarray:
        if a.shape != tuple(shape):
            raise ValueError(f"{name} has shape {a.shape}, expected {tuple(shape)} (the shape of the plan)")
        return a

    return _read_mask(D, tuple(shape), name, f"array of shape {tuple(shape)}", fit)


@cite("III")
def as_marginal_mask(D1, n: int, name: str = "D1") -> np.ndarray:
    """Observation domain ``D1 ⊂ Omega_1`` as a boolean vector of length n.

    ``None`` means all of Omega_1.  Row or column vectors (dense or sparse) are
    accepted; they must hold only 0/1 (or booleans) and at least one 1.

    Parameters
    ----------
    D1 : array_like, scipy.sparse matrix or None
        The mask.
    n : int
        Its length (the length of mu1).
    name : str
        The argument's name in error messages.
    """
    def fit(a: np.ndarray) -> np.ndarray:
        if a.ndim == 2 and 1 in a.shape:
            a = a.reshape(-1)
        if a.ndim != 1 or a.size != n:
            raise ValueError(f"{name} has shape {a.shape}, expected a 0/1 mask of length {n} (the length of mu1)")
        return a

    return _read_mask(D1, (n,), name, f"vector of length {n}", fit)


def _max_abs(M) -> float:
    """``max |M_ij|`` over the stored entries of a sparse matrix (0 for none)."""
    return float(np.max(np.abs(sp.csr_matrix(M).data), initial=0.0))


def _read_mask(D, shape: tuple, name: str, expected: str, fit: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """A mask argument: None -> all of the domain (``shape``); else a float array, checked by ``fit``, of 0/1."""
    if D is None:
        return np.ones(shape, dtype=bool)
    try:
        a = np.asarray(_dense(D), dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a boolean or 0/1 {expected}: {exc}") from None
    return _zero_one(fit(a), name)


def _zero_one(a, name):
    if not np.all(np.isfinite(a)) or not np.all((a == 0) | (a == 1)):
        bad = a[~((a == 0) | (a == 1))][:1]
        raise ValueError(f"{name} must hold only 0/1 (or booleans); found the value {bad[0]!r}")
    m = a.astype(bool)
    if not m.any():
        raise ValueError(f"{name} is empty: the observation domain must contain at least one point")
    return m


@cite("III")
def band_mask(n1: int, n2: int, bandwidth: int) -> np.ndarray:
    """The band ``{(i, j): |i - j| <= bandwidth}`` (Part III §4.2, experiment 2).

    Parameters
    ----------
    n1, n2 : int
        The plan's shape.
    bandwidth : int
        Half-width of the band.

    Examples
    --------
    >>> band_mask(3, 3, 1).astype(int).tolist()
    [[1, 1, 0], [1, 1, 1], [0, 1, 1]]
    """
    i = np.arange(n1)[:, None]
    j = np.arange(n2)[None, :]
    return np.abs(i - j) <= int(bandwidth)


def _matrix(x, name, shape=None):
    """Finite (n1, n2) data, kept sparse (CSR) if given sparse."""
    if sp.issparse(x):
        m = sp.csr_matrix(x, dtype=float)
        if m.ndim != 2:
            raise ValueError(f"{name} must be a 2D array")
        if not np.all(np.isfinite(m.data)):
            raise ValueError(f"{name} contains NaN or infinite entries")
    else:
        m = as_finite_matrix(x, name)
    if shape is not None and m.shape != tuple(shape):
        raise ValueError(f"{name} has shape {m.shape}, expected {tuple(shape)} (= (len(mu1_d), len(mu2_d)))")
    return m


# --------------------------------------------------------------------------
# the problem
# --------------------------------------------------------------------------
@_cite
class TransportIdentification(UniformStart):
    """The reduced transportation identification problem (RTI_gamma^eps), Part III §4.

    Parameters
    ----------
    c_d : array_like
        The (n1, n2) cost matrix.
    mu2_d : array_like
        Known target marginal (nonnegative, positive mass s = sum mu2_d).
    pi_d : array_like or scipy.sparse matrix
        The (n1, n2) observed plan; only its entries in D are used.
    mu1_d : array_like
        Observed source marginal (length n1); only its entries in D1 are used.
        Observations may be noisy: mu1_d need only be finite, pi_d nonnegative.
    D : array_like, scipy.sparse matrix or None
        Observation mask of the plan (boolean / 0/1); None = everything.
    D1 : array_like, scipy.sparse matrix or None
        Observation mask of the marginal; None = everything.
    lam : float
        Weight lam >= 0 of the marginal term.
    gamma : float
        Quadratic regularization of the lower level.
    eps : float or None
        Dual regularization (defaults to gamma, as in Part III §4.2).  eps > 0 makes the
        lower level uniquely solvable for every mu1 on the simplex, including marginals
        with zeros.
    qrot_options : Mapping or options dataclass, optional
        Options of the lower level's :func:`femot.solve_qrot` (default ``tol=1e-10``,
        ``max_iter=200``).
    cache_size : int
        Number of lower-level solutions kept (keyed by mu1).

    Notes
    -----
    The instance is callable: ``problem(mu1) -> (f, g)``, the oracle of the trust-region
    method (the last point is cached); it satisfies
    :class:`femot.problems.SecondOrderProblem`.  Its lower level is a
    :class:`femot.problems.MarginalToPlan` (attribute ``lower``, warm starts of at most
    30 Newton steps).

    Examples
    --------
    >>> from femot.problems import identification_instance, problem_from_instance
    >>> problem = problem_from_instance(identification_instance(5, seed=0), gamma=1e-2)
    >>> f, g = problem(problem.uniform())
    >>> print(f"{f:.4f}", g.shape)
    0.6586 (5,)
    """

    #: The simplex is the standard one (unit weights).
    weights = None

    def __init__(self, c_d, mu2_d, pi_d, mu1_d, D=None, D1=None, lam: float = 1.0, gamma: float = 1e-4,
                 eps: float | None = None, *, qrot_options: dict | None = None, cache_size: int = 8):
        c = _matrix(c_d, "c_d")
        if sp.issparse(c):
            c = np.asarray(c.toarray())
        n1, n2 = c.shape
        for name, v, m, axis in (("mu1_d", mu1_d, n1, "rows"), ("mu2_d", mu2_d, n2, "columns")):
            size = int(np.prod(np.shape(v)))
            if size != m:
                raise ValueError(f"{name} has {size} entries but c_d has shape {c.shape} ({m} {axis})")
        self.mu2_d = as_nonnegative_vector(_dense(mu2_d), "mu2_d", length=n2)
        self.mass = float(self.mu2_d.sum())
        if not self.mass > 0:
            raise ValueError("mu2_d must have positive mass (sum(mu2_d) > 0)")
        self.mu1_d = as_vector(_dense(mu1_d), "mu1_d", length=n1)
        self.D = as_plan_mask(D, (n1, n2), "D")
        self.D1 = as_marginal_mask(D1, n1, "D1")
        pd = _matrix(pi_d, "pi_d", (n1, n2))
        neg = pd.data < 0 if sp.issparse(pd) else pd < 0
        if np.any(neg):
            raise ValueError(f"pi_d must be nonnegative (an observed transport plan); it has {int(np.sum(neg))} "
                             f"negative entries, the smallest {float(pd.min()):.3g}")
        # Only the observed part of pi_d enters J: keep D ∘ pi_d (sparse).
        if sp.issparse(pd):
            pd = pd.tocoo()
            keep = self.D[pd.row, pd.col] & (pd.data != 0)
            self.pi_d_obs = sp.csr_matrix((pd.data[keep], (pd.row[keep], pd.col[keep])), shape=(n1, n2))
        else:
            self.pi_d_obs = sp.csr_matrix(np.where(self.D, pd, 0.0))
        self.pi_d_obs.sort_indices()
        self.lam = check_nonnegative_scalar(lam, "lam")
        self.gamma = check_positive_scalar(gamma, "gamma")
        self.eps = self.gamma if eps is None else check_positive_scalar(eps, "eps")
        self.c_d = c
        self.shape = (n1, n2)
        self.full_D = bool(self.D.all())
        self.lower = MarginalToPlan(DenseCost(c, "c_d"), self.mu2_d, self.gamma, self.eps, qrot_options=qrot_options,
                                    warm_max_iter=30, cache_size=max(1, int(cache_size)))
        self._last: tuple | None = None

    @property
    def n(self) -> int:
        """Number of simplex variables (the length n1 of mu1)."""
        return self.shape[0]

    def full(self, x) -> np.ndarray:
        """The simplex variable is the marginal mu1 itself: a copy of ``x``.

        Parameters
        ----------
        x : array_like
            A marginal of length :attr:`n`.
        """
        return as_vector(_dense(x), "x", length=self.n).copy()

    def with_regularization(self, gamma: float, eps: float | None = None) -> "TransportIdentification":
        """The same identification problem with the lower level at (gamma, eps) (fresh cache and counters).

        Parameters
        ----------
        gamma : float
            Quadratic regularization (> 0).
        eps : float, optional
            Dual regularization (> 0); default ``gamma``.
        """
        other = copy.copy(self)
        other.gamma = check_positive_scalar(gamma, "gamma")
        other.eps = other.gamma if eps is None else check_positive_scalar(eps, "eps")
        other.lower = self.lower.with_regularization(other.gamma, other.eps)
        other._last = None
        return other

    # -- lower level ----------------------------------------------------------
    def check_point(self, mu1, name: str = "mu1", atol: float = 1e-8) -> np.ndarray:
        """mu1 as a vector on the simplex {mu1 >= 0, sum mu1 = sum mu2_d} (ValueError otherwise).

        Parameters
        ----------
        mu1 : array_like
            The candidate point.
        name : str
            The argument's name in error messages.
        atol : float
            Tolerance of the sign and mass checks.
        """
        x = as_vector(_dense(mu1), name, length=self.n)
        if np.any(x < -atol):
            i = int(np.argmin(x))
            raise ValueError(f"{name} must be nonnegative (a point of the simplex); {name}[{i}] = {x[i]:.3g}")
        if abs(x.sum() - self.mass) > atol * max(1.0, self.mass):
            raise ValueError(f"{name} must sum to sum(mu2_d) = {self.mass:.12g}; it sums to {x.sum():.12g}")
        return np.maximum(x, 0.0)

    def observed_start(self) -> np.ndarray:
        """A starting point on the simplex built from the observation mu1_d.

        mu1_d (clipped at 0) on D1; the mass it leaves, sum(mu2_d) - sum_D1 mu1_d,
        spread evenly over Omega_1 minus D1.  If that is negative or nothing lies
        outside D1, the D1 part is rescaled to the mass instead.  With D1 = Omega_1
        this is mu1_d scaled to the mass of mu2_d.  On larger instances the reduced
        objective has local minima (README, "A caveat on local minima"), and this
        start avoids many of them when mu1 is observed.
        """
        obs = np.where(self.D1, np.maximum(self.mu1_d, 0.0), 0.0)
        rest = self.mass - float(obs.sum())
        free = ~self.D1
        if rest >= 0.0 and free.any():
            return obs + np.where(free, rest / int(free.sum()), 0.0)
        if not obs.sum() > 0:
            return np.full(self.n, self.mass / self.n)
        return obs * (self.mass / float(obs.sum()))

    def lower_level(self, mu1) -> QROTResult:
        """The lower-level solution S_{gamma,eps}(mu1, mu2_d) as a :class:`QROTResult` (cached).

        :meth:`femot.problems.MarginalToPlan.solve` at ``max(mu1, 0)``; a result that
        fails is returned (check ``.success``) and counted in ``lower.failures``.

        Parameters
        ----------
        mu1 : array_like
            A marginal of length :attr:`n`.
        """
        return self.lower.solve(np.maximum(np.asarray(mu1, dtype=float).reshape(-1), 0.0))

    def solve(self, x0=None, *, options=None, callback=None, model: str = "auto", bouligand: bool = True,
              continuation=None, continuation_tol: float = 1e-3, starts=None) -> "IdentificationResult":
        """Minimize (RTI_gamma^eps) by the constrained nonsmooth trust-region method (Part III Alg. 4.1).

        Parameters
        ----------
        x0 : array_like, optional
            Starting marginal on the simplex (default: uniform, mass sum(mu2_d), as in §4.2).
        options : Mapping or options dataclass, optional
            Options of :func:`femot.optim.minimize_simplex` (defaults: Part III §4.2,
            tol = 1e-5, max_iter = 200 per phase; ``verbose`` prints the iteration tables).
        callback : callable, optional
            Passed to the optimizer.
        model : {"auto", "bfgs", "newton"}
            The trust-region model.  ``"bfgs"``: Part III, Algorithm 4.1 with the BFGS model
            of Remark 4.2 (Table 4.1).  ``"newton"``: exact (Gauss-Newton) Hessian-vector
            products of :meth:`hessp` (projected Newton-CG and bundle-Newton steps).
            ``"auto"`` (default): both, from two starts, see Notes.
        bouligand : bool
            Supply the Bouligand elements at the iterate (Thm 3.12) to the collective
            Bouligand model of Remark 4.2 below Delta_min (in addition to the optimizer's own
            exploration of the ball).
        continuation : None, False, "auto" or sequence of float
            For ``model="bfgs"``/``"newton"``: None or False (solve at the problem's
            (gamma, eps) directly, as in Part III §4.2), ``"auto"`` (first solve at
            (t gamma, t eps) for t = 10^k, ..., 10 with 10^k gamma <= 1e-2, each level
            warm-started from the previous one, :func:`femot.optim.minimize_simplex_path`)
            or a sequence of factors t > 1.  For ``model="auto"`` it is the continuation of
            the Newton path (None: ``"auto"``).  ``nit``/``nfev`` count all levels and
            phases; ``phases`` lists them.
        continuation_tol : float
            Stationarity tolerance of the intermediate levels (only a warm start for the
            next level is needed there; at most 50 iterations each, and a level is dropped at
            its first failed lower-level solve: the next starts where it did); the last level
            uses ``options``.
        starts : None or sequence of str
            ``model="auto"``: further starts after x0; None means ``("observed",)``
            (:meth:`observed_start`, skipped when it equals x0), ``()`` only x0.

        Returns
        -------
        IdentificationResult
            The result convention of :func:`femot.problems.protocol.upper_level_result` with the
            identification's extras (``J``, ``mu1``, ``alpha``, ``beta``, ``plan``,
            ``phases``, ...).

        Notes
        -----
        The reduced objective is piecewise quadratic (very many pieces at small gamma) and
        has local minima; which one a method reaches depends on its path (docs/problems.md
        has the tables).  ``model="auto"`` therefore runs, from x0 (default uniform) and then
        from the observed start,

        1. ``"bfgs"``: Algorithm 4.1;
        2. ``"bfgs + newton polish"`` (only if 1. did not converge): the Newton model from
           the point of 1., which certifies it (the method is monotone: J does not rise);
        3. ``"newton"``: the Newton model with continuation;
        4. ``"newton + bfgs polish"`` (only if 3. did not converge): the BFGS model from the
           point of 3.;
        5. ``"newton, no continuation"`` (only if 3. kept a continuation level; polished as
           in 4.): the Newton model at the problem's (gamma, eps) from the start;
        6. ``"... + newton at tol/100"``: the two lowest ends of 1.-5. polished by the Newton
           model at tol/100 (at tol, points of one basin whose J differ by ~1 % are certified);

        and returns the certified phase (``success``) of lowest J (the lowest J if none is
        certified; the result's ``tol`` is the caller's).  Every phase runs on a fresh copy of
        the problem (the path can depend on 1e-10 differences of warm-started lower-level
        solutions), so the ``"bfgs"`` and ``"newton"`` phases from x0 are exactly ``model="bfgs"`` and ``model="newton",
        continuation="auto"``, and the result's J is no higher than theirs when they are
        certified (nor than an uncertified one whose polish, which does not raise J, certifies).
        ``phases`` records every phase (name, J, nit, stationarity,
        success, time), ``phase`` names the one returned, ``nit``/``nfev``/``time_s`` are
        totals.  Every level of every phase is a run of :func:`femot.problems.solve_on_simplex`;
        the continuation levels are stepped by :func:`femot.optim.minimize_simplex_path`.
        """
        return _solve(self, x0, options, callback, model, bouligand, continuation, continuation_tol, starts)

    # -- upper level ----------------------------------------------------------
    def residual_plan(self, pi):
        """``D ∘ (pi - pi_d)`` as CSR, the gradient of J with respect to pi.

        Parameters
        ----------
        pi : array_like or scipy.sparse matrix
            A plan (n1, n2).
        """
        P = sp.csr_matrix(pi)
        if not self.full_D:
            P = P.tocoo()
            keep = self.D[P.row, P.col]
            P = sp.csr_matrix((P.data[keep], (P.row[keep], P.col[keep])), shape=self.shape)
        return (P - self.pi_d_obs).tocsr()

    def objective(self, pi, mu1) -> float:
        """The upper-level objective J(pi, mu1) of Part III eq. (4.1) for any plan pi.

        Parameters
        ----------
        pi : array_like or scipy.sparse matrix
            A plan (n1, n2).
        mu1 : array_like
            A marginal (length n1).
        """
        pi = _matrix(pi, "pi", self.shape)
        mu1 = as_vector(_dense(mu1), "mu1", length=self.n)
        G = self.residual_plan(pi)
        r1 = np.where(self.D1, mu1 - self.mu1_d, 0.0)
        return 0.5 * float(G.data @ G.data) + 0.5 * self.lam * float(r1 @ r1)

    def value(self, mu1) -> float:
        """The reduced objective f_{gamma,eps}(mu1) (Part III, (RTI_gamma^eps)).

        Parameters
        ----------
        mu1 : array_like
            A marginal (length n1).
        """
        return self.value_and_subgradient(mu1)[0]

    def value_and_subgradient(self, mu1, A=None):
        """``(f(mu1), g)`` with g a Clarke subgradient of f (Part III Prop. 3.14).

        ``g = p1 + lam * D1 ∘ (mu1 - mu1_d)`` where ``p1`` is the mu1-part of the
        adjoint of the plan derivative applied to ``D ∘ (pi - pi_d)``.  With ``A``
        (a pair of index arrays, a subset of the biactive set Omega_0 with outer
        structure) the Bouligand element of Thm 3.12 for the pattern
        ``Omega_+ ∪ A`` is used, Omega_+ = {alpha_i + beta_j > c_ij} taken strictly
        (entries of Omega_0 that the solver left slightly positive are dropped first).

        Parameters
        ----------
        mu1 : array_like
            A marginal (length n1).
        A : tuple of numpy.ndarray or None
            ``(rows, cols)`` of a subset of Omega_0 with outer structure.
        """
        x = np.asarray(mu1, dtype=float).reshape(-1)
        res = self.lower_level(x)
        G = self.residual_plan(res.plan)
        r1 = np.where(self.D1, x - self.mu1_d, 0.0)
        f = 0.5 * float(G.data @ G.data) + 0.5 * self.lam * float(r1 @ r1)
        if A is not None:
            res = self._strict(res)
        # vjp runs outside solve_qrot's serial-threads guard; small systems pay
        # heavily for numba's parallel start-up (oversubscribed cores), so guard it here.
        with kernels.threads_for(self.shape[0] * self.shape[1]):
            p1, _ = res.vjp(G, A=A)
        return f, p1 + self.lam * r1

    @staticmethod
    def _strict(res):
        """A view of ``res`` whose plan pattern is the strict Omega_+ (biactive entries removed).

        ``QROTResult.vjp`` builds its pattern as (support of the plan) ∪ A; an entry
        of Omega_0 with a rounding-level positive value would otherwise always be
        included, and the Bouligand elements that exclude it were out of reach.
        """
        rows, cols = res.biactive()
        if rows.size == 0:
            return res
        P = res.plan.tolil(copy=True)
        P[rows, cols] = 0.0
        strict = copy.copy(res)
        strict.plan = sp.csr_matrix(P)
        strict.plan.eliminate_zeros()
        strict.plan.sort_indices()
        return strict

    def __call__(self, mu1) -> tuple[float, np.ndarray]:
        """``(f, g)`` of :meth:`value_and_subgradient`; the last point is cached.

        Parameters
        ----------
        mu1 : array_like
            A marginal of length :attr:`n`.
        """
        x = np.asarray(mu1, dtype=float).reshape(-1)
        # The lower level is looked up in any case (it keeps its LRU order and warm state);
        # the adjoint is skipped when it returns the solution the cached (f, g) came from.
        res = self.lower_level(x)
        if self._last is not None and self._last[3] is res and np.array_equal(self._last[0], x):
            return self._last[1], self._last[2].copy()
        f, g = self.value_and_subgradient(x)
        self._last = (x.copy(), f, g.copy(), res)
        return f, g

    def hessp(self, mu1, v):
        """Hessian-vector product of the reduced objective f at mu1 (exact where f is smooth).

        For eps > 0 the plan S(mu1) = S_{gamma,eps}(mu1, mu2_d) is piecewise affine in
        mu1 (Part III Thm 3.11: on each piece the active pattern Omega_+ is fixed and S'
        solves one linear system with the Newton matrix).  Where S is differentiable, J is
        a quadratic of (S(mu1), mu1) with S affine nearby, so the Gauss-Newton product is
        the exact Hessian:

            H v = S'(mu1)^* [D ∘ S'(mu1) v] + lam * D1 ∘ v,

        one ``jvp`` (direction (v, 0)) and one ``vjp``, i.e. two sparse solves with the
        Newton matrix of the lower level; no matrix is formed.  At a kink it is the
        Hessian of the piece whose pattern ``value_and_subgradient`` used (the support
        of the computed plan).  The signature is that of the ``hessp`` argument of
        :func:`femot.optim.minimize_simplex`.

        Parameters
        ----------
        mu1 : array_like
            The point.
        v : array_like
            The direction.
        """
        x = np.asarray(mu1, dtype=float).reshape(-1)
        v = as_vector(_dense(v), "v", length=self.n)
        res = self.lower_level(x)
        with kernels.threads_for(self.shape[0] * self.shape[1]):
            dpi = res.jvp(v, np.zeros(self.shape[1]))
            if not self.full_D:
                dpi = dpi.tocoo()
                keep = self.D[dpi.row, dpi.col]
                dpi = sp.csr_matrix((dpi.data[keep], (dpi.row[keep], dpi.col[keep])), shape=self.shape)
            q1, _ = res.vjp(dpi)
        return q1 + self.lam * np.where(self.D1, v, 0.0)

    def bouligand_sets(self, mu1, max_sets: int = 16):
        """Subsets ``A ⊂ Omega_0`` with outer structure (Part III Def. 3.9 (4), Thm 3.12).

        Omega_0 = {alpha_i + beta_j = c_ij} (up to rounding) at the lower-level solution.
        Small biactive sets (at most 4 entries) are enumerated and tested with the
        outer-structure LP.  Larger ones use families that always have outer
        structure: all of Omega_0 (v = +1), the entries of one row i (v1_i = 2, all
        other v = -1) or one column, and the complements of those.  ``A = {}`` (always
        admissible) is not listed.

        Parameters
        ----------
        mu1 : array_like
            The point.
        max_sets : int
            At most this many sets are returned.
        """
        res = self.lower_level(mu1)
        rows, cols = res.biactive()
        m = rows.size
        if m == 0:
            return []
        sets = []
        if m <= 4:
            for mask in range(1, 2 ** m):
                idx = np.array([k for k in range(m) if mask >> k & 1])
                A = (rows[idx], cols[idx])
                if mask == 2 ** m - 1 or outer_structure(A, (rows, cols))[0]:
                    sets.append(A)
        else:
            seen = set()
            cand = [np.ones(m, dtype=bool)]
            for i in np.unique(rows):
                cand += [rows == i, rows != i]
            for j in np.unique(cols):
                cand += [cols == j, cols != j]
            for sel in cand:
                key = sel.tobytes()
                if sel.any() and key not in seen:
                    seen.add(key)
                    sets.append((rows[sel], cols[sel]))
        return sets[:max_sets]

    def bouligand_subgradients(self, mu1, radius=None, max_elements: int = 16):
        """Subgradients of f from several Bouligand elements at mu1 (Thm 3.12, Remark 4.2).

        One adjoint solve per set of :meth:`bouligand_sets` and for ``A = {}`` (the
        strict Omega_+); an empty list at a differentiable point (Omega_0 empty), where the subgradient is unique.
        ``radius`` is accepted for the ``collect_subgradients`` hook of
        ``minimize_simplex`` and not used: these are the elements at the point.

        Parameters
        ----------
        mu1 : array_like
            The point.
        radius : float or None
            Ignored (the hook's signature).
        max_elements : int
            At most this many Bouligand sets are used.
        """
        x = np.asarray(mu1, dtype=float).reshape(-1)
        sets = self.bouligand_sets(x, max_elements)
        if not sets:
            return []
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        return [self.value_and_subgradient(x, A=A)[1] for A in [empty] + sets]

    def errors(self, mu1, pi, mu1_ref=None, pi_ref=None) -> dict:
        """Max-norm errors of (mu1, pi) against the observations (on D1, D) or given references.

        Parameters
        ----------
        mu1 : array_like
            A marginal.
        pi : array_like or scipy.sparse matrix
            A plan.
        mu1_ref, pi_ref : array_like or None
            References on all of Omega_1 and Omega (default: the observations on D1, D).
        """
        mu1 = as_vector(_dense(mu1), "mu1", length=self.n)
        P = sp.csr_matrix(pi)
        out = {}
        if mu1_ref is None:
            out["mu1_err_max"] = float(np.max(np.abs(mu1 - self.mu1_d)[self.D1]))
        else:
            out["mu1_err_max"] = float(np.max(np.abs(mu1 - as_vector(_dense(mu1_ref), "mu1_ref", length=self.n))))
        if pi_ref is None:
            out["pi_err_max"] = _max_abs(self.residual_plan(P))
        else:
            out["pi_err_max"] = _max_abs(P - sp.csr_matrix(_matrix(pi_ref, "pi_ref", self.shape)))
        return out


@cite("III")
def identification_errors(mu1, pi, mu1_true, pi_true) -> dict:
    """max|mu1_true - mu1| and max|pi_true - pi| over all of Omega_1 and Omega (Tables 4.1, 4.2).

    Parameters
    ----------
    mu1 : array_like
        Computed marginal.
    pi : array_like or scipy.sparse matrix
        Computed plan.
    mu1_true : array_like
        True marginal.
    pi_true : array_like or scipy.sparse matrix
        True plan.

    Examples
    --------
    >>> import numpy as np
    >>> errs = identification_errors([0.5, 0.5], np.eye(2) / 2, [0.4, 0.6], np.eye(2) / 2)
    >>> print(f"{errs['mu1_err_max']:.2f} {errs['pi_err_max']:.2f}")
    0.10 0.00
    """
    mu1 = as_vector(_dense(mu1), "mu1")
    mt = as_vector(_dense(mu1_true), "mu1_true", length=mu1.size)
    P = sp.csr_matrix(pi)
    return {"mu1_err_max": float(np.max(np.abs(mu1 - mt))),
            "pi_err_max": _max_abs(P - sp.csr_matrix(_matrix(pi_true, "pi_true", P.shape)))}
