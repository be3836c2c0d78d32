"""Tests of femot.optim.simplex: projections, theta_R and psi_R (Part III, Alg. 4.1)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import linprog, minimize

from femot.optim import (
    project_simplex,
    project_weighted_simplex,
    psi_R,
    simplex_diameter,
    simplex_vertices,
    theta_R,
)


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def random_point(rng, n, w=None, s=1.0, zeros=0):
    """A point of {x >= 0, <w,x> = s}, with ``zeros`` vanishing coordinates."""
    w = np.ones(n) if w is None else w
    x = rng.uniform(0.1, 1.0, n)
    x[rng.permutation(n)[:zeros]] = 0.0
    return x * s / (w @ x)


def qp_projection(y, w, s):
    """Brute-force projection: enumerate all supports (exact QP for small n).

    On a support S the projection problem with x_i = 0 off S and the mass
    constraint has the closed-form solution x_S = y_S - tau w_S; the best
    nonnegative candidate over all S is the projection.
    """
    n = y.size
    best, best_val = None, np.inf
    for mask in range(1, 2**n):
        S = np.array([(mask >> i) & 1 for i in range(n)], dtype=bool)
        tau = (w[S] @ y[S] - s) / (w[S] @ w[S])
        x = np.zeros(n)
        x[S] = y[S] - tau * w[S]
        if np.all(x >= -1e-14):
            val = np.sum((x - y) ** 2)
            if val < best_val:
                best, best_val = np.maximum(x, 0.0), val
    return best


def lp_min_linear(g, w, s):
    """min <g, z> over {z >= 0, <w,z> = s} by HiGHS (reference only)."""
    res = linprog(g, A_eq=w[None, :], b_eq=[s], bounds=[(0, None)] * g.size, method="highs")
    assert res.status == 0
    return res.fun


def check_projection_kkt(y, x, w, s, tol=1e-12):
    """x = max(y - tau w, 0) for one scalar tau, and <w, x> = s."""
    assert np.all(x >= 0)
    assert abs(w @ x - s) <= tol * max(1.0, s)
    supp = x > 0
    taus = (y[supp] - x[supp]) / w[supp]
    tau = taus.mean()
    assert np.ptp(taus) <= 1e-10 * (1 + abs(tau))
    # off the support: y_i - tau w_i <= 0
    assert np.all(y[~supp] - tau * w[~supp] <= 1e-10 * (1 + np.abs(y[~supp])))
    np.testing.assert_allclose(x, np.maximum(y - tau * w, 0.0), atol=1e-12)


# ----------------------------------------------------------------------------
# projections
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(8))
def test_project_simplex_kkt_and_qp(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 9))
    s = rng.uniform(0.3, 3.0)
    y = rng.normal(scale=2.0, size=n)
    x = project_simplex(y, mass=s)
    check_projection_kkt(y, x, np.ones(n), s)
    np.testing.assert_allclose(x, qp_projection(y, np.ones(n), s), atol=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_project_weighted_simplex_kkt_and_qp(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 9))
    w = rng.uniform(0.2, 3.0, n)
    s = rng.uniform(0.3, 3.0)
    y = rng.normal(scale=2.0, size=n)
    x = project_weighted_simplex(y, w, mass=s)
    check_projection_kkt(y, x, w, s)
    np.testing.assert_allclose(x, qp_projection(y, w, s), atol=1e-12)


def test_weighted_projection_with_unit_weights_is_standard():
    rng = np.random.default_rng(3)
    y = rng.normal(size=20)
    np.testing.assert_allclose(project_weighted_simplex(y, np.ones(20), 2.0),
                               project_simplex(y, 2.0), atol=1e-15)


def test_projection_of_feasible_point_is_identity_and_large_n():
    rng = np.random.default_rng(4)
    w = rng.uniform(0.5, 2.0, 5000)
    x = random_point(rng, 5000, w, 1.7, zeros=100)
    np.testing.assert_allclose(project_weighted_simplex(x, w, 1.7), x, atol=1e-14)


finite = st.floats(min_value=-50, max_value=50, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(y=arrays(float, st.integers(1, 12), elements=finite),
       s=st.floats(min_value=0.01, max_value=10),
       seed=st.integers(0, 2**16))
def test_projection_properties(y, s, seed):
    """Feasibility, idempotence and the variational inequality at every vertex."""
    w = np.random.default_rng(seed).uniform(0.1, 5.0, y.size)
    x = project_weighted_simplex(y, w, s)
    assert np.all(x >= 0)
    assert abs(w @ x - s) <= 1e-10 * max(1.0, s)
    np.testing.assert_allclose(project_weighted_simplex(x, w, s), x, atol=1e-10)
    V = simplex_vertices(w, s)
    # <y - P y, v - P y> <= 0 for all v in the simplex (enough: its vertices)
    assert np.all((V - x) @ (y - x) <= 1e-8 * (1 + np.abs(y).max()) * (1 + V.max()))


def test_projection_rejects_bad_input():
    with pytest.raises(ValueError, match="y"):
        project_simplex([1.0, np.nan])
    with pytest.raises(ValueError, match="mass"):
        project_simplex([1.0, 2.0], mass=-1)
    with pytest.raises(ValueError, match="weights"):
        project_weighted_simplex([1.0, 2.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="weights"):
        project_weighted_simplex([1.0, 2.0], [1.0, 1.0, 1.0])


# ----------------------------------------------------------------------------
# diameter
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_simplex_diameter_matches_vertex_pairs(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 8))
    w = rng.uniform(0.2, 3.0, n)
    s = rng.uniform(0.5, 2.0)
    V = simplex_vertices(w, s)
    brute = max(np.linalg.norm(V[i] - V[j]) for i in range(n) for j in range(n))
    assert simplex_diameter(n, w, s) == pytest.approx(brute, rel=1e-14)
    assert simplex_diameter(n, None, s) == pytest.approx(np.sqrt(2) * s)
    assert simplex_diameter(1) == 0.0


# ----------------------------------------------------------------------------
# theta_R
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(10))
def test_theta_closed_form_equals_lp(seed):
    rng = np.random.default_rng(200 + seed)
    n = int(rng.integers(2, 10))
    w = None if seed % 2 else rng.uniform(0.3, 2.0, n)
    wv = np.ones(n) if w is None else w
    s = rng.uniform(0.5, 2.0)
    x = random_point(rng, n, wv, s, zeros=int(rng.integers(0, n)))
    g = rng.normal(size=n)
    R = simplex_diameter(n, w, s)  # ball inactive
    th, d = theta_R(x, g, R, weights=w, mass=s, return_direction=True)
    ref = g @ x - lp_min_linear(g, wv, s)
    assert th == pytest.approx(ref, abs=1e-12)
    assert th == pytest.approx(g @ x - s * np.min(g / wv), abs=1e-13)
    # the direction realizes the minimum and is feasible
    assert -(g @ d) == pytest.approx(th, abs=1e-12)
    assert np.all(x + d >= -1e-15) and abs(wv @ (x + d) - s) < 1e-12
    assert np.linalg.norm(d) <= R * (1 + 1e-12)
    assert theta_R(x, g, weights=w, mass=s) == pytest.approx(th, abs=1e-14)  # R = inf


def slsqp_theta(x, g, R, w, s, rng, starts=6):
    """Reference value of theta_R by multi-start SLSQP on the ball-constrained LP."""
    n = x.size
    cons = [{"type": "eq", "fun": lambda d: w @ (x + d) - s, "jac": lambda d: w},
            {"type": "ineq", "fun": lambda d: x + d, "jac": lambda d: np.eye(n)},
            {"type": "ineq", "fun": lambda d: R * R - d @ d, "jac": lambda d: -2 * d}]
    best = np.inf
    for _ in range(starts):
        d0 = project_weighted_simplex(rng.normal(size=n), w, s) - x
        d0 *= min(1.0, 0.5 * R / max(np.linalg.norm(d0), 1e-300))
        r = minimize(lambda d: g @ d, d0, jac=lambda d: g, constraints=cons, method="SLSQP",
                     options={"ftol": 1e-15, "maxiter": 1000})
        dd = r.x
        if np.all(x + dd >= -1e-9) and dd @ dd <= R * R * (1 + 1e-8) and abs(w @ (x + dd) - s) < 1e-9:
            best = min(best, g @ dd)
    return -best


@pytest.mark.parametrize("seed", range(12))
def test_theta_with_active_ball_matches_slsqp(seed):
    rng = np.random.default_rng(300 + seed)
    n = int(rng.integers(2, 7))
    w = rng.uniform(0.3, 2.0, n)
    s = rng.uniform(0.5, 2.0)
    x = random_point(rng, n, w, s, zeros=int(rng.integers(0, n - 1)))
    g = rng.normal(size=n)
    R = rng.uniform(0.05, 0.7) * simplex_diameter(n, w, s)
    th, d = theta_R(x, g, R, weights=w, mass=s, return_direction=True)
    assert th == pytest.approx(slsqp_theta(x, g, R, w, s, rng), abs=2e-7)
    assert np.linalg.norm(d) <= R * (1 + 1e-12)
    assert np.all(x + d >= -1e-14) and abs(w @ (x + d) - s) < 1e-12
    assert -(g @ d) == pytest.approx(th, abs=1e-13)
    # the ball cuts the LP off only if the vertex solution is farther than R
    assert th <= theta_R(x, g, weights=w, mass=s) + 1e-14


def test_theta_ball_solution_is_a_projection_point():
    """Derivation check: d = P(x - t g) - x with |d| = R for some t > 0."""
    rng = np.random.default_rng(7)
    n = 6
    x = random_point(rng, n)
    g = rng.normal(size=n)
    R = 0.2
    th, d = theta_R(x, g, R, return_direction=True)
    assert np.linalg.norm(d) == pytest.approx(R, rel=1e-10)
    # recover t from a support coordinate pair and verify the projection identity
    ts = np.geomspace(1e-3, 1e3, 20001)
    dist = [np.linalg.norm(project_simplex(x - t * g) - x) for t in ts]
    t = ts[int(np.argmin(np.abs(np.array(dist) - R)))]
    np.testing.assert_allclose(project_simplex(x - t * g) - x, d, atol=2e-3)


def test_theta_is_monotone_in_R():
    rng = np.random.default_rng(8)
    x = random_point(rng, 7, zeros=2)
    g = rng.normal(size=7)
    Rs = np.linspace(0.01, 1.5, 30)
    th = [theta_R(x, g, R) for R in Rs]
    assert np.all(np.diff(th) >= -1e-13)
    assert th[-1] == pytest.approx(g @ x - g.min(), abs=1e-13)


def test_theta_vanishes_exactly_at_constrained_minimizer():
    # f(x) = <c, x> + 1/2 |x|^2 with c = (0, 0, 2): the minimizer over the
    # simplex is x* = (1/2, 1/2, 0) with gradient g = c + x* = (1/2, 1/2, 2).
    x = np.array([0.5, 0.5, 0.0])
    g = np.array([0.5, 0.5, 2.0])
    assert theta_R(x, g, 10.0) == 0.0
    assert theta_R(x, g, 0.1) == 0.0
    # and it is positive away from it
    assert theta_R(np.array([0.6, 0.4, 0.0]), np.array([0.6, 0.4, 2.0]), 10.0) > 0.0


def test_theta_at_kkt_minimizer_of_random_quadratic_is_rounding_small():
    rng = np.random.default_rng(9)
    n = 8
    M = rng.normal(size=(n, n))
    A = M @ M.T + np.eye(n)
    xs = random_point(rng, n, zeros=3)
    mu = np.where(xs == 0, rng.uniform(0.1, 1.0, n), 0.0)
    b = -A @ xs + 0.3 + mu  # KKT: grad = 0.3*1 + mu, mu >= 0 on the zero set
    g = A @ xs + b
    assert theta_R(xs, g, np.sqrt(n)) <= 1e-13
    assert theta_R(xs, g, 1e-3) <= 1e-13


def test_theta_rejects_bad_input():
    with pytest.raises(ValueError, match="x"):
        theta_R([0.5, 0.6], [1.0, 2.0])  # wrong mass
    with pytest.raises(ValueError, match="x"):
        theta_R([-0.5, 1.5], [1.0, 2.0])  # negative entry
    with pytest.raises(ValueError, match="g"):
        theta_R([0.5, 0.5], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="R"):
        theta_R([0.5, 0.5], [1.0, 2.0], R=-1.0)
    with pytest.raises(ValueError, match="weights"):
        theta_R([0.5, 0.5], [1.0, 2.0], weights=[1.0, -1.0])


# ----------------------------------------------------------------------------
# psi_R
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(8))
def test_psi_with_one_gradient_equals_theta(seed):
    rng = np.random.default_rng(400 + seed)
    n = int(rng.integers(2, 9))
    w = None if seed % 2 else rng.uniform(0.3, 2.0, n)
    wv = np.ones(n) if w is None else w
    s = rng.uniform(0.5, 2.0)
    x = random_point(rng, n, wv, s, zeros=int(rng.integers(0, n)))
    g = rng.normal(size=n)
    p, d = psi_R(x, g, weights=w, mass=s, return_direction=True)
    assert p == pytest.approx(theta_R(x, g, weights=w, mass=s), abs=1e-9)
    assert -(g @ d) == pytest.approx(p, abs=1e-12)
    assert np.all(x + d >= -1e-15) and abs(wv @ (x + d) - s) < 1e-12


@pytest.mark.parametrize("seed", range(8))
def test_psi_is_min_of_theta_over_convex_combinations(seed):
    """Minimax: psi({g1,g2}) = min_{lam in [0,1]} theta(lam g1 + (1-lam) g2).

    theta(x, g) = <g,x> - s min_i g_i/w_i is convex piecewise linear in lam;
    its minimum is at lam in {0, 1} or where two ratios (g_lam)_i/w_i cross.
    """
    rng = np.random.default_rng(500 + seed)
    n = int(rng.integers(2, 7))
    w = rng.uniform(0.3, 2.0, n)
    s = 1.3
    x = random_point(rng, n, w, s)
    g1, g2 = rng.normal(size=n), rng.normal(size=n)
    r1, r2 = g1 / w, g2 / w
    cands = [0.0, 1.0]
    for i in range(n):
        for j in range(i + 1, n):
            den = (r1[i] - r2[i]) - (r1[j] - r2[j])
            if den != 0:
                lam = (r2[j] - r2[i]) / den
                if 0 <= lam <= 1:
                    cands.append(lam)
    ref = min(theta_R(x, lam * g1 + (1 - lam) * g2, weights=w, mass=s) for lam in cands)
    p = psi_R(x, np.vstack([g1, g2]), weights=w, mass=s)
    assert p == pytest.approx(ref, abs=1e-9)
    assert p <= min(theta_R(x, g1, weights=w, mass=s), theta_R(x, g2, weights=w, mass=s)) + 1e-9


def test_psi_vanishes_when_zero_is_in_the_hull():
    # f(x) = max(x1 - x2, x2 - x1) on the 2-simplex: kink minimizer at (1/2, 1/2)
    x = np.array([0.5, 0.5])
    G = np.array([[1.0, -1.0], [-1.0, 1.0]])
    assert theta_R(x, G[0]) == pytest.approx(1.0)
    assert psi_R(x, G) == pytest.approx(0.0, abs=1e-12)


def test_psi_with_small_radius_stays_in_ball_and_below_theta():
    rng = np.random.default_rng(11)
    n = 6
    x = random_point(rng, n)
    G = rng.normal(size=(3, n))
    R = 0.05
    p, d = psi_R(x, G, R, return_direction=True)
    assert np.linalg.norm(d) <= R * (1 + 1e-12)
    assert p >= 0
    # inscribed box: a lower bound of the 2-norm psi, itself <= each theta_R
    assert p <= min(theta_R(x, gk, R) for gk in G) + 1e-9


def test_psi_rejects_bad_input():
    x = np.array([0.5, 0.5])
    with pytest.raises(ValueError, match="G"):
        psi_R(x, np.ones((2, 3)))
    with pytest.raises(ValueError, match="G"):
        psi_R(x, [[np.nan, 1.0]])
    with pytest.raises(ValueError, match="x"):
        psi_R([0.2, 0.2], np.ones((1, 2)))


def test_path_keep_drops_a_level_and_the_next_starts_where_it_did():
    """``keep`` decides whether a level's point warm-starts the next; dropped levels leave x alone."""
    import numpy as np

    from femot.optim import minimize_simplex_path

    def factory(p):  # f_p(x) = |x - e_p|^2 on the 3-simplex
        e = np.eye(3)[p]
        return lambda x: (float((x - e) @ (x - e)), 2 * (x - e))

    x0 = np.array([0.2, 0.3, 0.5])
    dropped = minimize_simplex_path(factory, [0, 2], x0, keep=lambda p, r: p != 0)
    alone = minimize_simplex_path(factory, [2], x0)
    assert np.array_equal(dropped.results[1].x, alone.results[0].x)
    assert dropped.results[1].nit == alone.results[0].nit
    none_kept = minimize_simplex_path(factory, [0], x0, keep=lambda p, r: False)
    assert np.array_equal(none_kept.x, x0)


def test_path_solver_hook_runs_every_level():
    """``solver`` replaces minimize_simplex for each level (a caller's driver) with the same keywords."""
    import numpy as np

    from femot.optim import minimize_simplex, minimize_simplex_path

    def factory(p):
        e = np.eye(3)[p]
        return lambda x: (float((x - e) @ (x - e)), 2 * (x - e))

    calls = []

    def solver(fun, x, **kw):
        calls.append(sorted(kw))
        return minimize_simplex(fun, x, **kw)

    x0 = np.array([0.2, 0.3, 0.5])
    hooked = minimize_simplex_path(factory, [0, 2], x0, solver=solver)
    plain = minimize_simplex_path(factory, [0, 2], x0)
    assert len(calls) == 2 and "options" in calls[0] and "callback" in calls[0]
    assert np.array_equal(hooked.x, plain.x) and hooked.nit == plain.nit
