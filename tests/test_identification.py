"""Transportation identification (Part III §4): objective, reduced subgradient, solver, instances."""
import os

import numpy as np
import pytest
import scipy.sparse as sp

from femot import exact_ot
from femot.problems.identification import (
    TransportIdentification,
    as_marginal_mask,
    as_plan_mask,
    band_mask,
    identification_errors,
)
from femot.problems.instances import (
    experiment2_observed_rows,
    identification_instance,
    load_instance,
    problem_from_instance,
    save_instance,
)


def interior_point(n, rng, mass=1.0):
    x = 0.5 + rng.random(n)
    return mass * x / x.sum()


def tangent(n, rng):
    d = rng.standard_normal(n)
    return d - d.mean()


def _same_pattern(A, B):
    return A.nnz == B.nnz and np.array_equal(A.indptr, B.indptr) and np.array_equal(A.indices, B.indices)


# --------------------------------------------------------------------------
# objective and subgradient
# --------------------------------------------------------------------------
def test_objective_matches_definition_with_masks():
    """J = 1/2 |pi - pi_d|_D^2 + lam/2 |mu1 - mu1_d|_D1^2 (Part III eq. (4.1)), entries outside masks ignored."""
    rng = np.random.default_rng(1)
    n1, n2 = 7, 9
    c = rng.random((n1, n2))
    mu2 = rng.random(n2)
    pi_d = rng.random((n1, n2))
    mu1_d = rng.random(n1)
    D = rng.random((n1, n2)) < 0.5
    D1 = np.arange(n1) % 2 == 0
    P = TransportIdentification(c, mu2, pi_d, mu1_d, D=D, D1=D1, lam=0.7, gamma=1e-2)
    pi = rng.random((n1, n2)) * (rng.random((n1, n2)) < 0.4)
    mu1 = rng.random(n1)
    expected = 0.5 * np.sum((D * (pi - pi_d)) ** 2) + 0.35 * np.sum((D1 * (mu1 - mu1_d)) ** 2)
    assert P.objective(pi, mu1) == pytest.approx(expected, rel=1e-13)
    assert P.objective(sp.csr_matrix(pi), mu1) == pytest.approx(expected, rel=1e-13)
    # data outside the observation domains does not matter
    P2 = TransportIdentification(c, mu2, np.where(D, pi_d, 123.0), np.where(D1, mu1_d, -5.0), D=D, D1=D1, lam=0.7,
                                 gamma=1e-2)
    assert P2.objective(pi, mu1) == pytest.approx(expected, rel=1e-13)


def test_reduced_value_is_objective_of_lower_level_plan():
    d = identification_instance(10, 3)
    P = problem_from_instance(d, gamma=1e-2)
    x = interior_point(10, np.random.default_rng(0))
    f, _ = P(x)
    low = P.lower_level(x)
    assert low.success
    # the plan solves the regularized dual system (Part III (3.1)): row sums + eps alpha = mu1
    assert np.allclose(np.asarray(low.plan.sum(1)).ravel() + P.eps * low.alpha, x, atol=1e-9)
    assert np.allclose(np.asarray(low.plan.sum(0)).ravel() + P.eps * low.beta, d["mu2_d"], atol=1e-9)
    assert f == pytest.approx(P.objective(low.plan, x), rel=1e-14)


@pytest.mark.parametrize("experiment,gamma,lam", [(1, 1e-2, 1.0), (2, 1e-3, 0.5), (1, 1e-4, 2.0)])
def test_reduced_gradient_matches_finite_differences(experiment, gamma, lam):
    """At differentiable points (Omega_0 empty) g = p1 + lam D1(mu1 - mu1_d) is the gradient (Prop. 3.14)."""
    rng = np.random.default_rng(experiment + int(1 / gamma))
    n = 12
    d = identification_instance(n, 5, experiment=experiment)
    P = problem_from_instance(d, gamma=gamma, lam=lam)
    checked = 0
    for _ in range(6):
        x = interior_point(n, rng)
        if P.lower_level(x).biactive()[0].size:
            continue
        f, g = P(x)
        for _ in range(2):
            v = tangent(n, rng)
            v /= np.linalg.norm(v)
            # f is smooth between kinks; a step of 1e-5 keeps the lower-level noise
            # (residual ~1e-11) far below the difference
            h = 1e-5
            fp, fm = P.value(x + h * v), P.value(x - h * v)
            # no kink inside the stencil: the same active pattern at both ends
            if not all(_same_pattern(P.lower_level(y).plan, P.lower_level(x).plan) for y in (x + h * v, x - h * v)):
                continue
            fd = (fp - fm) / (2 * h)
            assert fd == pytest.approx(g @ v, rel=1e-5, abs=1e-9 * np.linalg.norm(g))
            checked += 1
    assert checked >= 3


@pytest.mark.parametrize("experiment,gamma,lam", [(1, 1e-2, 1.0), (2, 1e-3, 0.5), (1, 1e-4, 2.0)])
def test_hessp_matches_finite_differences_of_the_gradient(experiment, gamma, lam):
    """hessp = S'^* [D o S' v] + lam D1 o v is the Hessian of f where S is differentiable.

    f is piecewise quadratic (S piecewise affine for eps > 0), so the central difference of
    the gradient along v equals H v exactly when no kink lies in the stencil; the only
    error is the lower-level solver's (tol 1e-10).  Masks (experiment 2) and lam enter.
    """
    rng = np.random.default_rng(10 * experiment + int(1 / gamma))
    n = 12
    d = identification_instance(n, 4, experiment=experiment)
    P = problem_from_instance(d, gamma=gamma, lam=lam)
    checked = 0
    for _ in range(8):
        x = interior_point(n, rng)
        if P.lower_level(x).biactive()[0].size:
            continue
        P(x)
        for _ in range(2):
            v = tangent(n, rng)
            v /= np.linalg.norm(v)
            Hv = P.hessp(x, v)
            h = 1e-5
            if not all(_same_pattern(P.lower_level(y).plan, P.lower_level(x).plan) for y in (x + h * v, x - h * v)):
                continue
            fd = (P(x + h * v)[1] - P(x - h * v)[1]) / (2 * h)
            # compare on the tangent space of the simplex (where the model lives); the
            # lower-level residual (~1e-10) / h adds ~1e-5 to fd, mostly along ones
            Tfd, THv = fd - fd.mean(), Hv - Hv.mean()
            assert np.allclose(THv, Tfd, rtol=0, atol=1e-5 * np.abs(Tfd).max()), (THv, Tfd)
            # symmetric positive semidefinite on the tangent space (Gauss-Newton form)
            u = tangent(n, rng)
            assert u @ P.hessp(x, v) == pytest.approx(v @ P.hessp(x, u), rel=1e-8, abs=1e-12)
            assert v @ Hv >= lam * np.sum(v[d["D1"]] ** 2 if "D1" in d else v ** 2) * (1 - 1e-8) - 1e-12
            checked += 1
    assert checked >= 3
    with pytest.raises(ValueError, match="v"):
        P.hessp(interior_point(n, rng), np.ones(n + 1))


def test_masks_enter_the_gradient_only_through_observed_entries():
    """Changing pi_d / mu1_d outside D / D1 changes neither f nor g."""
    d = identification_instance(10, 2, experiment=2)
    x = interior_point(10, np.random.default_rng(3))
    P = problem_from_instance(d, gamma=1e-2)
    pi_noise = d["pi_d"].toarray() + np.where(d["D"], 0.0, 7.0)
    mu_noise = d["mu1_d"] + np.where(d["D1"], 0.0, 3.0)
    Q = TransportIdentification(d["c_d"], d["mu2_d"], pi_noise, mu_noise, D=d["D"], D1=d["D1"], gamma=1e-2)
    (f1, g1), (f2, g2) = P(x), Q(x)
    assert f1 == pytest.approx(f2, rel=1e-14)
    assert np.allclose(g1, g2, rtol=1e-12, atol=1e-14)


def _kink_on_segment(d, gamma, x0, x1):
    """Bisect the segment for a point where one entry of the plan switches (a point of Omega_0 != {})."""
    c = d["c_d"]

    def solve(t):
        P = problem_from_instance(d, gamma=gamma)  # fresh: no warm-start dependence
        r = P.lower_level((1 - t) * x0 + t * x1)
        return P, r, r.alpha[:, None] + r.beta[None, :] - c

    ts = np.linspace(0.0, 1.0, 21)
    Zs = [solve(t)[2] for t in ts]
    for k in range(20):
        flip = np.argwhere((Zs[k] > 0) != (Zs[k + 1] > 0))
        if flip.shape[0] == 1:
            i, j = flip[0]
            a, b = ts[k], ts[k + 1]
            sa = np.sign(Zs[k][i, j])
            for _ in range(200):
                m = 0.5 * (a + b)
                P, r, Z = solve(m)
                if abs(Z[i, j]) <= 0.25 * r._ztol:
                    return P, m, (a, b) if sa > 0 else (b, a)
                if np.sign(Z[i, j]) == sa:
                    a = m
                else:
                    b = m
    return None


def test_bouligand_elements_are_one_sided_limits_of_gradients():
    """Part III Thm 3.12: at a kink, the elements for A = {} and A = Omega_0 are the gradients on either side."""
    n = 8
    d = identification_instance(n, 1)
    rng = np.random.default_rng(0)
    x0, x1 = interior_point(n, rng), interior_point(n, rng)
    found = _kink_on_segment(d, 1e-2, x0, x1)
    assert found is not None
    P, t, (t_on, t_off) = found
    x = (1 - t) * x0 + t * x1
    rows, cols = P.lower_level(x).biactive()
    assert rows.size == 1
    elems = P.bouligand_subgradients(x)
    assert len(elems) >= 2

    def grad_at(s):
        Q = problem_from_instance(d, gamma=1e-2)
        y = (1 - s) * x0 + s * x1
        assert Q.lower_level(y).biactive()[0].size == 0
        return Q(y)[1]

    h = 1e-7
    g_on = grad_at(t + h * np.sign(t_on - t))    # the switching entry is active here
    g_off = grad_at(t + h * np.sign(t_off - t))  # and inactive here
    jump = np.abs(g_on - g_off).max()
    assert jump > 1e-6  # a genuine kink
    dist_on = min(np.abs(e - g_on).max() for e in elems)
    dist_off = min(np.abs(e - g_off).max() for e in elems)
    assert dist_on < 1e-3 * jump and dist_off < 1e-3 * jump
    # A = {} gives the inactive side, A = Omega_0 the active side
    g_empty = P.value_and_subgradient(x, A=(np.zeros(0, int), np.zeros(0, int)))[1]
    g_full = P.value_and_subgradient(x, A=(rows, cols))[1]
    assert np.abs(g_empty - g_off).max() < 1e-3 * jump
    assert np.abs(g_full - g_on).max() < 1e-3 * jump


def test_bouligand_sets_have_outer_structure_and_are_empty_at_smooth_points():
    from femot.core.sensitivity import outer_structure

    d = identification_instance(10, 4)
    P = problem_from_instance(d, gamma=1e-2)
    x = interior_point(10, np.random.default_rng(2))
    assert P.lower_level(x).biactive()[0].size == 0
    assert P.bouligand_sets(x) == [] and P.bouligand_subgradients(x) == []
    # at the exact-transport point many entries are biactive
    y = d["mu1_true"]
    B = P.lower_level(y).biactive()
    for A in P.bouligand_sets(y):
        assert outer_structure(A, B)[0]


def test_warm_start_cache_and_result_independent_of_history():
    d = identification_instance(12, 6)
    P = problem_from_instance(d, gamma=1e-3)
    rng = np.random.default_rng(1)
    xs = [interior_point(12, rng) for _ in range(3)]
    vals = [P(x) for x in xs]
    n = P.lower.requests
    P(xs[-1])
    assert P.lower.requests == n  # cached
    Q = problem_from_instance(d, gamma=1e-3)
    f, g = Q(xs[0])  # cold start
    assert f == pytest.approx(vals[0][0], rel=1e-8)
    assert np.allclose(g, vals[0][1], rtol=1e-6, atol=1e-10)


# --------------------------------------------------------------------------
# solving
# --------------------------------------------------------------------------
def test_experiment1_small_instance_recovers_truth():
    d = identification_instance(10, 0)
    P = problem_from_instance(d, gamma=1e-4)
    res = P.solve()
    assert res.success and res.stationarity <= 1e-5
    assert abs(res.mu1.sum() - 1.0) < 1e-12 and res.mu1.min() >= 0
    # the computed point is at least as good as the truth (a feasible point) ...
    assert res.J <= P.value(d["mu1_true"]) * (1 + 1e-8)
    # ... and consistent: J is the objective at the returned plan
    assert res.J == pytest.approx(P.objective(res.plan, res.mu1), rel=1e-12)
    e = identification_errors(res.mu1, res.plan, d["mu1_true"], d["pi_true"])
    assert e["mu1_err_max"] < 0.05
    assert res.mu1_err_max == pytest.approx(e["mu1_err_max"])  # full observation: observed = truth
    assert "theta" in res.table() and "J" in res.summary()


def test_experiment1_paper_setting_gamma_1e6_seed0():
    """Part III §4.2, Table 4.1 row gamma = eps = 1e-6 (n = 25) on one generated seed."""
    d = identification_instance(25, 0)
    P = problem_from_instance(d, gamma=1e-6)
    res = P.solve(model="bfgs")  # the paper's Algorithm 4.1
    assert res.success and res.nit <= 100
    e = identification_errors(res.mu1, res.plan, d["mu1_true"], d["pi_true"])
    assert e["mu1_err_max"] <= 1e-3
    assert res.J <= 1e-7
    assert res.J <= P.value(d["mu1_true"])


@pytest.mark.slow
@pytest.mark.parametrize("eps", [1e-6, 1e-8])
def test_experiment1_ten_seeds(eps):
    """Acceptance: 10 seeds, n = 25, gamma = 1e-6, within 100 iterations.

    With eps = 1e-6 the regularized plan's marginals are off by eps*alpha (Part III
    (3.1)), |alpha| up to ~150 here, so J cannot be made <= 1e-7 on every seed; the
    optimizer must still beat the truth and recover mu1 to 1e-3.  With eps = 1e-8 the
    bias is gone and J <= 1e-7 holds on every seed.
    """
    for seed in range(10):
        d = identification_instance(25, seed)
        P = problem_from_instance(d, gamma=1e-6, eps=eps)
        res = P.solve()
        e = identification_errors(res.mu1, res.plan, d["mu1_true"], d["pi_true"])
        # the default's first phase is the paper's Algorithm 4.1 from the uniform start (Table 4.1)
        alg41 = res.phases[0]
        assert alg41["phase"] == "uniform: bfgs" and alg41["success"] and alg41["nit"] <= 100, seed
        assert res.success and res.stationarity <= res.tol, (seed, res.message)
        assert res.J <= min(p["J"] for p in res.phases if p["success"]) * (1 + 1e-12), seed
        assert e["mu1_err_max"] <= 1e-3, seed
        if eps <= 1e-8:
            assert res.J <= 1e-7, seed
        else:
            # stationarity 1e-5 leaves J within ~1e-10 of a minimizer; the bias is larger
            assert res.J <= P.value(d["mu1_true"]), seed


def test_trust_region_matches_independent_sqp_minimum():
    """At gamma = eps = 1e-6 the trust-region value is the problem's minimum, not an
    optimizer shortfall: SLSQP (scipy) started from the truth and from the uniform
    marginal, with the same oracle, finds no lower value (seed 7, the worst of the
    ten acceptance seeds, where the eps term of (3.1) keeps J near 1.5e-6)."""
    from scipy.optimize import minimize

    d = identification_instance(25, 7)
    P = problem_from_instance(d, gamma=1e-6, eps=1e-6)
    res = P.solve()
    assert res.success

    def fg(x):
        return P.value_and_subgradient(np.maximum(x, 0.0))

    best = np.inf
    for x0 in (d["mu1_true"], np.full(25, 1 / 25)):
        r = minimize(fg, x0, jac=True, method="SLSQP", bounds=[(0, 1)] * 25,
                     constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1, "jac": lambda x: np.ones(25)}],
                     options={"ftol": 1e-16, "maxiter": 300})
        best = min(best, P.value(np.maximum(r.x, 0) / np.maximum(r.x, 0).sum()))
    assert res.J <= 1.05 * best
    assert res.eps_bias == pytest.approx(1e-6 * max(np.abs(res.alpha).max(), np.abs(res.beta).max()))


def test_experiment2_runs_and_fits_observations():
    d = identification_instance(12, 1, experiment=2)
    P = problem_from_instance(d, gamma=1e-3)
    res = P.solve(options={"max_iter": 100})
    assert all(lv["nit"] <= 100 for p in res.phases for lv in p["levels"]) and np.isfinite(res.J)
    # starting point is the uniform marginal (Part III §4.2); the method decreases f
    u = np.full(12, 1 / 12)
    assert res.J < P.value(u)


def test_solve_x0_and_callback():
    d = identification_instance(8, 2)
    P = problem_from_instance(d, gamma=1e-2)
    seen = []
    res = P.solve(x0=d["mu1_true"], options={"max_iter": 5}, model="bfgs",
                               callback=lambda r: seen.append(r.nit))
    assert seen == list(range(1, len(seen) + 1)) and len(seen) <= 5
    seen.clear()
    auto = P.solve(x0=d["mu1_true"], options={"max_iter": 5}, callback=lambda r: seen.append(r.nit))
    assert len(seen) == auto.nit  # every iteration of every phase and level
    with pytest.raises(ValueError, match="x0"):
        P.solve(x0=np.full(8, 1.0))
    assert res.mu1.shape == (8,)


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------
def _data(n1=5, n2=6):
    rng = np.random.default_rng(0)
    return dict(c_d=rng.random((n1, n2)), mu2_d=np.full(n2, 1 / n2), pi_d=np.zeros((n1, n2)),
                mu1_d=np.full(n1, 1 / n1))


@pytest.mark.parametrize("change,match", [
    (dict(pi_d=np.zeros((5, 5))), "pi_d"),
    (dict(mu1_d=np.zeros(4)), "mu1_d"),
    (dict(mu2_d=np.zeros(5)), "mu2_d"),
    (dict(mu2_d=np.array([1, -1, 0.5, 0.5, 0.5, 0.5])), "mu2_d"),
    (dict(mu2_d=np.zeros(6)), "mu2_d"),
    (dict(c_d=np.zeros(6)), "c_d"),
    (dict(c_d=np.full((5, 6), np.nan)), "c_d"),
    (dict(D=np.ones((6, 5))), "D"),
    (dict(D=np.zeros((5, 6))), "D is empty"),
    (dict(D=np.full((5, 6), 0.5)), "D must hold only 0/1"),
    (dict(D1=np.ones(6)), "D1"),
    (dict(D1=np.zeros(5)), "D1 is empty"),
    (dict(D1=np.ones((5, 2))), "D1"),
    (dict(lam=-1.0), "lam"),
    (dict(gamma=0.0), "gamma"),
    (dict(eps=-1e-3), "eps"),
])
def test_bad_input_names_the_argument(change, match):
    kw = _data()
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        TransportIdentification(**kw)


def test_points_off_the_simplex_are_rejected():
    P = TransportIdentification(**_data())
    with pytest.raises(ValueError, match="mu1_0"):
        P.check_point(np.full(5, 0.3), "mu1_0")
    with pytest.raises(ValueError, match="nonnegative"):
        P.check_point(np.array([0.5, 0.5, 0.5, -0.5, 0.0]))
    with pytest.raises(ValueError, match="length"):
        P.check_point(np.full(4, 0.25))


def test_masks_accept_dense_sparse_rows_and_columns():
    D = band_mask(5, 6, 1)
    assert np.array_equal(as_plan_mask(sp.csr_matrix(D.astype(float)), (5, 6)), D)
    v = np.array([1, 0, 1, 1, 0])
    for form in (v, v[None, :], v[:, None], sp.csr_matrix(v[None, :]), v.astype(bool)):
        assert np.array_equal(as_marginal_mask(form, 5), v.astype(bool))


def test_dense_and_sparse_data_give_the_same_problem():
    d = identification_instance(9, 7, experiment=2)
    x = interior_point(9, np.random.default_rng(5))
    P = problem_from_instance(d, gamma=1e-2)
    d2 = dict(d, pi_d=d["pi_d"].toarray(), D=sp.csr_matrix(d["D"].astype(float)), D1=d["D1"][None, :].astype(float),
              mu2_d=d["mu2_d"][:, None], mu1_d=sp.csr_matrix(d["mu1_d"][None, :]))
    Q = problem_from_instance(d2, gamma=1e-2)
    (f1, g1), (f2, g2) = P(x), Q(x)
    assert f1 == pytest.approx(f2, rel=1e-14) and np.allclose(g1, g2)


# --------------------------------------------------------------------------
# instances
# --------------------------------------------------------------------------
def test_generated_instance_matches_part3_section_4_2():
    n = 25
    d = identification_instance(n, 11)
    i = np.arange(n)
    assert np.array_equal(d["c_d"], (i[:, None] - i[None, :]) ** 2.0)
    for m in (d["mu1_true"], d["mu2_d"]):
        assert m.min() >= 0 and m.sum() == pytest.approx(1.0, abs=1e-14)
        assert 0.2 < np.mean(m > 0) < 0.8
    pi = d["pi_true"]
    assert np.allclose(np.asarray(pi.sum(1)).ravel(), d["mu1_true"], atol=1e-9)
    assert np.allclose(np.asarray(pi.sum(0)).ravel(), d["mu2_d"], atol=1e-9)
    # optimal: same cost as an independent LP solve
    assert np.sum(d["c_d"] * pi.toarray()) == pytest.approx(exact_ot(d["c_d"], d["mu1_true"], d["mu2_d"]).cost,
                                                            rel=1e-9, abs=1e-12)
    # seeded
    assert np.array_equal(identification_instance(n, 11)["mu1_true"], d["mu1_true"])
    assert not np.array_equal(identification_instance(n, 12)["mu1_true"], d["mu1_true"])


def test_experiment2_observation_domains():
    d = identification_instance(25, 0, experiment=2)
    assert np.array_equal(np.nonzero(d["D1"])[0] + 1, np.arange(9, 16))  # {9, ..., 15} from 1
    assert np.array_equal(experiment2_observed_rows(25), np.arange(8, 15))
    i = np.arange(25)
    assert np.array_equal(d["D"], np.abs(i[:, None] - i[None, :]) <= 3)
    assert np.allclose(d["mu1_d"], np.where(d["D1"], d["mu1_true"], 0))
    assert np.allclose(d["pi_d"].toarray(), np.where(d["D"], d["pi_true"].toarray(), 0))
    with pytest.raises(ValueError, match="experiment"):
        identification_instance(10, 0, experiment=3)


@pytest.mark.parametrize("ext", [".npz", ".mat"])
def test_save_load_round_trip(tmp_path, ext):
    d = identification_instance(10, 3, experiment=2)
    d["mu1_0"] = np.full(10, 0.1)
    path = tmp_path / f"inst{ext}"
    save_instance(path, d)
    e = load_instance(path)
    for k in ("c_d", "mu2_d", "mu1_d", "mu1_0", "mu1_true"):
        assert np.allclose(np.asarray(e[k]).ravel(), np.asarray(d[k]).ravel()), k
    for k in ("pi_d", "pi_true"):
        assert sp.issparse(e[k]) and np.allclose(e[k].toarray(), d[k].toarray()), k
    assert np.array_equal(np.asarray(e["D"], dtype=bool), d["D"])
    x = interior_point(10, np.random.default_rng(0))
    assert problem_from_instance(e, gamma=1e-2).value(x) == pytest.approx(problem_from_instance(d, gamma=1e-2).value(x))


def test_load_accepts_csr_groups_rows_columns_and_dense(tmp_path):
    from scipy.io import savemat

    d = identification_instance(6, 1)
    P = sp.csr_matrix(d["pi_d"])
    p = tmp_path / "csr.npz"
    np.savez(p, c_d=d["c_d"], mu2_d=d["mu2_d"][None, :], mu1_d=d["mu1_d"][:, None], pi_d__data=P.data,
             pi_d__indices=P.indices, pi_d__indptr=P.indptr, pi_d__shape=np.array(P.shape))
    e = load_instance(p)
    assert e["mu2_d"].shape == (6,) and e["mu1_d"].shape == (6,)
    assert np.allclose(e["pi_d"].toarray(), P.toarray()) and e["D"] is None
    m = tmp_path / "dense.mat"
    savemat(m, {"c_d": d["c_d"], "mu2_d": d["mu2_d"][:, None], "mu1_d": sp.csc_matrix(d["mu1_d"][None, :]),
                "pi_d": P.toarray(), "D1": np.ones((1, 6))})
    e = load_instance(m)
    assert np.allclose(e["mu1_d"], d["mu1_d"]) and np.allclose(e["pi_d"], P.toarray())


def test_load_errors_name_the_problem(tmp_path):
    d = identification_instance(5, 0)
    p = tmp_path / "missing.npz"
    np.savez(p, c_d=d["c_d"], mu2_d=d["mu2_d"], mu1_d=d["mu1_d"])
    with pytest.raises(ValueError, match="pi_d"):
        load_instance(p)
    with pytest.raises(ValueError, match="does not exist"):
        load_instance(tmp_path / "nope.npz")
    q = tmp_path / "x.txt"
    q.write_text("1")
    with pytest.raises(ValueError, match="extension"):
        load_instance(q)
    bad = tmp_path / "badgroup.npz"
    np.savez(bad, c_d=d["c_d"], mu2_d=d["mu2_d"], mu1_d=d["mu1_d"], pi_d__data=np.ones(2))
    with pytest.raises(ValueError, match="pi_d__shape"):
        load_instance(bad)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, c_d=d["c_d"], mu2_d=d["mu2_d"], mu1_d=d["mu1_d"], pi_d=np.zeros((5, 4)))
    with pytest.raises(ValueError, match="pi_d"):
        problem_from_instance(load_instance(wrong))


def test_observed_start_on_the_simplex():
    d = identification_instance(25, 1, experiment=1)
    P = problem_from_instance(d, gamma=1e-2)
    x = P.observed_start()
    assert np.allclose(x, d["mu1_d"] * (P.mass / d["mu1_d"].sum()))
    d2 = identification_instance(25, 1, experiment=2)  # D1 = rows 9..15
    P2 = problem_from_instance(d2, gamma=1e-2)
    x2 = P2.observed_start()
    P2.check_point(x2)
    assert np.allclose(x2[P2.D1], d2["mu1_d"][P2.D1])
    free = ~P2.D1
    assert np.allclose(x2[free], (P2.mass - d2["mu1_d"][P2.D1].sum()) / free.sum())
    # observed mass above the total: the D1 part is rescaled
    d3 = dict(d2)
    d3["mu1_d"] = np.where(P2.D1, 1.0, 0.0)
    P3 = problem_from_instance(d3, gamma=1e-2)
    x3 = P3.observed_start()
    P3.check_point(x3)
    assert np.allclose(x3[P3.D1], P3.mass / P3.D1.sum()) and np.all(x3[~P3.D1] == 0)


def test_second_order_model_and_continuation():
    """The exact-Hessian model with continuation from gamma = 1e-2 reaches a point at least
    as good as the truth; model="bfgs" is the BFGS method of Part III §4.2 (one level);
    continuation counts the iterations of all levels."""
    d = identification_instance(12, 1)
    P = problem_from_instance(d, gamma=1e-4)
    res = P.solve(model="newton", continuation="auto")
    assert res.success and res.model == "newton" and res.nhev > 0
    assert [lv["gamma"] for lv in res.levels] == pytest.approx([1e-2, 1e-3, 1e-4])
    assert res.nit == sum(lv["nit"] for lv in res.levels)
    assert res.gamma == 1e-4 and res.J <= P.value(d["mu1_true"]) * (1 + 1e-8)
    assert res.J == pytest.approx(P.objective(res.plan, res.mu1), rel=1e-12)
    bfgs = problem_from_instance(d, gamma=1e-4).solve(model="bfgs")
    assert bfgs.model == "bfgs" and bfgs.nhev == 0 and len(bfgs.levels) == 1 and len(bfgs.phases) == 1
    with pytest.raises(ValueError, match="continuation"):
        P.solve(continuation=[0.5])
    with pytest.raises(ValueError, match="continuation"):
        P.solve(continuation="yes")


# --------------------------------------------------------------------------
# the default model (auto): several phases, the certified lowest J
# --------------------------------------------------------------------------
def _two_minima_instance():
    """A 2 x 3 identification problem with an inconsistent observed plan (seed 56 of a random family).

    With n1 = 2 the simplex is the segment mu1 = (t, 1 - t), so the local minima of the
    reduced objective can be located by a grid in t and refined by a scalar solver,
    independently of the trust-region method.
    """
    rng = np.random.default_rng(56)
    n2 = int(rng.integers(2, 5))
    c = rng.uniform(0, 1, (2, n2))
    mu2 = rng.uniform(0.2, 1, n2)
    pd = rng.uniform(0, 1, (2, n2)) * (rng.uniform(size=(2, n2)) < 0.7)
    mu1d = rng.uniform(0, 1, 2)
    lam = float(rng.choice([0.0, 0.1, 1.0]))
    return dict(c_d=c, mu2_d=mu2 / mu2.sum(), pi_d=pd / pd.sum(), mu1_d=mu1d / mu1d.sum(), lam=lam, gamma=1e-2)


def test_default_reaches_the_lower_of_two_local_minima_and_certifies_it():
    from scipy.optimize import minimize_scalar

    kw = _two_minima_instance()
    P = TransportIdentification(**kw)

    def f(t):
        return P.value(np.array([t, 1.0 - t]))

    # independent: every local minimum of f on a grid of the segment, refined by a bounded scalar solver
    t = np.linspace(0.0, 1.0, 101)
    v = np.array([f(a) for a in t])
    idx = [i for i in range(t.size) if (i == 0 or v[i] < v[i - 1]) and (i == t.size - 1 or v[i] < v[i + 1])]
    minima = []
    for i in idx:
        r = minimize_scalar(f, bounds=(t[max(i - 1, 0)], t[min(i + 1, t.size - 1)]), method="bounded",
                            options={"xatol": 1e-10})
        minima.append((float(r.fun), float(r.x)))
    minima.sort()
    assert len(minima) == 2, minima  # two local minima ...
    (f_low, t_low), (f_high, t_high) = minima
    assert f_high > 1.1 * f_low and abs(t_high - t_low) > 0.05  # ... that are distinct

    res = P.solve()
    assert res.model == "auto" and res.success and res.stationarity <= res.tol == 1e-5
    assert res.J <= f_low + 1e-9 and abs(res.mu1[0] - t_low) < 1e-4
    # the report shows every phase's J; the paths from the uniform start end (certified) at the
    # higher minimum, which today's single models would have returned
    J = {p["phase"]: p["J"] for p in res.phases}
    assert J["uniform: bfgs"] == pytest.approx(f_high, rel=1e-6)
    assert J["uniform: newton"] == pytest.approx(f_high, rel=1e-6)
    for model in ("bfgs", "newton"):
        single = TransportIdentification(**kw).solve(model=model)
        assert single.success and single.J == pytest.approx(f_high, rel=1e-6)
    assert res.phase.startswith("observed") and "<- returned" in res.summary()


def test_default_returns_the_certified_phase_of_lowest_J():
    d = identification_instance(12, 1)
    P = problem_from_instance(d, gamma=1e-4, eps=1e-8)
    res = P.solve(x0=np.full(12, 1 / 12))
    names = [p["phase"] for p in res.phases]
    assert names[0] == "x0: bfgs" and "x0: newton" in names and "observed: bfgs" in names
    certified = [p for p in res.phases if p["success"]]
    assert res.success and certified
    best = min(certified, key=lambda p: p["J"])
    assert res.phase == best["phase"] and res.fun == best["J"]
    assert res.J == pytest.approx(P.objective(res.plan, res.mu1), rel=1e-12)
    assert res.J == pytest.approx(res.fun, rel=1e-12)
    assert res.nit == sum(p["nit"] for p in res.phases)
    assert res.levels == best["levels"] and res.tol == 1e-5
    # every phase runs on a fresh copy of the problem: the x0 phases are today's single models, run alone
    for model, kw in (("bfgs", {}), ("newton", {"continuation": "auto"})):
        alone = problem_from_instance(d, gamma=1e-4, eps=1e-8).solve(x0=np.full(12, 1 / 12),
                                     model=model, **kw)
        assert alone.fun == next(p["J"] for p in res.phases if p["phase"] == f"x0: {model}")
        assert res.J <= alone.J * (1 + 1e-12) or not alone.success
    # the uniform start (x0 None) is the optimizer's own: the phase is bit for bit model="bfgs" alone
    uni = problem_from_instance(d, gamma=1e-4, eps=1e-8).solve(starts=())
    alone = problem_from_instance(d, gamma=1e-4, eps=1e-8).solve(model="bfgs")
    assert uni.phases[0]["phase"] == "uniform: bfgs" and uni.phases[0]["J"] == alone.fun
    # starts=() keeps x0 only; a start equal to x0 is not repeated
    one = P.solve(starts=())
    assert [p["phase"].split(":")[0] for p in one.phases] == ["uniform"] * len(one.phases)
    same = P.solve(x0=P.observed_start())
    assert all(p["phase"].startswith("x0") for p in same.phases)


def test_uncertified_bfgs_phase_is_polished_without_raising_J():
    d = identification_instance(12, 1)
    P = problem_from_instance(d, gamma=1e-4)
    res = P.solve(options={"max_iter": 3}, starts=())
    bfgs, polish = res.phases[0], res.phases[1]
    assert not bfgs["success"] and bfgs["nit"] == 3
    assert polish["phase"] == "uniform: bfgs + newton polish" and polish["model"] == "newton"
    assert polish["J"] <= bfgs["J"]  # the trust region only accepts decreasing steps
    assert res.phases[2]["phase"] == "uniform: newton" and len(res.phases[2]["levels"]) == 3
    certified = [p for p in res.phases if p["success"]]
    assert res.phase == min(certified or res.phases, key=lambda p: p["J"])["phase"]


@pytest.mark.parametrize("kw, match", [
    ({"model": "cg"}, "model"),
    ({"starts": ("truth",)}, "starts"),
])
def test_model_arguments_are_checked(kw, match):
    P = problem_from_instance(identification_instance(6, 0), gamma=1e-2)
    with pytest.raises(ValueError, match=match):
        P.solve(**kw)


AUTHORS = os.environ.get("FEMOT_AUTHORS_FILES", "/tmp/cntr")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["test_25x25", "test_50x50"])
@pytest.mark.parametrize("gamma", [1e-2, 1e-4, 1e-6])
def test_default_on_the_authors_files_is_certified_and_no_higher_than_either_model(name, gamma):
    """The authors' instance files (public repository sebastianhillbrecht/cntr_method; put them in
    $FEMOT_AUTHORS_FILES, default /tmp/cntr): the default ends certified at a J no higher than
    the BFGS model (Algorithm 4.1) and the Newton model with continuation, run separately."""
    from femot.problems.instances import instance_options

    path = os.path.join(AUTHORS, f"{name}.mat")
    if not os.path.exists(path):
        pytest.skip(f"{path} not present")
    data = load_instance(path)
    opts = instance_options(data, {"tol": 1e-5, "max_iter": 200})
    runs = {}
    for key, kw in (("auto", {}), ("bfgs", {"model": "bfgs"}), ("newton", {"model": "newton", "continuation": "auto"})):
        P = problem_from_instance(data, gamma=gamma, eps=gamma)
        runs[key] = P.solve(x0=data["mu1_0"], options=opts, **kw)
    auto = runs["auto"]
    assert auto.success and auto.stationarity <= 1e-5
    assert auto.J <= min(runs["bfgs"].J, runs["newton"].J) * (1 + 1e-9)
