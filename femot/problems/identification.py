"""Transportation identification: recover a source marginal and its plan from observations.

Part III, Section 4 (problem (TI) and its reduction (RTI_gamma^eps)).  Given a cost
``c_d`` (n1 x n2), a known target marginal ``mu2_d`` and observations ``pi_d`` of an
optimal plan on ``D ⊂ Omega = Omega_1 x Omega_2`` and ``mu1_d`` of the source
marginal on ``D1 ⊂ Omega_1``, the tracking objective is (Part III, eq. (4.1))

    J(pi, mu1) = 1/2 |pi - pi_d|_D^2 + lam/2 |mu1 - mu1_d|_{D1}^2,

with the Euclidean norms restricted to the masks.  Replacing the exact lower level by
the regularized marginal-to-plan map ``S_{gamma,eps}`` (Part III Def. 3.1) gives the
reduced problem over the simplex S = {mu1 >= 0, sum mu1 = sum mu2_d}:

    min_{mu1 in S}  f(mu1) = J(S_{gamma,eps}(mu1, mu2_d), mu1).        (RTI_gamma^eps)

``f`` is Lipschitz; by Part III Prop. 3.14 a Clarke subgradient is

    g = p1 + lam * D1 ∘ (mu1 - mu1_d),   (p1, p2) = S'(mu)^* [D ∘ (pi - pi_d)],

where the adjoint is one sparse solve with the Newton matrix of the lower level
(``QROTResult.vjp``); at a kink every ``A ⊂ Omega_0`` with outer structure gives a
Bouligand element (Part III Thm 3.12), which feeds the collective Bouligand model of
Algorithm 4.1 (Remark 4.2, eq. (4.2)).  The reduced problem is solved by the
constrained nonsmooth trust-region method (``femot.optim.minimize_simplex``).

The lower level is the Hitchcock case (unit weights), as in Part III §4.
"""
from __future__ import annotations

import copy
import time
from collections import OrderedDict

import numpy as np
import scipy.sparse as sp
from scipy.optimize import OptimizeResult

from femot._validation import (
    as_finite_matrix,
    as_nonnegative_vector,
    as_vector,
    check_nonnegative_scalar,
    check_positive_scalar,
)
from femot.core import kernels
from femot.core.cost import DenseCost
from femot.core.qrot import solve_qrot

__all__ = [
    "TransportIdentification",
    "IdentificationResult",
    "solve_identification",
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


def as_plan_mask(D, shape, name: str = "D") -> np.ndarray:
    """Observation domain ``D ⊂ Omega`` as a boolean (n1, n2) array.

    ``None`` means all of Omega.  Accepts a boolean or 0/1 array (dense or sparse)
    of the plan's shape; anything else, and an empty mask, raises ValueError.
    """
    if D is None:
        return np.ones(shape, dtype=bool)
    try:
        a = np.asarray(_dense(D), dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a boolean or 0/1 array of shape {tuple(shape)}: {exc}") from None
    if a.shape != tuple(shape):
        raise ValueError(f"{name} has shape {a.shape}, expected {tuple(shape)} (the shape of the plan)")
    return _zero_one(a, name)


def as_marginal_mask(D1, n: int, name: str = "D1") -> np.ndarray:
    """Observation domain ``D1 ⊂ Omega_1`` as a boolean vector of length n.

    ``None`` means all of Omega_1.  Row or column vectors (dense or sparse) are
    accepted; they must hold only 0/1 (or booleans) and at least one 1.
    """
    if D1 is None:
        return np.ones(n, dtype=bool)
    try:
        a = np.asarray(_dense(D1), dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a boolean or 0/1 vector of length {n}: {exc}") from None
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1 or a.size != n:
        raise ValueError(f"{name} has shape {a.shape}, expected a 0/1 mask of length {n} (the length of mu1)")
    return _zero_one(a, name)


def _zero_one(a, name):
    if not np.all(np.isfinite(a)) or not np.all((a == 0) | (a == 1)):
        bad = a[~((a == 0) | (a == 1))][:1]
        raise ValueError(f"{name} must hold only 0/1 (or booleans); found the value {bad[0]!r}")
    m = a.astype(bool)
    if not m.any():
        raise ValueError(f"{name} is empty: the observation domain must contain at least one point")
    return m


def band_mask(n1: int, n2: int, bandwidth: int) -> np.ndarray:
    """The band ``{(i, j): |i - j| <= bandwidth}`` (Part III §4.2, experiment 2)."""
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
class TransportIdentification:
    """The reduced transportation identification problem (RTI_gamma^eps), Part III §4.

    Parameters
    ----------
    c_d : (n1, n2) cost matrix.
    mu2_d : known target marginal (nonnegative, positive mass s = sum mu2_d).
    pi_d : (n1, n2) observed plan (dense or sparse); only its entries in D are used.
    mu1_d : observed source marginal (length n1); only its entries in D1 are used.
        Observations may be noisy: mu1_d need only be finite, pi_d nonnegative.
    D, D1 : observation masks (boolean / 0/1, dense or sparse); None = everything.
    lam : weight lam >= 0 of the marginal term.
    gamma, eps : regularization of the lower level (eps defaults to gamma, as in
        Part III §4.2).  eps > 0 makes the lower level uniquely solvable for every
        mu1 on the simplex, including marginals with zeros.
    qrot_options : extra keyword arguments for :func:`femot.solve_qrot`
        (default ``tol=1e-10``).
    cache_size : number of lower-level solutions kept (keyed by mu1).

    The instance is callable: ``problem(mu1) -> (f, g)``, the oracle of the
    trust-region method.  Every lower-level solve is warm-started from the dual
    potentials (alpha, beta) of the previous one.
    """

    def __init__(self, c_d, mu2_d, pi_d, mu1_d, D=None, D1=None, lam=1.0, gamma=1e-4, eps=None, *,
                 qrot_options=None, cache_size=8):
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
        self._cost = DenseCost(c, "c_d")
        self.shape = (n1, n2)
        self.full_D = bool(self.D.all())
        self.qrot_options = {"tol": 1e-10}
        if qrot_options:
            self.qrot_options.update(qrot_options)
        self._cache = OrderedDict()
        self._cache_size = max(1, int(cache_size))
        self._warm = None
        self.warm_max_iter = 30
        self.n_solves = 0
        self.solve_time = 0.0
        self.n_failed_solves = 0

    @property
    def n(self) -> int:
        return self.shape[0]

    def with_regularization(self, gamma, eps=None) -> "TransportIdentification":
        """The same identification problem with the lower level at (gamma, eps) (fresh cache)."""
        other = copy.copy(self)
        other.gamma = check_positive_scalar(gamma, "gamma")
        other.eps = other.gamma if eps is None else check_positive_scalar(eps, "eps")
        other._cache = OrderedDict()
        other._warm = None
        other.n_solves, other.solve_time, other.n_failed_solves = 0, 0.0, 0
        return other

    # -- lower level ----------------------------------------------------------
    def check_point(self, mu1, name: str = "mu1", atol: float = 1e-8) -> np.ndarray:
        """mu1 as a vector on the simplex {mu1 >= 0, sum mu1 = sum mu2_d} (ValueError otherwise)."""
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

    def lower_level(self, mu1):
        """The lower-level solution S_{gamma,eps}(mu1, mu2_d) as a :class:`QROTResult` (cached).

        Warm-started from the last successful solve (at most ``warm_max_iter`` Newton
        steps); if that fails, a cold start, then continuation in (gamma, eps).  A result that still
        fails is returned (check ``.success``) and counted in ``n_failed_solves``.
        """
        x = np.maximum(np.asarray(mu1, dtype=float).reshape(-1), 0.0)
        key = x.tobytes()
        res = self._cache.get(key)
        if res is not None:
            self._cache.move_to_end(key)
            return res
        t0 = time.perf_counter()
        res = None
        if self._warm is not None:
            # Warm start from the previous dual potentials: the trust-region method
            # evaluates nearby points, so few Newton steps are usually needed.  With a
            # tiny gamma*eps, rows/columns of zero mass sit on kinks of their own and
            # a warm start can stall; cap it and fall back to the cold start below.
            opts = dict(self.qrot_options)
            opts["max_iter"] = min(int(opts.get("max_iter", 200)), self.warm_max_iter)
            res = solve_qrot(self._cost, x, self.mu2_d, self.gamma, self.eps, x0=self._warm, **opts)
        if res is None or not res.success:
            cold = solve_qrot(self._cost, x, self.mu2_d, self.gamma, self.eps, **self.qrot_options)
            if res is None or cold.success or cold.residual < res.residual:
                res = cold
        if not res.success:
            # Small gamma*eps relative to the cost: continuation through the levels
            # (t gamma, t eps), t = 10^k, ..., 1, each warm-started from the last.
            new = self._continuation(x)
            if new.success or new.residual < res.residual:
                res = new
        self.solve_time += time.perf_counter() - t0
        self.n_solves += 1
        if res.success:
            self._warm = (res.alpha, res.beta)
        else:
            self.n_failed_solves += 1
        self._cache[key] = res
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return res

    def _continuation(self, x, factor: float = 10.0):
        """Solve at (gamma, eps) through levels (t*gamma, t*eps), t = factor^k, ..., 1."""
        scale = max(float(np.abs(self.c_d).max()), 1.0)
        k = max(1, int(np.ceil(np.log(scale / self.gamma) / np.log(factor))))
        x0 = None
        res = None
        for t in factor ** np.arange(k, -1, -1.0):
            res = solve_qrot(self._cost, x, self.mu2_d, t * self.gamma, t * self.eps, x0=x0,
                             **self.qrot_options)
            x0 = (res.alpha, res.beta)
        return res

    # -- upper level ----------------------------------------------------------
    def residual_plan(self, pi):
        """``D ∘ (pi - pi_d)`` as CSR, the gradient of J with respect to pi."""
        P = sp.csr_matrix(pi)
        if not self.full_D:
            P = P.tocoo()
            keep = self.D[P.row, P.col]
            P = sp.csr_matrix((P.data[keep], (P.row[keep], P.col[keep])), shape=self.shape)
        return (P - self.pi_d_obs).tocsr()

    def objective(self, pi, mu1) -> float:
        """The upper-level objective J(pi, mu1) of Part III eq. (4.1) for any plan pi."""
        pi = _matrix(pi, "pi", self.shape)
        mu1 = as_vector(_dense(mu1), "mu1", length=self.n)
        G = self.residual_plan(pi)
        r1 = np.where(self.D1, mu1 - self.mu1_d, 0.0)
        return 0.5 * float(G.data @ G.data) + 0.5 * self.lam * float(r1 @ r1)

    def value(self, mu1) -> float:
        """The reduced objective f_{gamma,eps}(mu1) (Part III, (RTI_gamma^eps))."""
        return self.value_and_subgradient(mu1)[0]

    def value_and_subgradient(self, mu1, A=None):
        """``(f(mu1), g)`` with g a Clarke subgradient of f (Part III Prop. 3.14).

        ``g = p1 + lam * D1 ∘ (mu1 - mu1_d)`` where ``p1`` is the mu1-part of the
        adjoint of the plan derivative applied to ``D ∘ (pi - pi_d)``.  With ``A``
        (a pair of index arrays, a subset of the biactive set Omega_0 with outer
        structure) the Bouligand element of Thm 3.12 for the pattern
        ``Omega_+ ∪ A`` is used, Omega_+ = {alpha_i + beta_j > c_ij} taken strictly
        (entries of Omega_0 that the solver left slightly positive are dropped first).
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

    __call__ = value_and_subgradient

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
        """
        from femot.core.sensitivity import outer_structure

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
        """
        x = np.asarray(mu1, dtype=float).reshape(-1)
        sets = self.bouligand_sets(x, max_elements)
        if not sets:
            return []
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        return [self.value_and_subgradient(x, A=A)[1] for A in [empty] + sets]

    def errors(self, mu1, pi, mu1_ref=None, pi_ref=None) -> dict:
        """Max-norm errors of (mu1, pi) against the observations (on D1, D) or given references."""
        mu1 = as_vector(_dense(mu1), "mu1", length=self.n)
        P = sp.csr_matrix(pi)
        out = {}
        if mu1_ref is None:
            out["mu1_err_max"] = float(np.max(np.abs(mu1 - self.mu1_d)[self.D1]))
        else:
            out["mu1_err_max"] = float(np.max(np.abs(mu1 - as_vector(_dense(mu1_ref), "mu1_ref", length=self.n))))
        if pi_ref is None:
            G = self.residual_plan(P)
            out["pi_err_max"] = float(np.max(np.abs(G.data), initial=0.0))
        else:
            Dif = (P - sp.csr_matrix(_matrix(pi_ref, "pi_ref", self.shape))).tocsr()
            out["pi_err_max"] = float(np.max(np.abs(Dif.data), initial=0.0))
        return out


# --------------------------------------------------------------------------
# solving
# --------------------------------------------------------------------------
class IdentificationResult(OptimizeResult):
    """Result of :func:`solve_identification`.

    Attributes
    ----------
    mu1 : the computed source marginal (a point of the simplex).
    plan : its lower-level plan S_{gamma,eps}(mu1, mu2_d) (CSR).
    alpha, beta : the dual potentials of that plan.
    J : the objective value f(mu1) = J(plan, mu1).
    nit, nfev : trust-region iterations and oracle calls (all continuation levels).
    nhev : Hessian-vector products (``hessian=True``); model : "newton" or "bfgs".
    levels : one dict per level (gamma, eps, nit, nfev, fun, status, stationarity);
        a single entry without continuation.
    stationarity, stationarity_measure : final theta_R (or psi_R) and which one.
    success, status, message : from the trust-region method; success also requires
        that the final lower-level solve converged.
    mu1_err_max, pi_err_max : max |mu1 - mu1_d| over D1 and max |pi - pi_d| over D.
    eps_bias : ``eps * max(|alpha|_inf, |beta|_inf)``, how far the eps term of (3.1)
        moves the plan's marginals away from (mu1, mu2_d) (mass units).  When it is
        not small against the marginals, J cannot approach 0 even at the truth:
        lower eps.  ``eps_bias_relative`` divides by ``max(mu2_d)``.
    history : the optimizer's per-iteration records; tr : the optimizer's result;
    lower : the final :class:`QROTResult`; n_lower_solves, lower_time_s, time_s.
    """

    def table(self) -> str:
        """The trust-region iteration table."""
        return self.tr.table()

    def summary(self) -> str:
        """A few lines: errors, objective, iterations, stationarity, success."""
        return (f"max|mu1_d - mu1| (on D1) = {self.mu1_err_max:.4e}\n"
                f"max|pi_d - pi|   (on D)  = {self.pi_err_max:.4e}\n"
                f"J                        = {self.J:.4e}\n"
                f"iterations               = {self.nit} ({self.nfev} evaluations, {self.n_lower_solves} "
                f"lower-level solves, {self.time_s:.2f} s)\n"
                f"stationarity ({self.stationarity_measure:5s})     = {self.stationarity:.3e}\n"
                f"eps bias eps*max|alpha|  = {self.eps_bias:.3e} ({self.eps_bias_relative:.1%} of max mu2_d)"
                f"{'  <- large: the eps term of (3.1) limits J; lower eps' if self.eps_bias_relative > 0.01 else ''}\n"
                f"success                  = {self.success} ({self.message})")


#: Trust-region options used by :func:`solve_identification` unless overridden.
#: Part III §4.2: R = sqrt(n1), Delta_min = 1e-6, eta = (0.1, 0.9), beta = (0.5, 1.5),
#: nu = 1, mu1_0 uniform, Delta0 = 1, TOL = 1e-5 (the defaults of minimize_simplex).
DEFAULT_TR_OPTIONS = {"tol": 1e-5, "max_iter": 200}


def _continuation_levels(problem, continuation):
    """Factors t > 1 of the intermediate levels (t gamma, t eps), largest first."""
    if continuation is None or continuation is False:
        return []
    if isinstance(continuation, str):
        if continuation != "auto":
            raise ValueError(f"continuation must be None, 'auto' or a sequence of factors > 1, got {continuation!r}")
        # decades from gamma = 1e-2 (the largest gamma of Part III §4.2) down to the problem's gamma
        k = int(np.floor(np.log10(1e-2 / problem.gamma) + 1e-9))
        return [10.0 ** j for j in range(k, 0, -1)]
    try:
        factors = [float(t) for t in continuation]
    except (TypeError, ValueError):
        raise ValueError("continuation must be None, 'auto' or a sequence of factors > 1") from None
    if any(not (t > 1.0 and np.isfinite(t)) for t in factors):
        raise ValueError(f"continuation factors must be finite numbers > 1, got {factors}")
    return sorted(factors, reverse=True)


def solve_identification(problem: TransportIdentification, x0=None, options=None, callback=None,
                         verbose=False, bouligand=True, hessian=False,
                         continuation=None, continuation_tol=1e-3) -> IdentificationResult:
    """Solve (RTI_gamma^eps) by the constrained nonsmooth trust-region method (Part III Alg. 4.1).

    Parameters
    ----------
    problem : a :class:`TransportIdentification`.
    x0 : starting marginal on the simplex (default: uniform, mass sum(mu2_d), as in §4.2).
    options : dict of :func:`femot.optim.minimize_simplex` options (defaults: Part III §4.2,
        tol = 1e-5, max_iter = 200).
    callback : passed to the optimizer.
    verbose : print the iteration table while running.
    bouligand : supply the Bouligand elements at the iterate (Thm 3.12) to the
        collective Bouligand model of Remark 4.2 below Delta_min (in addition to the
        optimizer's own exploration of the ball).
    hessian : use the exact (Gauss-Newton) Hessian-vector products of
        :meth:`TransportIdentification.hessp` in the trust-region model (projected
        Newton-CG and bundle-Newton steps, ``femot.optim.minimize_simplex(hessp=...)``);
        False (default) gives the BFGS model of Part III, Remark 4.2.
    continuation : None (default: solve at the problem's (gamma, eps) directly, as in
        Part III §4.2), ``"auto"`` (first solve at (t gamma, t eps) for t = 10^k, ..., 10
        with 10^k gamma <= 1e-2, each level warm-started from the previous one) or a
        sequence of factors t > 1.  ``nit``/``nfev`` count all levels; ``levels`` lists
        them.
    continuation_tol : stationarity tolerance of the intermediate levels (only a warm
        start for the next level is needed there; at most 50 iterations each); the last
        level uses ``options``.

    Notes
    -----
    The reduced objective is piecewise quadratic (very many pieces at small gamma) and
    has local minima; which one a method reaches depends on its path.  On the 25 x 25
    instance of the authors' code, ``hessian=True, continuation="auto"`` converges at
    gamma = eps = 1e-2 / 1e-4 / 1e-6 in 15 / 39 / 42 iterations to J = 2.9333e-2 /
    2.6161e-4 / 3.2822e-8, where the BFGS model stops at the 200-iteration limit for
    the first two (J = 2.9306e-2 / 2.6821e-4) and needs 53 for the third.  But the
    Newton model's long first steps also reach poor local minima: experiment 1 with
    n = 100 at gamma = 1e-2, eps = 1e-8 ends at J = 1.4e-3 (BFGS: 8.6e-9), and from
    the uniform start at gamma = 1e-6 without continuation three of ten n = 25 seeds end
    at J ~ 2e-2.  The BFGS model is therefore the default.
    """
    from femot.optim import minimize_simplex

    if not isinstance(problem, TransportIdentification):
        raise ValueError(f"problem must be a TransportIdentification, got {type(problem).__name__}")
    if x0 is not None:
        x0 = problem.check_point(x0, "x0")
    opts = dict(DEFAULT_TR_OPTIONS)
    if options:
        opts.update(options)
    if verbose:
        opts["verbose"] = True
    collect = None
    if bouligand:
        def collect(x, radius):
            # Every Bouligand element at x (Thm 3.12); the optimizer adds the
            # subgradients it meets while probing the ball along its model direction.
            return problem.bouligand_subgradients(x, radius)
    t0 = time.perf_counter()
    n_solves0, t_solves0 = problem.n_solves, problem.solve_time
    levels = []
    nit_before = nfev_before = nhev_before = 0
    extra_solves, extra_time = 0, 0.0
    for t in _continuation_levels(problem, continuation):
        # 12 significant digits: 1e-6 * 100 is the level 1e-4, not 9.999999999999999e-05
        sub = problem.with_regularization(float(f"{t * problem.gamma:.12g}"), float(f"{t * problem.eps:.12g}"))
        collect_sub = (lambda x, radius, sub=sub: sub.bouligand_subgradients(x, radius)) if bouligand else None
        sub_opts = dict(opts)
        sub_opts["tol"] = max(float(opts.get("tol", 1e-5)), float(continuation_tol))
        sub_opts["max_iter"] = min(int(opts.get("max_iter", 200)), 50)  # only a warm start
        r = minimize_simplex(sub, x0, hessp=sub.hessp if hessian else None, n=problem.n, mass=problem.mass,
                             options=sub_opts, callback=callback, collect_subgradients=collect_sub)
        levels.append({"gamma": sub.gamma, "eps": sub.eps, "nit": r.nit, "nfev": r.nfev, "fun": r.fun,
                       "status": r.status, "stationarity": r.stationarity})
        nit_before += r.nit
        nfev_before += r.nfev
        nhev_before += r.nhev
        extra_solves += sub.n_solves
        extra_time += sub.solve_time
        x0 = r.x
    tr = minimize_simplex(problem, x0, hessp=problem.hessp if hessian else None, n=problem.n,
                          mass=problem.mass, options=opts, callback=callback,
                          collect_subgradients=collect)
    levels.append({"gamma": problem.gamma, "eps": problem.eps, "nit": tr.nit, "nfev": tr.nfev, "fun": tr.fun,
                   "status": tr.status, "stationarity": tr.stationarity})
    mu1 = tr.x
    low = problem.lower_level(mu1)
    J = problem.objective(low.plan, mu1)
    errs = problem.errors(mu1, low.plan)
    success = bool(tr.success and low.success)
    bias = problem.eps * max(float(np.abs(low.alpha).max()), float(np.abs(low.beta).max()))
    message = tr.message if low.success else f"{tr.message} Final lower-level solve: {low.message}"
    return IdentificationResult(
        mu1=mu1, plan=low.plan, alpha=low.alpha, beta=low.beta, J=J, fun=tr.fun, nit=tr.nit + nit_before,
        nfev=tr.nfev + nfev_before, levels=levels,
        stationarity=tr.stationarity, stationarity_measure=tr.stationarity_measure, theta=tr.theta,
        success=success, status=tr.status, message=message, history=tr.history, tr=tr, lower=low,
        gamma=problem.gamma, eps=problem.eps, lam=problem.lam,
        n_lower_solves=problem.n_solves - n_solves0 + extra_solves,
        lower_time_s=problem.solve_time - t_solves0 + extra_time,
        time_s=time.perf_counter() - t0, nhev=tr.nhev + nhev_before, model="newton" if hessian else "bfgs",
        eps_bias=bias, eps_bias_relative=bias / float(problem.mu2_d.max()),
        **errs,
    )


def identification_errors(mu1, pi, mu1_true, pi_true) -> dict:
    """max|mu1_true - mu1| and max|pi_true - pi| over all of Omega_1 and Omega (Tables 4.1, 4.2)."""
    mu1 = as_vector(_dense(mu1), "mu1")
    mt = as_vector(_dense(mu1_true), "mu1_true", length=mu1.size)
    P = sp.csr_matrix(pi)
    Pt = sp.csr_matrix(_matrix(pi_true, "pi_true", P.shape))
    Dif = (P - Pt).tocsr()
    return {"mu1_err_max": float(np.max(np.abs(mu1 - mt))),
            "pi_err_max": float(np.max(np.abs(Dif.data), initial=0.0))}
