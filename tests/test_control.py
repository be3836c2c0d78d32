"""The regularized control problem (OCP^delta_gamma) of Part II, Section 3.2.2."""

import numpy as np
import pytest
import skfem
from _instances import square_control_data

from femot.core import wasserstein_pp_1d
from femot.fem import PoissonOperator
from femot.problems import ControlProblem, ControlToPlan


def line_problem(cells=32, rho=0.2, seed=0):
    """A 1D instance: known control (bump), y_d = G m_true, prior mu2 (another bump)."""
    op = PoissonOperator(skfem.MeshLine(np.linspace(0.0, 1.0, cells + 1)))
    x = op.vertices[:, 0]
    inside = (x >= rho - 1e-12) & (x <= 1 - rho + 1e-12)

    def bump(c, s):
        m = np.where(inside, np.exp(-((x - c) / s) ** 2), 0.0)
        return m / m.sum()

    m_true = bump(0.38, 0.06)
    mu2 = bump(0.6, 0.1)
    return op, x, m_true, op.state(m_true), mu2


def random_control(P, seed):
    rng = np.random.default_rng(seed)
    x = rng.random(P.n) + 0.1
    return P.mass * x / x.sum()


def _pattern(P):
    plan = P.last["lower"].plan
    return plan.indptr.copy(), plan.indices.copy()


def fd_check(P, x, d):
    """Central difference on a segment inside one smooth piece of the reduced objective.

    The plan's support (the active set of the lower level) is the same at x - h d, x and
    x + h d, so the map is smooth on the segment (Part III Thm 3.11); h shrinks until then.
    """
    f, g = P(x)
    base = _pattern(P)
    for h in (1e-6, 3e-7, 1e-7, 3e-8):
        fp = P(x + h * d)[0]
        same = all(np.array_equal(a, b) for a, b in zip(_pattern(P), base))
        fm = P(x - h * d)[0]
        same = same and all(np.array_equal(a, b) for a, b in zip(_pattern(P), base))
        if same:
            return abs((fp - fm) / (2 * h) - g @ d) / abs(g @ d)
    raise AssertionError("no step keeps the active set of the lower level fixed")


@pytest.mark.parametrize("eps", [0.0, 1e-2])
@pytest.mark.parametrize("seed", [0, 1])
def test_reduced_gradient_finite_differences_1d(eps, seed):
    op, x, m_true, y_d, mu2 = line_problem()
    P = ControlProblem(op, y_d, mu2, 0.05, 1e-3, 0.12, rho=0.2, eps=eps,
                       qrot_options={"tol": 1e-13}, check_resolution=False)
    xc = random_control(P, seed)
    P(xc)
    # differentiable point: the biactive set of the lower level is empty
    assert P.last["lower"].biactive()[0].size == 0
    rng = np.random.default_rng(10 + seed)
    d = rng.standard_normal(P.n)
    if eps == 0.0:
        d -= d.mean()  # eps = 0 needs equal masses: stay on the simplex's tangent space
    assert fd_check(P, xc, d) <= 1e-6


def test_reduced_gradient_finite_differences_2d():
    rho = 0.25
    _, op, y_d, mu2 = square_control_data(rho)
    P = ControlProblem(op, y_d, mu2, 0.1, 1e-2, 0.2, rho=rho, eps=1e-3,
                       qrot_options={"tol": 1e-13}, check_resolution=False)
    xc = random_control(P, 3)
    P(xc)
    assert P.last["lower"].biactive()[0].size == 0
    d = np.random.default_rng(4).standard_normal(P.n)
    assert fd_check(P, xc, d) <= 1e-6


def test_transport_gradient_is_adjoint_of_the_plan_derivative():
    """<pullback(G), h> = <G, S'(T m; T h, 0)>: the adjoint chain (T^delta)^T vjp against jvp."""
    op, x, m_true, y_d, mu2 = line_problem()
    P = ControlProblem(op, y_d, mu2, 1.0, 1e-3, 0.12, rho=0.2, eps=1e-2,
                       qrot_options={"tol": 1e-13}, check_resolution=False)
    xc = random_control(P, 5)
    res = P.lower.solve(xc)
    rng = np.random.default_rng(6)
    G = rng.standard_normal((P.q.n, P.q.n))
    h = rng.standard_normal(P.n)
    lhs = P.lower.pullback(res, G) @ h
    dpi = res.jvp(P.T.apply(h), np.zeros(P.q.n))  # T is linear: its derivative is T
    rhs = float(dpi.multiply(G).sum())
    assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(rhs))


def test_gradient_parts_and_value():
    """fun = tracking + nu * transport with transport = sum w_i w_j c_ij pi_ij; nu = 0 leaves the tracking."""
    op, x, m_true, y_d, mu2 = line_problem()
    P = ControlProblem(op, y_d, mu2, 0.3, 1e-3, 0.12, rho=0.2, check_resolution=False)
    P0 = ControlProblem(op, y_d, mu2, 0.0, 1e-3, 0.12, rho=0.2, check_resolution=False)
    xc = random_control(P, 7)
    e, e0 = P.evaluate(xc), P0.evaluate(xc)
    pi = e["lower"].plan.toarray()
    w = P.q.weights
    assert np.isclose(e["transport"], np.sum(w[:, None] * w[None, :] * P.c * pi), rtol=1e-12)
    assert np.isclose(e["fun"], e["tracking"] + 0.3 * e["transport"], rtol=1e-14)
    y = op.state(P.full(xc))
    assert np.isclose(e["tracking"], 0.5 * (y - y_d) @ (op.M @ (y - y_d)), rtol=1e-10, atol=1e-16)
    # the tracking gradient alone when nu = 0, and the smoothed marginals carry mass |mu2| + delta
    assert np.allclose(e0["grad"], P0.tracking(xc)[1])
    assert np.isclose(w @ P.lower.density(xc), 1.0 + 0.12, rtol=1e-12)
    assert np.isclose(w @ P.mu2_density, 1.0 + 0.12, rtol=1e-12)


def test_known_control_is_recovered_as_nu_tends_to_zero():
    """y_d = G m_true: the regularized optimal controls approach m_true in W1 as nu -> 0."""
    op, x, m_true, y_d, mu2 = line_problem(cells=32)
    errs = []
    for nu in (1e-1, 1e-2, 1e-4):
        P = ControlProblem(op, y_d, mu2, nu, 1e-3, 0.1, rho=0.2, check_resolution=False)
        # loose relative stationarity: this test is about the limit nu -> 0, not the optimizer
        r = P.solve(options={"max_iter": 300}, rtol=1e-2)
        assert r.success, r.message
        assert np.isclose(r.x.sum(), 1.0) and r.x.min() >= 0
        errs.append(wasserstein_pp_1d(x, x, r.masses, m_true, p=1))
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.05 * errs[0]
    # the prior is far from the known control, so the transport term really pulls away at nu = 0.1
    assert errs[0] > 0.2 * wasserstein_pp_1d(x, x, mu2, m_true, p=1)


@pytest.mark.parametrize("transport", ["plan", "value"])
def test_regularized_control_approaches_exact_reference(transport):
    """Two coupled levels (gamma = delta^3): the W1 error to the exact QP control and the gap decrease.

    Both formulations have the limit (OCP); the value formulation is solved to its certified
    Frank-Wolfe gap, the plan formulation to a loose relative stationarity (kinks)."""
    from femot.problems.control_reference import solve_control_reference

    op, x, m_true, y_d, mu2 = line_problem(cells=64)
    nu = 0.05
    ref = solve_control_reference(op, y_d, mu2, nu, rho=0.2)
    assert ref.success
    errs, gaps = [], []
    for delta in (0.16, 0.08):
        P = ControlProblem(op, y_d, mu2, nu, delta**3, delta, rho=0.2, transport=transport, check_resolution=False)
        r = P.solve(options={"max_iter": 300}, rtol=1e-2 if transport == "plan" else 1e-5)
        assert r.success, r.message
        assert r.formulation == transport
        if transport == "value":
            assert r.nit <= 25 and 0 <= r.fw_gap <= 1e-8 * abs(r.fun)
            assert r.transport >= r.transport_cost  # V_gamma >= <c, pi_gamma> (eps = 0)
        errs.append(wasserstein_pp_1d(x, x, r.masses, ref.masses, p=1))
        J, J_track, J_w = P.exact_objective(r.x)
        assert np.isclose(J, J_track + nu * J_w)
        assert J >= ref.fun - 1e-10  # the exact control minimizes the unregularized objective
        gaps.append(J - ref.fun)
    assert errs[1] < 0.8 * errs[0]
    assert gaps[1] < gaps[0]


def test_control_vertices_subset_and_warm_start_counters():
    op, x, m_true, y_d, mu2 = line_problem()
    adm = np.flatnonzero((x >= 0.2 - 1e-12) & (x <= 0.8 + 1e-12))
    P = ControlProblem(op, y_d, mu2, 0.05, 1e-3, 0.12, rho=0.2, control_vertices=adm[::2], check_resolution=False)
    assert P.n == adm[::2].size
    xc = P.uniform()
    P(xc)
    first = P.lower.newton_iterations
    P.evaluate(xc)  # same point: the warm start is the solution, no Newton step needed
    assert P.lower.newton_iterations == first
    assert P.lower.solves == 2 and P.lower.failures == 0


def test_lower_level_failure_is_not_silent():
    op, x, m_true, y_d, mu2 = line_problem()
    P = ControlProblem(op, y_d, mu2, 0.05, 1e-3, 0.12, rho=0.2, qrot_options={"max_iter": 0}, check_resolution=False)
    e = P.evaluate(P.uniform())
    assert np.isnan(e["fun"]) and np.all(np.isnan(e["grad"]))
    assert P.lower.failures == 1
    with pytest.raises(RuntimeError, match="lower level"):
        P.solve()


def test_bad_input_raises_value_error_naming_argument():
    op, x, m_true, y_d, mu2 = line_problem()
    with pytest.raises(ValueError, match="rho"):
        ControlProblem(op, y_d, mu2, 0.05, 1e-3, 0.12, rho=0.1, check_resolution=False)
    with pytest.raises(ValueError, match="beta"):
        ControlProblem(op, y_d, mu2, 0.05, 1e-3, 0.12, rho=0.2, beta=0.5, check_resolution=False)
    with pytest.raises(ValueError, match="gamma"):
        ControlProblem(op, y_d, mu2, 0.05, -1.0, 0.12, rho=0.2, check_resolution=False)
    with pytest.raises(ValueError, match="nu"):
        ControlProblem(op, y_d, mu2, -0.05, 1e-3, 0.12, rho=0.2, check_resolution=False)
    with pytest.raises(ValueError, match="mu2"):
        ControlProblem(op, y_d, mu2[:-1], 0.05, 1e-3, 0.12, rho=0.2, check_resolution=False)
    with pytest.raises(ValueError, match="y_d"):
        ControlProblem(op, y_d[:-1], mu2, 0.05, 1e-3, 0.12, rho=0.2, check_resolution=False)
    with pytest.raises(ValueError, match="control_vertices"):
        ControlProblem(op, y_d, mu2, 0.05, 1e-3, 0.12, rho=0.2, control_vertices=[0, 10], check_resolution=False)
    bad_mu2 = mu2.copy()
    bad_mu2[1] = 0.1  # support closer than delta to the boundary
    with pytest.raises(ValueError, match="delta"):
        ControlProblem(op, y_d, bad_mu2, 0.05, 1e-3, 0.12, rho=0.2, check_resolution=False)
    P = ControlProblem(op, y_d, mu2, 0.05, 1e-3, 0.12, rho=0.2, check_resolution=False)
    with pytest.raises(ValueError, match="x"):
        P.evaluate(np.ones(P.n + 1))


def test_control_to_plan_rejects_inconsistent_shapes():
    op, x, m_true, y_d, mu2 = line_problem()
    P = ControlProblem(op, y_d, mu2, 0.05, 1e-3, 0.12, rho=0.2, check_resolution=False)
    with pytest.raises(ValueError, match="c"):
        ControlToPlan(P.q, P.q, P.T, P.mu2_density, P.c[:-1], 1e-3)
    with pytest.raises(ValueError, match="m2"):
        ControlToPlan(P.q, P.q, P.T, P.mu2_density[:-1], P.c, 1e-3)


def _small_gamma_square(gamma=1e-5):
    mesh, op, y_d, mu2 = square_control_data(0.25)
    return ControlProblem(op, y_d, mu2, 0.05, gamma, 0.25, rho=0.25, transport="value", check_resolution=False)


def test_gamma_path_reaches_the_minimizer_of_the_direct_solve():
    """The value formulation is convex: a path of larger gammas ends at the same certified minimizer."""
    P = _small_gamma_square(1e-4)
    assert P.gamma_path() == []  # gamma_hat above PATH_GAMMA_HAT: no automatic path
    direct = P.solve()
    P.lower.reset()
    path = P.solve(gamma_path=[1e-2, 1e-3])
    assert direct.success and path.success and "gamma_levels" not in direct
    assert [lev["gamma"] for lev in path.gamma_levels] == [1e-2, 1e-3]
    assert path.fw_gap <= 1e-8 * abs(path.fun) and direct.fw_gap <= 1e-8 * abs(direct.fun)
    assert abs(path.fun - direct.fun) <= direct.fw_gap + path.fw_gap + 1e-13
    # the counters include the levels' effort
    assert path.nit == path.tr.nit + sum(lev["nit"] for lev in path.gamma_levels)
    assert _small_gamma_square(1e-7).gamma_path() == pytest.approx([1e-5, 1e-6], rel=1e-12)


def test_gamma_path_drops_levels_whose_plan_would_be_too_large(monkeypatch):
    """A path level whose estimated plan exceeds PATH_MAX_PLAN_NNZ (a costly factorization per iterate) is left out."""
    import femot.problems.control as C
    from femot.problems.control_size import _plan_nnz

    # the estimate grows with gamma (rows ~ r^d / h^d, r ~ gamma^(1 / (d + 2))) ...
    nnz = [_plan_nnz(10_000, 2, 1 / 64, g, 1.0) for g in (1e-5, 1e-6, 1e-7)]
    assert nnz[0] / nnz[1] == pytest.approx(10 ** 0.5) and nnz[1] / nnz[2] == pytest.approx(10 ** 0.5)
    # ... and gamma_path keeps the levels below the cap only
    P = _small_gamma_square(1e-7)
    assert P.gamma_path() == pytest.approx([1e-5, 1e-6], rel=1e-12)
    monkeypatch.setattr(C, "_plan_nnz", lambda nq, d, h, gamma, dens: 1e12 * gamma)
    monkeypatch.setattr(C, "PATH_MAX_PLAN_NNZ", 5e6)
    assert P.gamma_path() == pytest.approx([1e-6], rel=1e-12)
    monkeypatch.setattr(C, "PATH_MAX_PLAN_NNZ", 5e5)
    assert P.gamma_path() == []


def test_only_the_two_newest_evaluations_keep_their_hessian_factorization():
    P = _small_gamma_square(1e-4)
    rng = np.random.default_rng(0)
    xs = [P.uniform()]
    for _ in range(3):
        x = xs[-1] * rng.uniform(0.5, 1.5, P.n)
        xs.append(x * P.mass / x.sum())
    v = rng.standard_normal(P.n)
    v -= v.mean()
    hv = []
    for x in xs:
        P.evaluate(x)
        hv.append(P.hessp(x, v))  # factorizes the Newton matrix at x
    kept = ["_dual_cache" in e["lower"].__dict__ for e in P._evaluations.values()]
    assert kept == [False, False, True, True]
    # a product at an older point is the same after refactorizing
    np.testing.assert_allclose(P.hessp(xs[0], v), hv[0], rtol=1e-8, atol=1e-14 * np.abs(hv[0]).max())


def test_carried_potentials_give_the_plan_of_a_cold_solve():
    """MarginalToPlan.carry (stages from a larger gamma) reaches the cold solve's plan within tol."""
    from femot.problems import MarginalToPlan

    P = _small_gamma_square()
    mu = P.lower.density(P.uniform())
    coarse = MarginalToPlan(P.c, P.mu2_density, 1e-3, w1=P.q.weights, w2=P.q.weights)
    r0 = coarse.solve(mu)
    fine = MarginalToPlan(P.c, P.mu2_density, 1e-5, w1=P.q.weights, w2=P.q.weights)
    fine.warm = fine.carry(mu, (r0.alpha, r0.beta), 1e-3)
    assert fine.solves == 6  # three stages per decade
    carried = fine.solve(mu)
    cold = MarginalToPlan(P.c, P.mu2_density, 1e-5, w1=P.q.weights, w2=P.q.weights).solve(mu)
    assert carried.success and cold.success and carried.nit == 0
    w = P.q.weights
    tol = 1e-9 * float(w @ mu)
    assert abs(carried.plan - cold.plan).multiply(w[:, None] * w[None, :]).sum() <= tol


def test_far_warm_start_is_skipped_after_a_continuation():
    """At small gamma (cold start = continuation) a marginal that moved by more than WARM_MAX_CHANGE goes cold."""
    from femot.problems.plan_maps import WARM_MAX_CHANGE

    P = _small_gamma_square()
    x = P.uniform()
    r = P.lower.solve(x)
    assert r.init == "continuation" and P.lower.solves == 1
    y = x.copy()
    y[0] += 0.5 * x.sum() / x.size
    y *= x.sum() / y.sum()
    change = np.abs(P.lower.density(y) - P.lower.density(x)).max() / np.abs(P.lower.density(x)).max()
    assert change > WARM_MAX_CHANGE
    r2 = P.lower.solve(y)
    assert r2.success and r2.init == "continuation" and P.lower.solves == 2  # no warm attempt


def test_value_formulation_fixes_every_violated_bound_per_face():
    P = _small_gamma_square(1e-4)
    faces = {"active-set": 0, "projected": 0}
    runs = {}
    for sub in faces:

        def precond(x, free, sub=sub):  # one preconditioner per CG face
            faces[sub] += 1
            return P.hessian_preconditioner(x, free)

        P.lower.reset()
        opts = {"precond": precond} if sub == "active-set" else {"precond": precond, "subproblem": sub}
        runs[sub] = P.solve(gamma_path=None, options=opts)  # active-set: the default
    a, p = runs["active-set"], runs["projected"]
    assert a.success and p.success
    assert abs(a.fun - p.fun) <= a.fw_gap + p.fw_gap + 1e-13
    assert 0 < faces["active-set"] < faces["projected"], faces


def test_preconditioned_cg_needs_fewer_hessian_products_for_the_same_minimizer():
    P = _small_gamma_square(1e-4)
    plain = P.solve(gamma_path=None, options={"precond": None})
    P.lower.reset()
    pre = P.solve(gamma_path=None)
    assert plain.success and pre.success
    assert abs(pre.fun - plain.fun) <= pre.fw_gap + plain.fw_gap + 1e-13
    assert pre.nhev < plain.nhev
