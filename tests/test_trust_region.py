"""Tests of Algorithm 4.1 of Part III (femot.optim.trust_region, method="trust-region") and path following."""
import dataclasses

import numpy as np
import pytest
from scipy.optimize import OptimizeResult, linprog, minimize

from femot.optim import (
    BundleOptions,
    SimplexTRResult,
    TrustRegionOptions,
    minimize_simplex,
    minimize_simplex_path,
    project_weighted_simplex,
    theta_R,
)
from femot.optim.trust_region import _bfgs_update, _dogleg


# ----------------------------------------------------------------------------
# test problems with independently known minimizers
# ----------------------------------------------------------------------------
def kkt_quadratic(n, seed, n_zero=0, w=None, s=1.0):
    """f = 1/2 x'Ax + b'x with a minimizer x* built from the KKT conditions.

    A is SPD; x* has ``n_zero`` vanishing entries; b is chosen so that
    grad f(x*) = lam*w + mu with mu > 0 exactly on the zero set, which (by strict
    convexity) makes x* the unique minimizer over {x >= 0, <w,x> = s}.
    """
    rng = np.random.default_rng(seed)
    w = np.ones(n) if w is None else w
    M = rng.normal(size=(n, n))
    A = M @ M.T / n + 0.1 * np.eye(n)
    xs = rng.uniform(0.5, 1.5, n)
    xs[:n_zero] = 0.0
    xs *= s / (w @ xs)
    mu = np.zeros(n)
    mu[:n_zero] = rng.uniform(0.1, 1.0, n_zero)
    b = -A @ xs + rng.normal() * w + mu

    def fun(x):
        return 0.5 * x @ A @ x + b @ x, A @ x + b

    return fun, xs, A, b


def slsqp_reference(A, b, w, s):
    n = b.size
    res = minimize(lambda x: 0.5 * x @ A @ x + b @ x, np.full(n, s / w.sum()),
                   jac=lambda x: A @ x + b, method="SLSQP", bounds=[(0, None)] * n,
                   constraints=[{"type": "eq", "fun": lambda x: w @ x - s, "jac": lambda x: w}],
                   options={"ftol": 1e-14, "maxiter": 1000})
    return res.x


def max_affine(n, K, seed, w=None, s=1.0):
    """f(x) = max_k <a_k, x> + c_k with the exact minimizer from an LP (HiGHS).

    Also checks that the LP minimizer is unique (min and max of every
    coordinate over the optimal face coincide), so that "reaching x*" is
    meaningful.
    """
    rng = np.random.default_rng(seed)
    w = np.ones(n) if w is None else w
    a = rng.normal(size=(K, n))
    c = 0.3 * rng.normal(size=K)
    obj = np.r_[np.zeros(n), 1.0]
    A_ub = np.hstack([a, -np.ones((K, 1))])
    A_eq = np.r_[w, 0.0][None, :]
    bounds = [(0, None)] * n + [(None, None)]
    lp = linprog(obj, A_ub=A_ub, b_ub=-c, A_eq=A_eq, b_eq=[s], bounds=bounds, method="highs")
    assert lp.status == 0
    xs, fs = lp.x[:n], lp.fun
    for i in range(n):
        for sign in (1.0, -1.0):
            e = np.zeros(n + 1)
            e[i] = sign
            r = linprog(e, A_ub=np.vstack([A_ub, obj]), b_ub=np.r_[-c, fs + 1e-11], A_eq=A_eq,
                        b_eq=[s], bounds=bounds, method="highs")
            assert abs(r.x[i] - xs[i]) < 1e-8, "LP minimizer not unique; pick another seed"

    def fun(x):
        v = a @ x + c
        k = int(np.argmax(v))  # ONE subgradient: the first active piece
        return v[k], a[k]

    return fun, xs, fs, a, c


def sharp_kink(n, seed, n_zero=0):
    """A max of n - n_zero affine pieces that all meet at a prescribed x*.

    The pieces are built so that a convex combination of their slopes lies in
    -N(x*) (the normal cone of the simplex at x*), so x* is the minimizer and
    f is V-shaped there; three extra inactive pieces are added.
    """
    rng = np.random.default_rng(seed)
    xs = rng.uniform(0.5, 1.5, n)
    xs[:n_zero] = 0.0
    xs /= xs.sum()
    K = n - n_zero
    lam = rng.uniform(0.5, 1.5, K)
    lam /= lam.sum()
    a = rng.normal(size=(K, n))
    nu = np.zeros(n)
    nu[:n_zero] = rng.uniform(0.5, 1.5, n_zero)
    a[-1] = (rng.normal() + nu - lam[:-1] @ a[:-1]) / lam[-1]
    c = -a @ xs
    ae = rng.normal(size=(3, n))
    A = np.vstack([a, ae])
    C = np.r_[c, -ae @ xs - rng.uniform(0.2, 1.0, 3)]

    def fun(x):
        v = A @ x + C
        k = int(np.argmax(v))
        return v[k], A[k]

    return fun, xs


def on_simplex(x, w, s, tol=1e-12):
    return np.all(x >= 0) and abs(w @ x - s) <= tol * max(1.0, s)


# ----------------------------------------------------------------------------
# (a) strictly convex quadratics
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("n,n_zero,seed", [(5, 0, 1), (12, 0, 2), (25, 0, 3),
                                           (5, 2, 4), (12, 5, 5), (25, 10, 6)])
def test_quadratic_interior_and_face(n, n_zero, seed):
    fun, xs, A, b = kkt_quadratic(n, seed, n_zero)
    iterates = []
    res = minimize_simplex(fun, n=n, options={"tol": 1e-10},
                           callback=lambda r: iterates.append(r.x))
    assert res.success and res.status == 0, res.message
    assert np.abs(res.x - xs).max() < 1e-6
    assert np.abs(xs - slsqp_reference(A, b, np.ones(n), 1.0)).max() < 1e-6  # independent check
    assert res.stationarity <= 1e-10
    assert theta_R(res.x, fun(res.x)[1], np.sqrt(n)) == pytest.approx(res.stationarity, abs=1e-15)
    assert all(on_simplex(x, np.ones(n), 1.0) for x in iterates)
    # every BFGS-phase step satisfies the constrained Cauchy decrease of Step 8
    for h in res.history:
        if h["pred"] is not None:
            assert h["pred"] >= h["cauchy"] * (1 - 1e-10)


def test_quadratic_defaults_follow_part3_section_4_2():
    fun, xs, *_ = kkt_quadratic(8, 11)
    res = minimize_simplex(fun, n=8)
    o = res.options
    assert (o.R, o.Delta_min, o.eta1, o.eta2, o.beta1, o.beta2, o.nu,
            o.Delta0, o.tol, o.max_iter) == (np.sqrt(8), 1e-6, 0.1, 0.9, 0.5, 1.5, 1.0,
                                                     1.0, 1e-5, 200)
    assert res.history[0]["f"] == fun(np.full(8, 1 / 8))[0]  # x0 = uniform
    assert res.success and res.stationarity <= 1e-5


# ----------------------------------------------------------------------------
# (b) nonsmooth: kinks as minimizers
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_max_of_affine_reaches_lp_minimizer(seed):
    fun, xs, fs, a, c = max_affine(5, 8, seed)
    res = minimize_simplex(fun, n=5, options={"tol": 1e-9, "max_iter": 300})
    assert res.success, res.message
    assert np.abs(res.x - xs).max() < 1e-6
    assert res.fun - fs < 1e-6
    # at a kink a single subgradient never certifies stationarity: the stop comes
    # from psi_R over the collected Bouligand subgradients (Steps 11-12)
    assert res.stationarity_measure == "psi"
    assert res.theta > 1e-3
    assert any(h["model"] == "bouligand" for h in res.history)


@pytest.mark.parametrize("n,n_zero,seed", [(3, 0, 0), (3, 0, 1), (3, 0, 2), (4, 1, 0),
                                           (4, 1, 1), (5, 2, 1)])
def test_sharp_kink_minimizer(n, n_zero, seed):
    fun, xs = sharp_kink(n, seed, n_zero)
    res = minimize_simplex(fun, n=n, options={"tol": 1e-9, "max_iter": 300})
    assert res.success, res.message
    assert np.abs(res.x - xs).max() < 1e-6


def test_without_bouligand_phase_the_kink_is_not_certified():
    """The safeguard matters: with Delta_min tiny, theta_R(x, g) stays O(1) at the kink."""
    fun, xs, *_ = max_affine(5, 8, 0)
    res = minimize_simplex(fun, n=5, options={"tol": 1e-9, "max_iter": 150, "Delta_min": 1e-300,
                                              "radius_floor": 1e-200, "bundle_size": 0})
    assert not res.success
    assert res.theta > 1e-3
    assert all(h["model"] != "bouligand" for h in res.history)


def test_user_collected_subgradients_are_used():
    fun, xs, fs, a, c = max_affine(5, 8, 2)
    calls = []

    def collect(x, radius):
        calls.append(radius)
        v = a @ x + c
        return [a[k] for k in np.nonzero(v >= v.max() - 10 * radius * np.abs(a).max())[0]]

    res = minimize_simplex(fun, n=5, options={"tol": 1e-9, "max_iter": 300},
                           collect_subgradients=collect)
    # called only for the Bouligand model (Delta < Delta_min, or a forecast switch)
    assert calls and set(calls) <= {h["Delta"] for h in res.history if h["model"] == "bouligand"}
    assert res.success and np.abs(res.x - xs).max() < 1e-6


# ----------------------------------------------------------------------------
# (c) weighted simplex
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("n,n_zero", [(6, 0), (6, 2), (15, 6)])
def test_weighted_simplex_quadratic(n, n_zero):
    rng = np.random.default_rng(40 + n)
    w = rng.uniform(0.2, 3.0, n)
    s = 2.5
    fun, xs, A, b = kkt_quadratic(n, 7, n_zero, w=w, s=s)
    iterates = []
    res = minimize_simplex(fun, weights=w, mass=s, options={"tol": 1e-10},
                           callback=lambda r: iterates.append(r.x))
    assert res.success, res.message
    assert np.abs(res.x - xs).max() < 1e-6
    assert np.abs(xs - slsqp_reference(A, b, w, s)).max() < 1e-6
    assert all(on_simplex(x, w, s) for x in iterates)
    assert res.history[0]["f"] == fun(np.full(n, s / w.sum()))[0]  # uniform density


@pytest.mark.parametrize("R", [0.05, 0.3])
def test_weighted_simplex_with_active_ball(R):
    """R below the diameter: theta_R and psi_R use the ball-constrained programs."""
    w = np.random.default_rng(3).uniform(0.3, 2.0, 8)
    fun, xs, *_ = kkt_quadratic(8, 9, 3, w=w, s=1.5)
    res = minimize_simplex(fun, weights=w, mass=1.5, options={"tol": 1e-10, "R": R})
    assert res.options.R == R
    assert res.success and np.abs(res.x - xs).max() < 1e-6
    assert res.theta == pytest.approx(theta_R(res.x, res.jac, R, weights=w, mass=1.5), abs=1e-16)


def test_weighted_simplex_kink():
    w = np.array([0.5, 1.0, 2.0, 1.5, 0.8])
    fun, xs, fs, *_ = max_affine(5, 8, 3, w=w, s=1.7)
    res = minimize_simplex(fun, weights=w, mass=1.7, options={"tol": 1e-9, "max_iter": 300})
    assert res.success, res.message
    assert np.abs(res.x - xs).max() < 1e-6
    assert on_simplex(res.x, w, 1.7)


# ----------------------------------------------------------------------------
# (d) non-convergence and other failure statuses are reported
# ----------------------------------------------------------------------------
def test_max_iter_is_reported():
    fun, *_ = kkt_quadratic(10, 1)
    res = minimize_simplex(fun, n=10, options={"max_iter": 2, "tol": 1e-12})
    assert not res.success and res.status == 1
    assert "max_iter" in res.message and res.nit == 2
    assert res.stationarity > 1e-12


def test_wrong_subgradient_collapses_the_radius():
    """An oracle returning an ascent direction: every step fails -> status 2."""
    def fun(x):
        return 0.5 * x @ x, -(x - 0.3)  # not a subgradient of f

    res = minimize_simplex(fun, n=4, x0=[0.7, 0.1, 0.1, 0.1],
                           options={"radius_floor": 1e-9, "n_probe": 1})
    assert not res.success and res.status == 2
    assert "radius" in res.message


def test_nan_during_iterations_is_reported():
    def fun(x):
        if x[0] < 0.2:
            return np.nan, np.zeros(3)
        return x[0], np.array([1.0, 0.0, 0.0])

    res = minimize_simplex(fun, n=3)
    assert not res.success and res.status == 3
    assert "non-finite" in res.message


def test_callback_can_stop():
    fun, *_ = kkt_quadratic(6, 2)
    res = minimize_simplex(fun, n=6, options={"tol": 1e-12}, callback=lambda r: r.nit >= 3)
    assert res.status == 4 and not res.success and res.nit == 3


# ----------------------------------------------------------------------------
# (e) bad input names the argument
# ----------------------------------------------------------------------------
def quad(x):
    return 0.5 * x @ x, x


@pytest.mark.parametrize("kwargs,match", [
    (dict(x0=[0.5, 0.6, -0.1]), "x0"),            # negative entry
    (dict(x0=[0.5, 0.6, 0.1]), "x0"),             # wrong mass
    (dict(x0=[[0.5, 0.5], [0.0, 0.0]]), "x0"),    # not a vector
    (dict(n=3, weights=[1.0, 2.0]), "n"),          # n does not match weights
    (dict(weights=[1.0, -2.0, 1.0]), "weights"),
    (dict(weights=[1.0, 2.0, np.inf]), "weights"),
    (dict(n=3, mass=0.0), "mass"),
    (dict(n=3, options={"eta1": 0.95}), "eta1"),
    (dict(n=3, options={"beta1": 1.5}), "beta1"),
    (dict(n=3, options={"nu": 2.0}), "nu"),
    (dict(n=3, options={"Delta0": 1e-9}), "Delta0"),
    (dict(n=3, options={"max_iter": -1}), "max_iter"),
    (dict(n=3, options={"max_iters": 10}), "max_iters"),
    (dict(n=3, options=[("tol", 1)]), "options"),
    (dict(), "x0, weights or n"),
])
def test_bad_input_raises_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        minimize_simplex(quad, **kwargs)


# What Algorithm 4.1 sees with the default options on the standard simplex of dimension 5: the
# values of Part III, Sec. 4.2 and the derived R, Delta_max, psi_stop_radius and n_probe (recorded
# from the dict-based option parser that TrustRegionOptions replaced: the same values and types).
RESOLVED_DEFAULTS_N5 = {
    "R": 2.23606797749979, "Delta0": 1.0, "Delta_min": 1e-06, "Delta_max": 1.4142135623730951, "eta1": 0.1,
    "eta2": 0.9, "beta1": 0.5, "beta2": 1.5, "nu": 1.0, "tol": 1e-05, "max_iter": 200, "bfgs_reset": 100,
    "H0": 1.0, "reset_scaling": True, "max_cond": 1e12, "psi_stop_radius": 1e-06, "bundle_size": 50,
    "bouligand_H": "identity", "forecast_switch": True, "radius_floor": 1e-14, "n_coord": 0, "n_random": 2,
    "n_probe": 10, "seed": 0, "subspace_step": True, "convex": False, "fw_rtol": 1e-08, "fw_floor": 0.0,
    "cg_maxiter": None, "cg_rtol": 0.01, "newton_minor": 50, "precond": None, "subproblem": "projected",
    "verbose": False,
}


@pytest.mark.parametrize("options, n, weights, changed", [
    ({}, 5, None, {}),
    ({"tol": 1e-9, "max_iter": 300, "Delta_min": 1e-8, "R": 3, "bfgs_reset": None}, 10, None,
     {"R": 3.0, "tol": 1e-9, "max_iter": 300, "Delta_min": 1e-8, "psi_stop_radius": 1e-8, "bfgs_reset": 0,
      "n_probe": 15}),
    ({"convex": True, "fw_rtol": 1e-10, "fw_floor": 1, "seed": 3, "H0": 2, "bouligand_H": "bfgs",
      "subspace_step": 0}, 6, np.arange(1.0, 7.0),
     {"R": 2.449489742783178, "Delta_max": 1.118033988749895, "n_probe": 11, "convex": True, "fw_rtol": 1e-10,
      "fw_floor": 1.0, "seed": 3, "H0": 2.0, "bouligand_H": "bfgs", "subspace_step": False}),
])
def test_resolved_options_values_and_types(options, n, weights, changed):
    expected = {**RESOLVED_DEFAULTS_N5, **changed}
    got = dataclasses.asdict(TrustRegionOptions.coerce(options).resolved(n, weights))
    assert got == expected
    assert all(type(got[k]) is type(v) for k, v in expected.items())


def test_options_dataclass_mapping_or_none():
    fun, *_ = kkt_quadratic(6, 2)
    a = minimize_simplex(fun, n=6, options={"tol": 1e-9, "max_iter": 50})
    b = minimize_simplex(fun, n=6, options=TrustRegionOptions(tol=1e-9, max_iter=50))
    assert np.array_equal(a.x, b.x) and a.nfev == b.nfev and a.options == b.options
    assert minimize_simplex(fun, n=6).options == TrustRegionOptions().resolved(6)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['kinks'\].*valid: \['Delta0'"):
        minimize_simplex(fun, n=6, options={"kinks": "bundle"})
    with pytest.raises(ValueError, match="TrustRegionOptions"):
        minimize_simplex(fun, n=6, options=BundleOptions())
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrustRegionOptions().tol = 1.0  # type: ignore[misc]


def test_x0_within_tolerance_is_accepted():
    res = minimize_simplex(quad, [0.5 + 1e-10, 0.5, 0.0])
    assert res.success and on_simplex(res.x, np.ones(3), 1.0)


@pytest.mark.parametrize("bad_fun,match", [
    (lambda x: 1.0, "pair"),
    (lambda x: (np.ones(2), x), "scalar"),
    (lambda x: (1.0, np.ones(4)), "shape"),
    (lambda x: (np.nan, x), "non-finite"),
    (lambda x: (1.0, np.full(3, np.inf)), "non-finite"),
])
def test_bad_oracle_output(bad_fun, match):
    with pytest.raises(ValueError, match=match):
        minimize_simplex(bad_fun, n=3)


def test_fun_must_be_callable():
    with pytest.raises(ValueError, match="fun"):
        minimize_simplex(3.0, n=3)


# ----------------------------------------------------------------------------
# (f) history, table, verbose
# ----------------------------------------------------------------------------
def test_history_and_table_are_well_formed(capsys):
    fun, xs, *_ = max_affine(5, 8, 1)
    res = minimize_simplex(fun, n=5, options={"tol": 1e-9, "max_iter": 300, "verbose": True})
    assert isinstance(res, SimplexTRResult) and isinstance(res, OptimizeResult)
    keys = {"k", "f", "theta", "psi", "Delta", "rho", "step_norm", "model", "accepted"}
    H = res.history
    assert all(keys <= set(h) for h in H)
    steps = [h for h in H if h["rho"] is not None]
    assert len(steps) == res.nit
    assert [h["k"] for h in steps] == list(range(res.nit))
    assert {h["model"] for h in steps} <= {"bfgs", "bouligand"}
    assert all(h["psi"] is not None for h in H if h["model"] == "bouligand")
    assert all(h["psi"] is None for h in H if h["model"] == "bfgs")
    # f is nonincreasing along accepted steps, radius update follows Step 14
    fs = [h["f"] for h in H]
    assert all(f2 <= f1 + 1e-15 for f1, f2 in zip(fs, fs[1:]))
    for h, nxt in zip(steps, H[1:]):
        if h["rho"] <= 0.1:
            assert not h["accepted"] and nxt["Delta"] == pytest.approx(0.5 * h["Delta"])
        else:
            assert h["accepted"] and nxt["Delta"] >= max(1e-6, h["Delta"]) * (1 - 1e-15)
    assert H[-1]["theta"] == pytest.approx(res.theta)
    table = res.table()
    lines = table.splitlines()
    assert len(lines) == len(H) + 1
    for word in ("k", "f", "theta", "Delta", "rho", "|d|", "model"):
        assert word in lines[0]
    out = capsys.readouterr().out.splitlines()
    assert out == lines  # verbose printed exactly the table, row by row


def test_nfev_counts_every_oracle_call():
    calls = []
    fun0, *_ = max_affine(5, 8, 0)

    def fun(x):
        calls.append(1)
        return fun0(x)

    res = minimize_simplex(fun, n=5, options={"tol": 1e-9, "max_iter": 300})
    assert res.nfev == len(calls)


# ----------------------------------------------------------------------------
# path following
# ----------------------------------------------------------------------------
def test_path_following_warm_starts():
    rng = np.random.default_rng(5)
    n = 6
    M = rng.normal(size=(n, n))
    A = M @ M.T / n + 0.2 * np.eye(n)
    targets = {}
    starts = []

    def factory(gamma):
        # f_gamma(x) = 1/2 x'Ax - <A c_gamma, x>; minimizer P_A(c_gamma) on the simplex
        cg = np.full(n, 1.0 / n) + gamma * np.linspace(-1, 1, n) / n
        targets[gamma] = slsqp_reference(A, -A @ cg, np.ones(n), 1.0)
        first = []

        def fun(x):
            if not first:
                first.append(x.copy())
                starts.append(x.copy())
            return 0.5 * x @ A @ x - (A @ cg) @ x, A @ x - A @ cg

        return fun

    path = [1.0, 0.5, 0.25, 0.1]
    res = minimize_simplex_path(factory, path, n=n, options={"tol": 1e-10})
    assert res.success and len(res.results) == len(path)
    for gamma, r in zip(path, res.results):
        assert np.abs(r.x - targets[gamma]).max() < 1e-6
    for i in range(1, len(path)):
        np.testing.assert_allclose(starts[i], res.results[i - 1].x, rtol=0, atol=1e-15)
    assert res.nit == sum(r.nit for r in res.results)
    assert len(res.table().splitlines()) == len(path) + 1
    with pytest.raises(ValueError, match="path"):
        minimize_simplex_path(factory, [], n=n)


# ----------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------
def test_bfgs_update_secant_and_damping():
    rng = np.random.default_rng(0)
    n = 5
    H = np.eye(n)
    s = rng.normal(size=n)
    B = np.diag(rng.uniform(1, 3, n))
    y = B @ s  # positive curvature: plain BFGS, secant equation H+ s = y
    H1, tag = _bfgs_update(H, s, y)
    assert tag == "bfgs"
    np.testing.assert_allclose(H1 @ s, y, rtol=1e-12)
    np.testing.assert_allclose(H1, H1.T)
    # negative curvature: Powell damping keeps H symmetric positive definite
    H2, tag = _bfgs_update(H1, s, -y)
    assert tag == "damped"
    assert np.linalg.eigvalsh(H2)[0] > 0
    assert s @ H2 @ s == pytest.approx(0.2 * s @ H1 @ s, rel=1e-10)


def test_dogleg():
    rng = np.random.default_rng(1)
    n = 6
    M = rng.normal(size=(n, n))
    H = M @ M.T + np.eye(n)
    g = rng.normal(size=n)
    pN = -np.linalg.solve(H, g)
    np.testing.assert_allclose(_dogleg(g, H, 2 * np.linalg.norm(pN)), pN, rtol=1e-10)
    for Delta in (0.01, 0.5 * np.linalg.norm(pN)):
        p = _dogleg(g, H, Delta)
        assert np.linalg.norm(p) == pytest.approx(Delta, rel=1e-10)
        assert g @ p + 0.5 * p @ H @ p < 0
        # no worse than the Cauchy point on the boundary-limited steepest descent
        t = min(Delta / np.linalg.norm(g), (g @ g) / (g @ H @ g))
        pc = -t * g
        assert g @ p + 0.5 * p @ H @ p <= g @ pc + 0.5 * pc @ H @ pc + 1e-14


def test_iterates_stay_feasible_on_random_nonsmooth_problem():
    w = np.array([1.0, 0.5, 2.0, 1.0])
    s = 3.0
    fun, *_ = max_affine(4, 6, 5, w=w, s=s)
    xs = []
    minimize_simplex(fun, weights=w, mass=s, options={"max_iter": 60},
                     callback=lambda r: xs.append(r.x))
    assert xs and all(on_simplex(x, w, s) for x in xs)
    np.testing.assert_allclose(project_weighted_simplex(xs[-1], w, s), xs[-1], atol=1e-14)
