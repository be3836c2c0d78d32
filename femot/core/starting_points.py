"""Cold starts of :func:`femot.solve_qrot`: staircase (Monge), LP duals, closed form, coarse levels."""
from __future__ import annotations

import numpy as np

from femot.core import kernels
from femot.core.coarsening import COARSE_START_MIN, coarse_start
from femot.core.cost import GeometricCost
from femot.core.exact import exact_ot

# Cold-start continuation in gamma (``_continuation_gammas``): below this dimensionless
# gamma the 'mean' start is replaced by a chain of at most _CONT_MAX_STAGES solves at
# gamma * 10^(k / _CONT_PER_DECADE), each to the residual _CONT_RTOL * max(mu).  Three
# stages per decade: on FE data at gamma = 1e-6 (1,681 nodes) the same Newton steps in
# about 0.6 times the time, as each stage's active set changes less (the curved steps
# and line searches of a decade-sized stage cost the most).
_CONT_GAMMA_HAT = 1e-4
_CONT_PER_DECADE = 3
_CONT_MAX_STAGES = 36
_CONT_RTOL = 1e-6
# Coarse levels are coarsened down to this many points on a side.
_COARSEST = max(2, COARSE_START_MIN // 2)


def _is_monge(cost):
    if hasattr(cost, "is_monge"):
        return bool(cost.is_monge())
    return hasattr(cost, "dense") and kernels.is_monge(cost.dense(), 1e-12 * max(cost.max_abs, 1.0))


def _level(alpha, beta, m1, m2, w1, w2, gamma, eps, clip=False):
    """Best shift along the (1, -1) direction, which leaves alpha (+) beta unchanged.

    Maximizes the dual over s in (alpha - s, beta + s): the eps-terms of (3.1)
    then balance the masses, <w1, mu1 - eps alpha> = <w2, mu2 - eps beta>
    (eps = 0: equal weighted means, the recentering of the solver).
    """
    dm = gamma * (w2 @ m2 - w1 @ m1) / (gamma * eps) if eps > 0 else 0.0
    s = (dm + w1 @ alpha - w2 @ beta) / (w1.sum() + w2.sum())
    if clip and eps > 0:
        # rows that cannot carry mass drop out: balance the clipped masses,
        # F(s) = <w1, (mu1 - eps (alpha - s))_+> - <w2, (mu2 - eps (beta + s))_+> = 0,
        # F nondecreasing in s (bracket by doubling, then bisection)
        def F(t):
            return (w1 @ np.maximum(m1 - eps * (alpha - t), 0.0)
                    - w2 @ np.maximum(m2 - eps * (beta + t), 0.0))
        step = 1.0 + abs(s)
        lo, hi = s, s
        for _ in range(200):
            if F(lo) <= 0:
                break
            lo -= step
            step *= 2
        step = 1.0 + abs(s)
        for _ in range(200):
            if F(hi) >= 0:
                break
            hi += step
            step *= 2
        if F(lo) <= 0 <= F(hi):
            for _ in range(100):
                mid = 0.5 * (lo + hi)
                if mid in (lo, hi):
                    break
                if F(mid) < 0:
                    lo = mid
                else:
                    hi = mid
            s = 0.5 * (lo + hi)
    return alpha - s, beta + s


def _monge_start(cost, m1, m2, w1, w2, gamma, eps, sweeps=30, start=None):
    """Cold start for Monge costs: staircase potentials for the eps-corrected marginals.

    In (3.1) the rows carry the mass ``mu1 - eps*alpha`` (columns ``mu2 - eps*beta``);
    with |alpha| ~ max|c| this shift is not small, so the exact OT support of
    (mu1, mu2) can differ globally from the regularized one.  Fixed point in
    O(n1 + n2) per sweep: north-west corner plan P of the corrected marginals
    (clipped at 0, rebalanced), potentials with ``z = gamma * pi`` on its
    staircase (``kernels.northwest_corner_potentials``), best (1, -1) level.
    Rows that cannot carry mass (mu1_i - eps*alpha_i < 0) are inactive at the
    solution with alpha_i = mu1_i / eps, so alpha is capped there.  The sweeps
    stop at a fixed point or after ``sweeps``; each is O(n1 + n2), so many are
    cheap (at n = 500 with eps*max|c| ~ 1e-3 the residual falls from 5e-6 after
    3 sweeps to 1e-7 after 10, where a Newton step from the 3-sweep point
    scrambles the active set).  Among the exact OT duals and a few of the sweeps
    (the first ones, powers of two, the last) the point with the smallest
    residual of (3.1) is returned (one dense pass each), with a flag telling
    whether it came from a sweep.  The sweeps put z = gamma * pi on the staircase, so the
    solver's first Newton matrix is then the true active set (no band).  With ``start`` (a warm start) the sweeps begin
    from it instead of the exact duals, and it competes in the selection.
    """
    c = cost.kernel_operand if hasattr(cost, "kernel_operand") else cost.dense()  # read on the staircase only
    cand = []
    if start is None:
        a, b = w1 * m1, w2 * m2
        al, be = kernels.northwest_corner_duals(c, a / a.sum(), b / b.sum())
        cand.append(_level(al, be, m1, m2, w1, w2, gamma, eps))
    else:
        cand.append(start)
    if eps == 0.0 and start is None:
        # no eps-correction to make: the exact duals (with the first-step band) are
        # the start, and the sweep's dense residual passes would only cost time
        return cand[0][0], cand[0][1], False
    for _ in range(sweeps if eps > 0 else 1):
        al, be = cand[-1]
        a = w1 * np.maximum(m1 - eps * al, 0.0)
        b = w2 * np.maximum(m2 - eps * be, 0.0)
        if not (a.sum() > 0 and b.sum() > 0):
            break
        tot = 0.5 * (a.sum() + b.sum())
        al, be = kernels.northwest_corner_potentials(c, a * (tot / a.sum()), b * (tot / b.sum()), gamma, w1, w2)
        al, be = _level(al, be, m1, m2, w1, w2, gamma, eps, clip=True)
        if eps > 0:
            al, be = np.minimum(al, m1 / eps), np.minimum(be, m2 / eps)
        if not (np.all(np.isfinite(al)) and np.all(np.isfinite(be))):
            break
        cand.append((al, be))
        if np.array_equal(al, cand[-2][0]) and np.array_equal(be, cand[-2][1]):
            break
    kappa = gamma * eps

    def residual(x):
        rs, cs = cost.evaluate(x[0], x[1], w1, w2)[:2]
        return max(float(np.abs((rs + kappa * x[0]) / gamma - m1).max()),
                   float(np.abs((cs + kappa * x[1]) / gamma - m2).max()))

    last = len(cand) - 1
    checked = sorted(set(range(min(4, last))) | {2 ** p for p in range(2, 6) if 2 ** p < last} | {last})
    k = min(checked, key=lambda i: residual(cand[i]))
    return cand[k][0], cand[k][1], k > 0


def _coarse_start(cost, m1, m2, w1, w2, gamma, eps, solver):
    """Potentials solved on coarsened point sets and the levels solved, ``(alpha, beta, levels)``, or None.

    For a :class:`~femot.core.cost.GeometricCost` with a coarser level (more than
    ``COARSE_START_MIN / 2`` points on a side): levels of about 4 times fewer points down to
    ``COARSE_START_MIN / 2``, gamma coupled to each level (:func:`femot.core.coarsening.coarse_start`).
    """
    if not has_coarser_level(cost):
        return None
    return coarse_start(cost.x1, cost.x2, m1, m2, gamma, w1, w2, p=cost.p, eps=eps, coarsest=_COARSEST,
                        solver=solver)


def has_coarser_level(cost) -> bool:
    """Whether ``init='coarse'`` has coarsened point sets to solve (else it is 'auto')."""
    return isinstance(cost, GeometricCost) and max(cost.shape) > _COARSEST


def _auto_init(cost) -> str:
    """The cold start ``init='auto'`` resolves to (before any fallback)."""
    n1, n2 = cost.shape
    if _is_monge(cost):
        return "monge"
    if n1 * n2 <= 40000 and hasattr(cost, "dense"):
        return "exact"
    if isinstance(cost, GeometricCost) and max(n1, n2) > COARSE_START_MIN:
        return "coarse"  # point costs: potentials from coarsened point sets
    return "mean"


def _initial_point(cost, m1, m2, w1, w2, gamma, eps, init, solver):
    """Cold-start potentials ``(alpha, beta, init_used, levels)``.

    ``solver`` solves the coarse levels of ``init='coarse'``, which ``levels`` lists (None
    for the other starts).
    """
    n1, n2 = cost.shape
    if init == "auto":
        init = _auto_init(cost)
    if init == "coarse":
        start = _coarse_start(cost, m1, m2, w1, w2, gamma, eps, solver)
        if start is not None:
            return start[0], start[1], "coarse", start[2]
        init = "mean"
    if init == "monge":
        # Monge costs (e.g. h(x - y), h convex, on sorted 1D points): the
        # north-west corner rule is an optimal plan and its staircase gives
        # exact dual potentials in O(n1 + n2).
        mass1, mass2 = float(w1 @ m1), float(w2 @ m2)
        if mass1 > 0 and mass2 > 0:
            al, be, swept = _monge_start(cost, m1, m2, w1, w2, gamma, eps)
            return al, be, "monge" if swept else "monge-duals", None
        init = "mean"
    if init == "exact":
        mass1, mass2 = float(w1 @ m1), float(w2 @ m2)
        if mass1 > 0 and mass2 > 0:
            # Exact OT needs equal masses; balance a copy (only a starting point).
            r = exact_ot(cost.dense(), m1 / mass1, m2 / mass2, w1, w2)
            if r.success:
                return r.alpha.copy(), r.beta.copy(), "exact", None
        init = "mean"
    if init == "zero":
        return np.zeros(n1), np.zeros(n2), "zero", None
    if init == "mean":
        # Closed-form solution when every pair is active: it puts every row and
        # column in contact with its cheaper partners.
        W1, W2 = float(w1.sum()), float(w2.sum())
        kappa = gamma * eps
        if hasattr(cost, "weighted_sums"):
            cw2, cw1 = cost.weighted_sums(w1, w2)
        else:
            c = cost.dense()
            cw2, cw1 = c @ w2, w1 @ c
        # alpha_i (W2 + kappa) + <w2, beta> = gamma m1_i + (c w2)_i, same for beta.
        # Choose the split <w1,alpha> = <w2,beta> (any works when kappa = 0).
        sa = (gamma * (w1 @ m1) + w1 @ cw2) / (2 * W2 + kappa) if W2 + kappa > 0 else 0.0
        alpha = (gamma * m1 + cw2 - sa) / (W2 + kappa)
        sb = w1 @ alpha
        beta = (gamma * m2 + cw1 - sb) / (W1 + kappa)
        return alpha, beta, "mean", None
    raise ValueError(f"init={init!r} needs a warm start x0; cold starts: 'auto', 'monge', 'exact', 'mean', "
                     f"'coarse' or 'zero'")


def _continuation_gammas(p) -> list:
    """The decreasing gammas of the cold-start continuation (empty when none is needed).

    ``gamma_hat = gamma M / (C W1 W2)`` (M the mass, C = max|c|, W1, W2 the total
    weights) is the problem's dimensionless regularization: for ``|x - y|^2`` on a domain
    of diameter D in d dimensions the plan's support around a point has radius about
    ``D gamma_hat^(1/(d+2))``.  Above ``_CONT_GAMMA_HAT`` the 'mean' start (every pair
    active) is a good start; below it the plan has a few entries per row and Newton from
    'mean' first spends expensive iterations on a dense active set, then discovers the
    sparse one an entry at a time (and coarsened point sets, ``init='coarse'``, give
    potentials of a coarser plan that Newton then refines equally slowly).  The
    continuation solves at
    ``gamma * 10^(k/3), ..., gamma * 10^(1/3)`` (the largest one at most a factor 10^(1/3)
    below the threshold), each from the previous potentials.
    """
    mass = float(p.w1 @ p.m1)
    scale = float(p.cost.max_abs) * p.W1 * p.W2
    if not (mass > 0 and scale > 0):
        return []
    g0 = _CONT_GAMMA_HAT * scale / mass
    k = int(np.floor(_CONT_PER_DECADE * np.log10(g0 / p.gamma) + 1e-9)) if g0 > p.gamma else 0
    return [p.gamma * 10.0 ** (j / _CONT_PER_DECADE) for j in range(min(k, _CONT_MAX_STAGES), 0, -1)]
