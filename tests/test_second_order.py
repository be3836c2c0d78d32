"""Tests of the second-order model of minimize_simplex (``hessp``).

The minimizers are known independently: quadratics are built from their KKT
conditions on the (weighted) simplex, the max-of-affine-plus-quadratic problem
is solved as a QP by SLSQP in epigraph form.
"""
import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

from femot.optim import minimize_simplex, minimize_simplex_path, project_weighted_simplex
from femot.optim._newton import fw_gap


# ----------------------------------------------------------------------------
# problems
# ----------------------------------------------------------------------------
def conditioned_quadratic(n, cond, seed, n_zero=0, w=None, s=1.0):
    """f = 1/2 x'Ax + b'x, eigenvalues of A log-spaced in [1, cond], known minimizer x*.

    b = -A x* + lam w + mu with mu > 0 exactly on the ``n_zero`` zero entries of x*:
    the KKT conditions of min f over {x >= 0, <w, x> = s} hold at x* with strict
    complementarity, and A > 0 makes x* the unique minimizer.
    """
    rng = np.random.default_rng(seed)
    w = np.ones(n) if w is None else w
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = (Q * np.logspace(0, np.log10(cond), n)) @ Q.T
    A = 0.5 * (A + A.T)
    xs = rng.uniform(0.5, 1.5, n)
    xs[:n_zero] = 0.0
    xs *= s / (w @ xs)
    mu = np.zeros(n)
    mu[:n_zero] = rng.uniform(0.1, 1.0, n_zero) * np.sqrt(cond)
    b = -A @ xs + rng.normal() * w + mu

    def fun(x):
        return 0.5 * x @ A @ x + b @ x, A @ x + b

    def hessp(x, v):
        return A @ v

    return fun, hessp, xs


def quadratic_plus_lse(n, cond, seed, kappa=1.0):
    """f = 1/2 x'Ax + b'x + kappa * logsumexp(C x): smooth, strictly convex, not quadratic."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = (Q * np.logspace(0, np.log10(cond), n)) @ Q.T
    A = 0.5 * (A + A.T)
    b = rng.normal(size=n)
    C = rng.normal(size=(2 * n, n)) * 3.0

    def fun(x):
        z = C @ x
        return 0.5 * x @ A @ x + b @ x + kappa * logsumexp(z), A @ x + b + kappa * C.T @ softmax(z)

    def hessp(x, v):
        p = softmax(C @ x)
        Cv = C @ v
        return A @ v + kappa * C.T @ (p * Cv - p * (p @ Cv))

    return fun, hessp


def on_simplex(x, w, s, tol=1e-10):
    return np.all(x >= 0) and abs(w @ x - s) <= tol * max(1.0, s)


# ----------------------------------------------------------------------------
# smooth convex problems: certified convergence, iterations independent of the conditioning
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("subproblem", ["projected", "active-set"])
@pytest.mark.parametrize("n_zero", [0, 12], ids=["interior", "many-active"])
def test_newton_iterations_do_not_grow_with_conditioning(n_zero, subproblem):
    """Also for the active-set subproblem solver, except that there, on the 12 active bounds of a
    random Hessian of condition 1e8, bounds fixed too early cost outer iterations (5, 5, 11)."""
    n = 30
    iters = []
    for cond in (1e2, 1e5, 1e8):
        fun, hessp, xs = conditioned_quadratic(n, cond, seed=4, n_zero=n_zero)
        fstar = fun(xs)[0]
        res = minimize_simplex(fun, n=n, hessp=hessp,
                               options={"convex": True, "fw_rtol": 1e-10, "subproblem": subproblem})
        assert res.success and res.status == 0, res.message
        assert res.stationarity_measure == "fw_gap"
        # the certificate: fw_gap >= f(x) - f* >= 0, and it is below 1e-10 |f|
        assert res.fw_gap <= 1e-10 * abs(res.fun)
        assert res.fun - fstar <= res.fw_gap + 1e-15 * abs(fstar)
        assert res.fw_gap == pytest.approx(fw_gap(res.x, res.jac, None, 1.0), rel=0, abs=0)
        # the minimizer (forward error of a system of condition `cond`)
        assert np.abs(res.x - xs).max() <= 1e-12 * cond + 1e-12
        # the optimal active set is identified (zero up to the rounding of the projection)
        assert np.array_equal(res.x <= 1e-12, xs == 0)
        assert res.nhev > 0
        iters.append(res.nit)
    if subproblem == "active-set" and n_zero:
        assert max(iters[:2]) <= 8 and iters[2] <= 12, iters
        return
    assert max(iters) <= 8, iters
    assert max(iters) - min(iters) <= 2, iters


@pytest.mark.parametrize("subproblem", ["projected", "active-set"])
def test_newton_weighted_simplex(subproblem):
    rng = np.random.default_rng(7)
    n, s = 25, 2.5
    w = rng.uniform(0.2, 3.0, n)
    fun, hessp, xs = conditioned_quadratic(n, 1e6, seed=8, n_zero=9, w=w, s=s)
    res = minimize_simplex(fun, weights=w, mass=s, hessp=hessp,
                           options={"convex": True, "fw_rtol": 1e-10, "subproblem": subproblem})
    assert res.success, res.message
    assert on_simplex(res.x, w, s)
    assert res.fw_gap <= 1e-10 * abs(res.fun)
    assert res.nit <= 8
    assert np.abs(res.x - xs).max() <= 1e-8
    # the weighted Frank-Wolfe gap: <g, x> - s min g_i / w_i = max_z <g, x - z> over the vertices
    vert = np.diag(s / w)
    assert res.fw_gap == pytest.approx(np.max(vert @ -res.jac + res.jac @ res.x), abs=1e-12 * abs(res.fun))


def test_newton_superlinear_on_smooth_nonquadratic():
    fun, hessp = quadratic_plus_lse(20, 1e4, seed=2)
    res = minimize_simplex(fun, n=20, hessp=hessp, options={"convex": True, "fw_rtol": 1e-13})
    assert res.success, res.message
    gaps = [h["fw_gap"] for h in res.history if h["accepted"] or h["model"] is None]
    assert res.nit <= 12
    # superlinear: the contraction factor of the gap tends to 0 (stop before rounding level)
    gaps = [gp for gp in gaps if gp > 1e-12 * abs(res.fun)]
    ratios = [b / a for a, b in zip(gaps, gaps[1:])]
    assert len(ratios) >= 3, gaps
    assert ratios[-1] < 1e-2, ratios
    assert ratios[-1] < ratios[-2] < ratios[-3] or ratios[-1] < 1e-4, ratios
    # reference minimizer: the same problem by SLSQP from the result agrees
    ref = minimize(lambda x: fun(x)[0], res.x, jac=lambda x: fun(x)[1], method="SLSQP",
                   bounds=[(0, None)] * 20, constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}],
                   options={"ftol": 1e-15, "maxiter": 500})
    assert res.fun <= ref.fun + 1e-12 * abs(ref.fun)


def test_bfgs_without_hessp_has_no_newton_fields_in_use():
    fun, _, xs = conditioned_quadratic(10, 1e2, seed=1, n_zero=3)
    res = minimize_simplex(fun, n=10, options={"tol": 1e-10})
    assert res.success and res.nhev == 0
    assert all(h["model"] in ("bfgs", "bouligand", None) for h in res.history)
    assert all(h["cg"] is None for h in res.history)
    assert res.fw_gap == pytest.approx(res.theta, abs=1e-15)  # R >= diameter: theta_R is the FW gap


# ----------------------------------------------------------------------------
# nonconvex and nonsmooth problems
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("subproblem", ["projected", "active-set"])
def test_negative_curvature_reaches_a_vertex(subproblem):
    """Concave f = -1/2 |x - c|^2 + <b, x>: every local minimizer on the simplex is a vertex."""
    n = 12
    rng = np.random.default_rng(5)
    c = rng.uniform(0.0, 0.2, n)
    b = 0.1 * rng.normal(size=n)

    def fun(x):
        return -0.5 * (x - c) @ (x - c) + b @ x, -(x - c) + b

    calls = []

    def hessp(x, v):
        calls.append(1)
        return -v

    res = minimize_simplex(fun, n=n, hessp=hessp, options={"tol": 1e-12, "subproblem": subproblem})
    assert res.success, res.message
    assert np.count_nonzero(res.x) == 1 and res.x.max() == pytest.approx(1.0)
    # a local minimizer at the vertex e_i: g_j - g_i >= 0 for all j (theta = 0)
    i = int(np.argmax(res.x))
    assert np.all(res.jac - res.jac[i] >= -1e-12)
    assert res.fun < fun(np.full(n, 1.0 / n))[0]
    assert calls


def test_indefinite_quadratic_interior_face_minimizer():
    """Indefinite Hessian (negative curvature off the optimal face): x* on a face is found."""
    n = 8
    rng = np.random.default_rng(11)
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = (Q * np.array([-3.0, -1.0] + [1.0] * (n - 2))) @ Q.T
    # KKT point on the face {x_0 = x_1 = 0} with A restricted to the face positive definite
    face = np.arange(2, n)
    A[np.ix_(face, face)] += 10.0 * np.eye(n - 2)
    A = 0.5 * (A + A.T)
    xs = np.zeros(n)
    xs[face] = rng.uniform(0.5, 1.5, n - 2)
    xs /= xs.sum()
    mu = np.zeros(n)
    mu[:2] = [2.0, 3.0]
    b = -A @ xs + 0.3 + mu

    def fun(x):
        return 0.5 * x @ A @ x + b @ x, A @ x + b

    x0 = project_weighted_simplex(xs + 0.05 * rng.uniform(size=n), np.ones(n))
    res = minimize_simplex(fun, x0, hessp=lambda x, v: A @ v, options={"tol": 1e-12})
    assert res.success, res.message
    assert np.abs(res.x - xs).max() < 1e-10


def kink_problem(n, K, seed):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(K, n))
    c = rng.normal(size=K)
    Q = np.diag(rng.uniform(0.5, 2.0, n))

    def fun(x):
        v = A @ x + c
        j = int(np.argmax(v))
        return v[j] + 0.5 * x @ Q @ x, A[j] + Q @ x

    # reference: min t + 1/2 x'Qx  s.t.  A x + c <= t, x in the simplex (a convex QP)
    cons = [{"type": "ineq", "fun": lambda z: z[n] - (A @ z[:n] + c),
             "jac": lambda z: np.hstack([-A, np.ones((K, 1))])},
            {"type": "eq", "fun": lambda z: z[:n].sum() - 1.0,
             "jac": lambda z: np.append(np.ones(n), 0.0)[None, :]}]
    z0 = np.append(np.full(n, 1.0 / n), np.max(A @ np.full(n, 1.0 / n) + c))
    ref = minimize(lambda z: z[n] + 0.5 * z[:n] @ Q @ z[:n], z0,
                   jac=lambda z: np.append(Q @ z[:n], 1.0), constraints=cons,
                   bounds=[(0, None)] * n + [(None, None)], method="SLSQP",
                   options={"ftol": 1e-15, "maxiter": 1000})
    assert ref.success
    return fun, (lambda x, v: Q @ v), ref.x[:n], ref.fun


@pytest.mark.parametrize("seed", [1, 3])
def test_kink_problem_converges_to_known_minimizer(seed):
    n = 6
    fun, hessp, xs, fs = kink_problem(n, 8, seed)
    res = minimize_simplex(fun, n=n, hessp=hessp, options={"tol": 1e-8, "max_iter": 300})
    assert res.success, res.message
    assert res.fun - fs <= 1e-8 * max(1.0, abs(fs))
    assert np.abs(res.x - xs).max() < 1e-4


# ----------------------------------------------------------------------------
# interface: contract of hessp, bad output, path following
# ----------------------------------------------------------------------------
def test_hessp_called_only_right_after_fun_at_the_iterate():
    fun0, hp0, xs = conditioned_quadratic(15, 1e4, seed=3, n_zero=5)
    last = {}

    def fun(x):
        last["x"] = x.copy()
        return fun0(x)

    def hessp(x, v):
        assert np.array_equal(x, last["x"])
        return hp0(x, v)

    # a small Delta0 forces rejected steps (fun evaluated elsewhere before the next hessp)
    res = minimize_simplex(fun, n=15, hessp=hessp, options={"Delta0": 1e-2, "convex": True})
    assert res.success, res.message


def test_bad_hessp_output():
    fun, _, _ = conditioned_quadratic(6, 10.0, seed=0)
    with pytest.raises(ValueError, match="hessp"):
        minimize_simplex(fun, n=6, hessp=lambda x, v: np.ones(7))
    with pytest.raises(ValueError, match="hessp"):
        minimize_simplex(fun, n=6, hessp=lambda x, v: "no")
    with pytest.raises(ValueError, match="hessp"):
        minimize_simplex(fun, n=6, hessp=3.0)
    res = minimize_simplex(fun, n=6, hessp=lambda x, v: np.full(6, np.nan))
    assert res.status == 3 and not res.success
    assert "hessp" in res.message


def test_bad_new_options():
    fun, hp, _ = conditioned_quadratic(6, 10.0, seed=0)
    for opts in ({"fw_rtol": 0.0}, {"fw_floor": -1.0}, {"cg_rtol": 1.5}, {"cg_maxiter": 0},
                 {"newton_minor": 0}, {"subproblem": "pdas"}):
        with pytest.raises(ValueError, match=list(opts)[0]):
            minimize_simplex(fun, n=6, hessp=hp, options=opts)


def test_convex_stop_reports_failure_honestly():
    """A convex f with min f = 0 and fw_floor = 0 cannot meet a relative gap: status 1, not 0."""
    n = 5

    def fun(x):
        r = x - 1.0 / n
        return 0.5 * r @ r, r.copy()

    x0 = project_weighted_simplex(np.arange(n, dtype=float), np.ones(n))
    res = minimize_simplex(fun, x0, hessp=lambda x, v: v, options={"convex": True, "max_iter": 5})
    # f(x) -> 0 = min f: the relative certificate fw_gap <= 1e-8 |f| is out of reach
    # (fw_gap >= f - min f = f); success only if the gap is exactly 0
    assert res.success == (res.fw_gap == 0.0)
    assert res.status in (0, 1, 2)
    res = minimize_simplex(fun, x0, hessp=lambda x, v: v,
                           options={"convex": True, "fw_floor": 1.0, "fw_rtol": 1e-12})
    assert res.success and res.fw_gap <= 1e-12 and np.abs(res.x - 1.0 / n).max() < 1e-10


def test_path_with_hessp_triples():
    def factory(t):
        fun, hp, xs = conditioned_quadratic(10, 10.0 ** t, seed=2, n_zero=4)
        return fun, None, hp

    res = minimize_simplex_path(factory, [2, 4, 6], n=10, options={"convex": True})
    assert res.success
    assert res.results[0].nhev > 0
    assert all(r.stationarity_measure == "fw_gap" for r in res.results)


def test_piecewise_linear_weighted_kink_with_zero_hessian():
    """max of affine functions on a weighted simplex (the instance of
    test_trust_region.test_weighted_simplex_kink): with its exact Hessian (zero) the
    bundle-Newton step is the cutting-plane step and the LP minimizer is reached."""
    from test_trust_region import max_affine

    w = np.array([0.5, 1.0, 2.0, 1.5, 0.8])
    fun, xs, fs, *_ = max_affine(5, 8, 3, w=w, s=1.7)
    res = minimize_simplex(fun, weights=w, mass=1.7, hessp=lambda x, v: np.zeros_like(v),
                           options={"tol": 1e-9, "max_iter": 300})
    assert res.success, res.message
    assert res.fun - fs <= 1e-12 * max(1.0, abs(fs))
    assert np.abs(res.x - xs).max() < 1e-8
    assert on_simplex(res.x, w, 1.7)


# ----------------------------------------------------------------------------
# the active-set subproblem solver (many bounds fixed per face)
# ----------------------------------------------------------------------------
def smoothing_quadratic(n, seed=0):
    """f = 1/2 x'Hx + b'x with H = (L + I)^{-1}, L the 1D Dirichlet Laplacian on n cells.

    H smooths like the reduced Hessians of the control problems; the minimizer x* (known
    from the KKT conditions, as in :func:`conditioned_quadratic`) is positive on the middle
    two fifths of the interval and zero elsewhere (multipliers 1e-3 |t - 1/2| there).
    """
    rng = np.random.default_rng(seed)
    h = 1.0 / n
    L = (np.diag(np.full(n, 2.0)) - np.diag(np.ones(n - 1), 1) - np.diag(np.ones(n - 1), -1)) / h**2
    H = np.linalg.inv(L + np.eye(n))
    H = 0.5 * (H + H.T)
    t = (np.arange(n) + 0.5) * h
    xs = np.where(np.abs(t - 0.5) < 0.2, 1.0 + 0.5 * np.sin(7 * t), 0.0)
    xs /= xs.sum()
    mu = np.where(xs == 0, rng.uniform(0.5, 1.5, n) * 1e-3 * np.abs(t - 0.5), 0.0)
    b = -H @ xs + 0.3 + mu

    def fun(x):
        return 0.5 * x @ H @ x + b @ x, H @ x + b

    return fun, (lambda x, v: H @ v), xs, H, b


@pytest.mark.parametrize("n", [100, 400])
def test_active_set_subproblem_finds_the_minimizer_of_a_smoothing_quadratic(n):
    fun, hessp, xs, H, _ = smoothing_quadratic(n)
    res = minimize_simplex(fun, n=n, hessp=hessp,
                           options={"convex": True, "fw_rtol": 1e-10, "subproblem": "active-set"})
    assert res.success, res.message
    assert res.fw_gap <= 1e-10 * abs(res.fun)
    assert res.fun - fun(xs)[0] <= res.fw_gap + 1e-15
    # forward error of the ill-conditioned system (cond(H) ~ 4 n^2 / pi^2)
    assert np.abs(res.x - xs).max() <= 1e-4 * xs.max()
    assert np.array_equal(res.x <= 1e-12, xs == 0)
    assert res.nit <= 8


def test_active_set_candidate_is_feasible_and_decreases_the_model():
    from femot.optim._newton import active_set_newton, projected_newton
    from femot.optim.options import TrustRegionOptions

    n = 200
    _, _, _, H, b = smoothing_quadratic(n, seed=3)
    rng = np.random.default_rng(3)
    x = rng.uniform(0.0, 1.0, n)
    x[rng.random(n) < 0.3] = 0.0
    x /= x.sum()
    g = H @ x + b
    o = TrustRegionOptions(subproblem="active-set").resolved(n)
    calls = []

    def Hv(v):
        calls.append(1)
        return H @ v

    def q(d):
        return g @ d + 0.5 * d @ H @ d

    for Delta in (1e-3, 0.05, 10.0):
        a, Ha, info = active_set_newton(x, g, Hv, Delta, None, 1.0, o, 1e-8)
        assert np.all(x + a >= -1e-15) and abs(a.sum()) <= 1e-13
        assert np.linalg.norm(a) <= Delta * (1 + 1e-12)
        np.testing.assert_allclose(Ha, H @ a, atol=1e-12 * np.abs(H).max())
        assert q(a) < 0.0
        assert info["minor"] >= 1 and info["cg"] >= 1
    # without the ball: the QP's minimizer over the simplex (SLSQP), to a few digits, in few faces
    ref = minimize(lambda d: q(d), np.zeros(n), jac=lambda d: g + H @ d, method="SLSQP",
                   bounds=[(-xi, None) for xi in x], constraints=[{"type": "eq", "fun": lambda d: d.sum()}],
                   options={"ftol": 1e-16, "maxiter": 1000})
    assert ref.success
    a, _, info = active_set_newton(x, g, Hv, 10.0, None, 1.0, o, 1e-10)
    assert q(a) <= q(ref.x) + 1e-6 * abs(q(ref.x))
    assert info["reason"] == "converged" and info["minor"] <= 10
    # the projected method reaches the same model value
    a_p, _, _ = projected_newton(x, g, Hv, 10.0, None, 1.0, o, 1e-10)
    assert q(a_p) == pytest.approx(q(a), rel=1e-4)
