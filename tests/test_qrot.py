"""The regularized transport core: KKT conditions, robustness, exact limits, input checks."""
import dataclasses
import inspect

import numpy as np
import pytest

from femot import exact_ot, exact_ot_1d, solve_qrot
from femot.core.instances import hitchcock_instance


def dense_plan(res):
    return res.plan.toarray()


def check_kkt(res, c, m1, m2, w1, w2, tol):
    """pi = (alpha+beta-c)_+/gamma and the (eps-)marginal equations hold."""
    z = res.alpha[:, None] + res.beta[None, :] - c
    pi = np.maximum(z, 0) / res.gamma
    assert np.allclose(dense_plan(res), pi, atol=1e-12 * max(1, pi.max()))
    r1 = pi @ w2 + res.eps * res.alpha - m1
    r2 = w1 @ pi + res.eps * res.beta - m2
    assert max(abs(r1).max(), abs(r2).max()) <= tol
    assert res.residual <= tol


def random_weighted(n1, n2, seed):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.random(n1))
    y = np.sort(rng.random(n2))
    w1 = rng.uniform(0.5, 1.5, n1) / n1
    w2 = rng.uniform(0.5, 1.5, n2) / n2
    m1 = rng.uniform(0.2, 2.0, n1)
    m2 = rng.uniform(0.2, 2.0, n2)
    m1 /= w1 @ m1
    m2 /= w2 @ m2
    c = (x[:, None] - y[None, :]) ** 2
    return c, m1, m2, w1, w2, x, y


@pytest.mark.parametrize("gamma", [1e-1, 1e-3])
@pytest.mark.parametrize("eps", [0.0, 1e-2])
@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_weighted_kkt(gamma, eps, solver):
    c, m1, m2, w1, w2, _, _ = random_weighted(40, 30, 1)
    res = solve_qrot(c, m1, m2, gamma, eps, w1, w2, linear_solver=solver, init="mean")
    assert res.success, res.message
    check_kkt(res, c, m1, m2, w1, w2, 1e-9)
    assert res.plan.nnz < c.size  # sparse plan
    assert {"it", "residual", "floor", "n_active"} <= set(res.history[0])


def test_hitchcock_matches_peer_pot():
    ot = pytest.importorskip("ot")
    c, m1, m2 = hitchcock_instance(20, seed=3, occupancy=1.0)
    c = c / c.max()
    gamma = 0.05
    res = solve_qrot(c, m1, m2, gamma)
    assert res.success
    # POT solves min <T, M> + reg/2 |T|^2 over couplings of masses; same problem for unit weights.
    T = ot.smooth.smooth_ot_dual(m1, m2, c, gamma, reg_type="l2", stopThr=1e-14, numItermax=20000)
    assert np.abs(T - dense_plan(res)).max() < 1e-5


def test_eps_positive_handles_zeros_and_mass_mismatch():
    rng = np.random.default_rng(7)
    c, m1, m2 = hitchcock_instance(30, seed=7)
    m2 = 1.3 * m2  # unbalanced: only allowed with eps > 0
    res = solve_qrot(c, m1, m2, 1e-3, 1e-3)
    assert res.success
    check_kkt(res, c, m1, m2, np.ones(30), np.ones(30), max(1e-10, res.residual_floor))
    assert rng is not None


def test_warm_start_reuses_solution():
    c, m1, m2 = hitchcock_instance(25, seed=11)
    res = solve_qrot(c, m1, m2, 1e-4, 1e-4)
    again = solve_qrot(c, m1, m2, 1e-4, 1e-4, x0=(res.alpha, res.beta))
    assert again.success and again.nit == 0


def test_nonconvergence_is_reported():
    c, m1, m2 = hitchcock_instance(25, seed=2)
    res = solve_qrot(c, m1, m2, 1e-6, 1e-6, max_iter=1, init="zero")
    assert not res.success
    assert res.status == 1
    assert "maximum" in res.message
    assert res.residual > res.residual_floor


# -- robustness on the instances of Part III §4.2 --------------------------------

SEEDS = range(50)


@pytest.mark.parametrize("gamma", [1e-2, 1e-4, 1e-6])
def test_robust_cold_start(gamma):
    worst = 0
    for seed in SEEDS:
        c, m1, m2 = hitchcock_instance(25, seed)
        res = solve_qrot(c, m1, m2, gamma, gamma)
        assert res.success, (seed, res.message, res.residual)
        assert res.nit <= 100, (seed, res.nit)
        worst = max(worst, res.nit)
    print(f"gamma = eps = {gamma:g}: at most {worst} Newton iterations over {len(SEEDS)} seeds")


@pytest.mark.parametrize("eps", [1e-8, 0.0])
def test_robust_tiny_gamma(eps):
    """gamma = 1e-8 with c up to 576 and potentials up to ~350: the floor n u max|c| / gamma
    (3e-4) is above 1e-3 max(mu) (~1e-4), so success needs the active-set floor, in which
    only the few active pairs per row count and |c| is read there (small, near the
    diagonal).  This holds for eps = 0 as well: eps > 0 is not what makes them pass."""
    its = []
    for seed in SEEDS:
        c, m1, m2 = hitchcock_instance(25, seed)
        res = solve_qrot(c, m1, m2, 1e-8, eps)
        assert res.success, (seed, res.message, res.residual, res.residual_floor)
        assert res.residual_floor < 1e-3 * max(m1.max(), m2.max())
        resid, _ = _dense_residual(res, c, m1, m2, np.ones(25), np.ones(25))
        assert resid <= 1e-3 * max(m1.max(), m2.max())
        its.append(res.nit)
    print(f"gamma = eps = 1e-8: iterations max {max(its)}, mean {np.mean(its):.1f}")


@pytest.mark.parametrize("gamma", [1e-2, 1e-4, 1e-6, 1e-8])
def test_warm_start_after_perturbation(gamma):
    its = []
    for seed in SEEDS:
        c, m1, m2 = hitchcock_instance(25, seed)
        base = solve_qrot(c, m1, m2, gamma, gamma)
        rng = np.random.default_rng(1000 + seed)
        p = m1 * (1 + 0.01 * rng.uniform(-1, 1, m1.size))
        p /= p.sum()
        res = solve_qrot(c, p, m2, gamma, gamma, x0=(base.alpha, base.beta))
        assert res.success
        its.append(res.nit)
    print(f"gamma = {gamma:g}: warm-start iterations max {max(its)}, histogram {np.bincount(its)}")
    assert max(its) <= 8


# -- exact transport ------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_lp_matches_monotone_1d(seed):
    c, m1, m2, w1, w2, x, y = random_weighted(30, 25, seed)
    lp = exact_ot(c, m1, m2, w1, w2)
    mono = exact_ot_1d(x, y, m1, m2, w1, w2)
    assert lp.success
    assert abs(lp.cost - mono.cost) <= 1e-10 * max(1.0, abs(lp.cost))
    # plan marginals of both
    for r in (lp, mono):
        P = r.plan.toarray()
        assert np.allclose(P @ w2, m1, atol=1e-9) and np.allclose(w1 @ P, m2, atol=1e-9)
    # dual feasibility and complementary slackness of the LP potentials
    z = lp.alpha[:, None] + lp.beta[None, :] - c
    assert z.max() <= 1e-9
    P = lp.plan.toarray()
    assert np.all(np.abs(z[P > 1e-12]) <= 1e-9)
    # with a strictly convex cost the optimal plan is unique: both coincide
    assert np.abs(lp.masses.toarray() - mono.masses.toarray()).max() <= 1e-9


def test_regularized_converges_to_exact():
    c, m1, m2, w1, w2, x, y = random_weighted(60, 60, 5)
    ex = exact_ot_1d(x, y, m1, m2, w1, w2)
    Tex = ex.masses.toarray()
    gammas = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7]
    gaps, errs = [], []
    for g in gammas:
        r = solve_qrot(c, m1, m2, g, 0.0, w1, w2)
        assert r.success
        gaps.append(r.transport_cost() - ex.cost)
        T = r.plan.toarray() * w1[:, None] * w2[None, :]
        errs.append(np.abs(T - Tex).sum())
    gaps, errs = np.array(gaps), np.array(errs)
    # the exact cost is the minimum (up to the marginal residual times max c)
    assert np.all(gaps >= -1e-9)
    assert np.all(np.diff(gaps) < 0) and gaps[-1] < 1e-3 * gaps[0]
    assert errs[-1] < 0.1 * errs[0]
    rate_cost = np.polyfit(np.log(gammas), np.log(gaps), 1)[0]
    rate_plan = np.polyfit(np.log(gammas), np.log(errs), 1)[0]
    print(f"cost gap ~ gamma^{rate_cost:.2f}, plan L1 error ~ gamma^{rate_plan:.2f}")
    assert rate_cost > 0.5


# -- input validation -----------------------------------------------------------

def _ok():
    c, m1, m2 = hitchcock_instance(6, seed=0, occupancy=1.0)
    return c, m1, m2


@pytest.mark.parametrize(
    "mutate, name",
    [
        (lambda c, a, b: (c, -a, b), "mu1"),
        (lambda c, a, b: (c, a, np.where(np.arange(b.size) == 0, np.nan, b)), "mu2"),
        (lambda c, a, b: (np.where(np.eye(c.shape[0], dtype=bool), np.nan, c), a, b), "c"),
        (lambda c, a, b: (np.where(np.eye(c.shape[0], dtype=bool), np.inf, c), a, b), "c"),
        (lambda c, a, b: (c, 2 * a, b), "mass"),
        (lambda c, a, b: (c[:, :-1], a, b), "mu2"),
        (lambda c, a, b: (c, a[:-1], b), "mu1"),
    ],
)
def test_bad_input_names_argument(mutate, name):
    c, a, b = mutate(*_ok())
    with pytest.raises(ValueError, match=name):
        solve_qrot(c, a, b, 0.1)


def test_bad_scalars_and_weights():
    c, a, b = _ok()
    with pytest.raises(ValueError, match="gamma"):
        solve_qrot(c, a, b, 0.0)
    with pytest.raises(ValueError, match="gamma"):
        solve_qrot(c, a, b, -1.0)
    with pytest.raises(ValueError, match="eps"):
        solve_qrot(c, a, b, 0.1, eps=-1e-3)
    with pytest.raises(ValueError, match="w1"):
        solve_qrot(c, a, b, 0.1, w1=np.zeros(6))
    with pytest.raises(ValueError, match="w2"):
        solve_qrot(c, a, b, 0.1, w2=-np.ones(6))
    with pytest.raises(ValueError, match="x0"):
        solve_qrot(c, a, b, 0.1, x0=(np.zeros(5), np.zeros(6)))
    with pytest.raises(ValueError, match="mu1"):
        exact_ot(c, -a, b)


def test_line_search_root_finders_agree():
    """Sorted-breakpoint and bracketed roots of the piecewise linear phi' coincide."""
    from femot.core.line_search import _bracketed_root, _exact_line_search

    rng = np.random.default_rng(4)
    for _ in range(20):
        m = 500
        z = rng.normal(size=m)
        dz = rng.normal(size=m)
        ws = rng.uniform(0.1, 1.0, m)
        q0, q1 = 0.0, 1e-3
        # choose lin so that phi'(0) < 0 < phi'(1)
        d0 = float(np.sum(ws * np.maximum(z, 0) * dz)) + q0
        d1 = float(np.sum(ws * np.maximum(z + dz, 0) * dz)) + q0 + q1
        if d1 <= d0:
            continue
        lin = d0 + rng.uniform(0.05, 0.95) * (d1 - d0)
        t1 = _exact_line_search(z, dz, ws, q0, q1, lin)
        t2 = _bracketed_root(z, dz, ws, q0, q1, lin, 1.0)
        assert 0 < t1 < 1
        assert abs(t1 - t2) <= 1e-9
        # it is a root
        val = float(np.sum(ws * np.maximum(z + t1 * dz, 0) * dz)) + q0 + t1 * q1 - lin
        assert abs(val) <= 1e-9 * max(1.0, abs(lin))


def test_monge_initialization_gives_exact_duals():
    from femot.core import kernels

    c, m1, m2, w1, w2, x, y = random_weighted(40, 30, 3)
    assert kernels.is_monge(c, 1e-12)
    assert not kernels.is_monge(-c, 1e-12)
    a, b = w1 * m1, w2 * m2
    al, be = kernels.northwest_corner_duals(c, a, b)
    lp = exact_ot(c, m1, m2, w1, w2)
    z = al[:, None] + be[None, :] - c
    assert z.max() <= 1e-12  # dual feasible
    assert abs((al @ a + be @ b) - lp.cost) <= 1e-10  # and optimal (strong duality)


@pytest.mark.parametrize("kappa", [0.0, 1e-2])
def test_semidual_rows_exact_and_derivatives(kappa):
    """Row solves of the curved search: rows of (3.1) hold exactly; psi', psi'' match finite differences."""
    from femot.core import kernels
    from femot.core.line_search import _SemiDual

    rng = np.random.default_rng(5)
    n1, n2, gamma = 9, 7, 0.3
    c = 3 * rng.random((n1, n2))
    w1, w2 = rng.uniform(0.5, 1.5, n1), rng.uniform(0.5, 1.5, n2)
    m1, m2 = rng.random(n1), rng.random(n2)
    m1[[2, 5]] = 0.0  # zero-mass rows: the c-transform when kappa = 0
    ip = np.arange(n1 + 1, dtype=np.int64) * n2
    ind = np.tile(np.arange(n2, dtype=np.int32), n1)
    sd = _SemiDual(ip, ind, c.ravel().copy(), n2, w1, w2, m1, m2, gamma, kappa)
    a0, b, db = rng.normal(size=n1), rng.normal(size=n2), rng.normal(size=n2)

    def psi(t):
        x, cs, cslope, zsq = kernels.semidual_rows(ip, ind, sd.cv, n2, b, db, t, a0, w1, w2, kappa, gamma * m1, 1)
        bt = b + t * db
        z = np.maximum(x[:, None] + bt[None, :] - c, 0)
        assert np.abs(z @ w2 + kappa * x - gamma * m1).max() <= 1e-12
        assert np.allclose(cs, w1 @ z, atol=1e-12)
        assert abs(sd.phi(x, bt) - sd._value(x, bt, zsq)) <= 1e-12
        d1 = w2 @ (db * (gamma * m2 - cs - kappa * bt))
        d2 = -w2 @ (db * (cslope + kappa * db))
        return sd.phi(x, bt), d1, d2

    h = 1e-6
    for t in (0.13, 0.41, 0.77):
        v, d1, d2 = psi(t)
        vp, d1p, _ = psi(t + h)
        vm, d1m, _ = psi(t - h)
        assert abs((vp - vm) / (2 * h) - d1) <= 1e-6 * max(1, abs(d1))
        assert abs((d1p - d1m) / (2 * h) - d2) <= 1e-5 * max(1, abs(d2))
        assert d2 <= 1e-12  # concave semi-dual


@pytest.mark.parametrize("seed", [22, 45])
def test_curved_step_helps_the_kink_chain(seed):
    """Part III §4.2 warm start at gamma = eps = 1e-6: on the straight Newton line the rows
    switching partners are resolved one per two iterations; the semi-dual search takes
    several at once (seeds that needed 14 and 11 iterations)."""
    gamma = 1e-6
    c, m1, m2 = hitchcock_instance(25, seed)
    base = solve_qrot(c, m1, m2, gamma, gamma)
    rng = np.random.default_rng(1000 + seed)
    p = m1 * (1 + 0.01 * rng.uniform(-1, 1, m1.size))
    p /= p.sum()
    curved = solve_qrot(c, p, m2, gamma, gamma, x0=(base.alpha, base.beta), init="x0")
    straight = solve_qrot(c, p, m2, gamma, gamma, x0=(base.alpha, base.beta), curve=False, init="x0")
    assert curved.success and straight.success
    assert curved.nit <= 8 < straight.nit
    assert any(h.get("path") in ("rows", "cols") for h in curved.history)
    check_kkt(curved, c, p, m2, np.ones(25), np.ones(25), max(1e-10, curved.residual_floor))
    # the plans agree up to the certified accuracy
    assert np.abs(curved.plan.toarray() - straight.plan.toarray()).max() <= 1e-2 * max(p.max(), m2.max())


# -- cold start for Monge costs: staircase potentials of the eps-corrected marginals --

def test_staircase_potentials_solve_small_gamma_problem():
    """For a Monge cost and gamma below the Monge gaps, the regularized plan lives on the
    north-west corner staircase: z = gamma * pi there, z <= 0 elsewhere, so the
    potentials solve (3.1) with eps = 0 up to rounding; zscale = 0 gives the exact duals."""
    from femot.core import kernels

    c, m1, m2, w1, w2, _, _ = random_weighted(40, 30, 4)
    a, b = w1 * m1, w2 * m2
    al0, be0 = kernels.northwest_corner_potentials(c, a, b, 0.0, w1, w2)
    ald, bed = kernels.northwest_corner_duals(c, a, b)
    assert np.allclose(al0 - al0[0], ald - ald[0], atol=1e-12) and np.allclose(be0 + al0[0], bed + ald[0], atol=1e-12)
    gamma = 1e-9
    al, be = kernels.northwest_corner_potentials(c, a, b, gamma, w1, w2)
    pi = np.maximum(al[:, None] + be[None, :] - c, 0) / gamma
    scale = np.abs(c).max() + np.abs(al).max() + np.abs(be).max()
    tol = 100 * np.finfo(float).eps * scale / gamma
    assert np.abs(pi @ w2 - m1).max() <= tol
    assert np.abs(w1 @ pi - m2).max() <= tol
    assert np.count_nonzero(pi) <= c.shape[0] + c.shape[1] - 1  # a tree


def test_level_balances_corrected_masses():
    """The (1, -1) level maximizing the dual makes <w1, mu1 - eps alpha> = <w2, mu2 - eps beta>."""
    from femot.core.starting_points import _level

    rng = np.random.default_rng(3)
    w1, w2 = rng.uniform(0.5, 1.5, 7), rng.uniform(0.5, 1.5, 5)
    m1, m2 = rng.random(7), rng.random(5)
    gamma, eps = 0.1, 1e-3
    al, be = _level(rng.normal(size=7) * 100, rng.normal(size=5) * 100, m1, m2, w1, w2, gamma, eps)
    assert abs(w1 @ (m1 - eps * al) - w2 @ (m2 - eps * be)) <= 1e-12


def _identification_marginals(n, seed, kind):
    c, truth, mu2 = hitchcock_instance(n, seed)
    if kind == "truth":
        return c, truth, mu2
    if kind == "uniform":
        return c, np.full(n, 1.0 / n), mu2
    rng = np.random.default_rng(100 + seed)
    v = rng.exponential(size=n)
    v[rng.random(n) < 0.3] = 0.0
    return c, v / v.sum(), mu2


@pytest.mark.parametrize("n", [100, 200])
@pytest.mark.parametrize("kind", ["truth", "uniform", "zeros"])
@pytest.mark.parametrize("gamma, eps", [(1e-2, 1e-10), (1e-2, 1e-8), (1e-4, 1e-8)])
def test_cold_start_large_instance_kkt(n, kind, gamma, eps):
    """Part III §4.2 instances at n = 100, 200 (c up to n^2, so eps*alpha is comparable
    to mu): cold start reaches the KKT conditions of (3.1) within 40 Newton iterations
    (plain exact-OT starts needed up to 200 at n = 200)."""
    c, m1, m2 = _identification_marginals(n, 0, kind)
    res = solve_qrot(c, m1, m2, gamma, eps)
    assert res.success and res.nit <= 40, (res.nit, res.residual)
    assert res.init == "monge"
    check_kkt(res, c, m1, m2, np.ones(n), np.ones(n), max(1e-10, res.residual_floor))


@pytest.mark.parametrize("kind", ["truth", "zeros"])
def test_warm_start_large_instance_after_perturbation(kind):
    """Warm start after a perturbation that switches zero rows on: <= 15 iterations, KKT holds;
    init='x0' (x0 as given) converges to the same plan."""
    n, gamma, eps = 100, 1e-2, 1e-10
    c, m1, m2 = _identification_marginals(n, 1, kind)
    base = solve_qrot(c, m1, m2, gamma, eps)
    rng = np.random.default_rng(7)
    p = np.maximum(m1 + 1e-3 * m1.max() * rng.standard_normal(n), 0)
    p /= p.sum()
    res = solve_qrot(c, p, m2, gamma, eps, x0=(base.alpha, base.beta))
    assert res.success and res.nit <= 15, (res.nit, res.residual)
    tol = max(1e-10, res.residual_floor)
    check_kkt(res, c, p, m2, np.ones(n), np.ones(n), tol)
    plain = solve_qrot(c, p, m2, gamma, eps, x0=(base.alpha, base.beta), init="x0")
    assert plain.success and plain.init == "warm"
    # both are solutions at the certified accuracy: their plans satisfy the same marginals
    assert np.abs(plain.plan.toarray() @ np.ones(n) + eps * plain.alpha - p).max() <= max(1e-10, plain.residual_floor)


def test_bad_init_names_argument():
    c, m1, m2 = hitchcock_instance(10, seed=0)
    with pytest.raises(ValueError, match="init"):
        solve_qrot(c, m1, m2, 1e-2, 1e-2, x0=(np.zeros(10), np.zeros(10)), init="nope")
    with pytest.raises(ValueError, match="init"):
        solve_qrot(c, m1, m2, 1e-2, 1e-2, init="nope")


def test_monge_sweeps_reach_fixed_point_at_n500():
    """Identification-size instance (n = 500, c = |i-j|^2 up to 2.5e5, half of mu2 zero,
    eps*max|c| ~ 2.5e-3): three staircase sweeps left a residual of 5e-6, from which
    Newton scrambled the active set (200 iterations, residual 2e-3).  Sweeping to the
    fixed point starts below the floor; the start must also satisfy (3.1) to that
    accuracy, checked here independently of the solver's own residual."""
    from femot.problems.instances import identification_instance

    d = identification_instance(500, 0, experiment=1)
    c, mu2 = d["c_d"], d["mu2_d"]
    mu1 = np.full(500, 1 / 500)
    gamma, eps = 1e-2, 1e-8
    res = solve_qrot(c, mu1, mu2, gamma, eps)
    assert res.success and res.nit <= 5, res.message
    z = np.maximum(res.alpha[:, None] + res.beta[None, :] - c, 0.0) / gamma
    r1 = z.sum(axis=1) + eps * res.alpha - mu1
    r2 = z.sum(axis=0) + eps * res.beta - mu2
    assert max(np.abs(r1).max(), np.abs(r2).max()) <= res.residual_floor
    assert res.residual_floor < 1e-2 * mu2.max()


# -- precision limits and mass checks --------------------------------------------

def _dense_residual(res, c, m1, m2, w1, w2):
    """Marginal residual of (3.1) recomputed here from the returned potentials."""
    pi = np.maximum(res.alpha[:, None] + res.beta[None, :] - c, 0.0) / res.gamma
    r1 = pi @ w2 + res.eps * res.alpha - m1
    r2 = w1 @ pi + res.eps * res.beta - m2
    return max(np.abs(r1).max(), np.abs(r2).max()), pi


def _suggested_gamma(message):
    import re

    m = re.search(r"gamma >= ([0-9.eE+-]+)", message)
    assert m, message
    return float(m.group(1))


@pytest.mark.parametrize("n, gamma", [(200, 1e-7), (400, 1e-6)])
def test_no_success_with_an_empty_plan(n, gamma):
    """With c = (i - j)^2 up to n^2 the floor n u max|c| / gamma exceeds the marginals
    themselves, so the cold start (plan empty, residual = max mu) must not be accepted at
    iteration 0: a success carries a plan with the right marginals (checked here from the
    potentials), or the result says the problem is out of reach."""
    i = np.arange(float(n))
    c = (i[:, None] - i) ** 2
    mu = np.ones(n) / n
    res = solve_qrot(c, mu, mu, gamma)
    if res.success:
        resid, pi = _dense_residual(res, c, mu, mu, np.ones(n), np.ones(n))
        assert resid <= max(1e-10, 1e-3 * mu.max())
        assert abs(res.plan.sum() - 1.0) <= n * 1e-3 * mu.max()
        assert np.abs(res.plan.toarray() - pi).max() <= 1e-3 * mu.max()
    else:
        assert res.status == 4 and "gamma >=" in res.message


def test_precision_failure_names_a_gamma_that_works():
    """Below the resolvable gamma (n = 200, gamma = 1e-9: potentials ~100, so z_ij is tuned in
    steps of 100 u = 2e-14, i.e. pi in steps of 2e-5 against pi = 5e-3) the result is
    status 4, not success, and the gamma it names solves the problem."""
    n = 200
    i = np.arange(float(n))
    c = (i[:, None] - i) ** 2
    mu = np.ones(n) / n
    res = solve_qrot(c, mu, mu, 1e-9)
    assert not res.success and res.status == 4, res.message
    assert "double precision" in res.message
    assert res.residual_floor > 1e-3 * mu.max()
    g = _suggested_gamma(res.message)
    assert 1e-9 < g < 1e-6
    ok = solve_qrot(c, mu, mu, g)
    assert ok.success, ok.message
    resid, _ = _dense_residual(ok, c, mu, mu, np.ones(n), np.ones(n))
    assert resid <= max(ok.residual, 1e-3 * mu.max())


@pytest.mark.parametrize("seed", range(5))
def test_tiny_gamma_never_beats_exact_transport(seed):
    """A random 5x5 cost at gamma = 1e-14 cannot be resolved in double precision: status 4,
    never a 'converged' plan cheaper than the exact optimum.  At the gamma the message names
    the plan is a success whose cost obeys the weak-duality bound
    cost >= OT + <f, a' - a> + <g, b' - b> (f, g the LP duals, a', b' the plan's marginal masses)."""
    rng = np.random.default_rng(seed)
    c = rng.random((5, 5))
    m1, m2 = rng.random(5), rng.random(5)
    m2 *= m1.sum() / m2.sum()
    ex = exact_ot(c, m1, m2)
    res = solve_qrot(c, m1, m2, 1e-14)
    assert not res.success and res.status == 4, res.message
    ok = solve_qrot(c, m1, m2, _suggested_gamma(res.message))
    assert ok.success, ok.message
    P = ok.plan.toarray()
    a, b = P.sum(axis=1), P.sum(axis=0)
    bound = ex.cost + ex.alpha @ (a - m1) + ex.beta @ (b - m2)
    assert ok.transport_cost() >= bound - 1e-9
    assert np.abs(a - m1).max() <= 1e-3 * max(m1.max(), m2.max())


def test_precision_threshold_is_relative_to_the_densities():
    """The admissible floor is 1e-3 of max(mu1, mu2) in density units: with weights w the
    same transport problem (masses w mu) must reach the same verdict."""
    n = 200
    i = np.arange(float(n))
    c = (i[:, None] - i) ** 2
    for gamma in (1e-9, 1e-7):
        plain = solve_qrot(c, np.ones(n) / n, np.ones(n) / n, gamma)
        w = np.full(n, 1.0 / n)
        # densities 1 on weights 1/n carry the masses 1/n as before; with T = w w pi the
        # weighted objective is <c, T> + gamma' n^2/2 |T|^2, the plain one <c, T> + gamma/2 |T|^2
        weighted = solve_qrot(c, np.ones(n), np.ones(n), gamma / n**2, 0.0, w, w)
        assert plain.status == weighted.status, (gamma, plain.message, weighted.message)
        # same potentials, residual and floor n times larger, in density units
        assert np.allclose(plain.alpha, weighted.alpha, rtol=0, atol=1e-6)
        ratio = weighted.residual_floor / plain.residual_floor
        assert 0.5 * n <= ratio <= 2 * n


def test_float32_marginals_pass_the_mass_check():
    """Marginals normalized in float32 differ in mass by ~1e-7: the mass tolerance follows
    the input dtype (a 1e-9 check would reject them), and mu2 is rebalanced so the solve
    reaches the requested tolerance."""
    rng = np.random.default_rng(1)
    n = 300
    c = rng.random((n, n))
    m1 = rng.random(n).astype(np.float32)
    m1 /= m1.sum()
    m2 = rng.random(n).astype(np.float32)
    m2 /= m2.sum()
    d = abs(float(m1.astype(float).sum()) - float(m2.astype(float).sum()))
    assert 1e-9 < d < 1e-6  # the situation of the report
    res = solve_qrot(c, m1, m2, 1e-2)
    assert res.success and res.residual <= 1e-10
    m2b = m2.astype(float) * (m1.astype(float).sum() / m2.astype(float).sum())
    check_kkt(res, c, m1.astype(float), m2b, np.ones(n), np.ones(n), 1e-10)
    assert exact_ot(c, m1, m2).success
    # still rejected: a real mismatch in float32, and a 1e-7 mismatch in float64
    with pytest.raises(ValueError, match="mass"):
        solve_qrot(c, m1, (1.001 * m2).astype(np.float32), 1e-2)
    with pytest.raises(ValueError, match="mass"):
        solve_qrot(c, m1.astype(float), m2.astype(float) * (1 + 1e-7), 1e-2)


def test_exact_ot_mass_message_does_not_suggest_eps():
    c, a, b = _ok()
    with pytest.raises(ValueError, match="equal mass") as info:
        exact_ot(c, a, 2 * b)
    assert "eps" not in str(info.value)
    with pytest.raises(ValueError, match="equal mass") as info:
        exact_ot_1d(np.arange(6.0), np.arange(6.0), a, 2 * b)
    assert "eps" not in str(info.value)
    with pytest.raises(ValueError, match="eps > 0"):  # solve_qrot has eps: the hint stays
        solve_qrot(c, a, 2 * b, 0.1)


def test_exact_ot_feasible_with_tiny_row_mass():
    """Found by the property tests: HiGHS declared this feasible LP (row masses 0.25 and
    1e-7, one column) infeasible; exact_ot now poses it for unit mass and, should presolve
    still say 'infeasible' (impossible for equal nonnegative masses), solves without it."""
    c = np.zeros((5, 5))
    w1 = np.array([0.5, 1.0, 1.0, 1.0, 0.1])
    m1 = np.array([0.5, 0.0, 0.0, 0.0, 1e-6])
    m2 = np.array([w1 @ m1, 0.0, 0.0, 0.0, 0.0])
    for cc in (c, c + 1.0):
        ex = exact_ot(cc, m1, m2, w1)
        assert ex.success, ex.message
        T = ex.masses.toarray()
        assert np.allclose(T.sum(axis=1), w1 * m1, rtol=0, atol=1e-15)
        assert np.allclose(T.sum(axis=0), m2, rtol=0, atol=1e-15)
        assert abs(ex.cost - cc[0, 0] * m2.sum()) <= 1e-15


# -- options ----------------------------------------------------------------------

def test_qrot_options_defaults_are_those_of_solve_qrot():

    from femot.core import QROTOptions

    sig = inspect.signature(solve_qrot).parameters
    for f in dataclasses.fields(QROTOptions):
        assert sig[f.name].default == f.default, f.name
    assert QROTOptions.from_mapping(None) == QROTOptions()
    opts = QROTOptions(tol=1e-8)
    assert QROTOptions.from_mapping(opts) is opts
    assert QROTOptions.from_mapping({"tol": 1e-8}) == opts
    assert QROTOptions.from_mapping(opts.as_kwargs()) == opts


def test_qrot_options_refuse_unknown_keys_and_bad_values():
    from femot.core import QROTOptions

    with pytest.raises(ValueError, match="valid: tol, max_iter, init, linear_solver, lm, screening, curve, verbose"):
        QROTOptions.from_mapping({"tol": 1e-8, "solver": "cg"})
    with pytest.raises(TypeError):
        QROTOptions.from_mapping([("tol", 1e-8)])
    for bad in ({"tol": 0.0}, {"tol": np.nan}, {"max_iter": -1}, {"max_iter": 2.5}, {"init": "nope"},
                {"linear_solver": "lu"}, {"lm": -1.0}, {"screening": "yes"}, {"verbose": 2}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            QROTOptions.from_mapping(bad)
    with pytest.raises(dataclasses.FrozenInstanceError):
        QROTOptions().tol = 1.0
    c, m1, m2 = _ok()
    with pytest.raises(ValueError, match="linear_solver"):
        solve_qrot(c, m1, m2, 0.1, linear_solver="lu")


def test_solve_qrot_with_options_object_is_the_same_solve():
    from femot.core import QROTOptions

    c, m1, m2 = _ok()
    opts = QROTOptions.from_mapping({"tol": 1e-12, "linear_solver": "direct"})
    a = solve_qrot(c, m1, m2, 0.1, **opts.as_kwargs())
    b = solve_qrot(c, m1, m2, 0.1, tol=1e-12, linear_solver="direct")
    assert np.array_equal(a.alpha, b.alpha) and np.array_equal(a.beta, b.beta) and a.nit == b.nit


def test_newton_matrix_assembly_matches_its_block_definition():
    """K.sparse() equals [[diag, W1 P W2], [W2 P^T W1, diag]] entry by entry (empty rows and columns too)."""
    import scipy.sparse as sp

    from femot.core.linalg import NewtonMatrix

    rng = np.random.default_rng(0)
    for seed in range(10):
        n1, n2 = (int(k) for k in rng.integers(1, 30, 2))
        P = sp.random(n1, n2, density=float(rng.random()), format="csr", random_state=seed)
        w1, w2 = rng.random(n1) + 0.1, rng.random(n2) + 0.1
        K = NewtonMatrix(P.indptr, P.indices, n2, w1, w2, 0.3)
        B = sp.diags(w1) @ sp.csr_matrix((np.ones(P.nnz), P.indices, P.indptr), shape=(n1, n2)) @ sp.diags(w2)
        ref = sp.bmat([[sp.diags(K.diag[:n1]), B], [B.T, sp.diags(K.diag[n1:])]]).toarray()
        assert np.array_equal(K.sparse().toarray(), ref)
