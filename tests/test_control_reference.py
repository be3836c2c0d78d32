"""Tests of the exact (OCP) reference and the 1D Wasserstein distances (Part II, Section 3.2.2)."""
import sys
import time

import numpy as np
import pytest
import scipy.sparse as sp
import skfem
from scipy.optimize import linprog, minimize

from femot.core import monotone_coupling_1d, wasserstein_pp_1d
from femot.fem.meshes import boundary_distance
from femot.fem.poisson import PoissonOperator
from femot.problems.control_reference import control_objective, solve_control_reference, transport_cost_matrix


def lp_transport(x1, m1, x2, m2, beta):
    """Exact OT cost by a dense LP, independent of the 1D formulas."""
    c = np.abs(x1[:, None] - x2[None, :]) ** beta
    n1, n2 = c.shape
    A = sp.vstack([sp.kron(sp.eye(n1), np.ones((1, n2))), sp.kron(np.ones((1, n1)), sp.eye(n2))])
    res = linprog(c.ravel(), A_eq=A, b_eq=np.concatenate([m1, m2]), bounds=(0, None),
                  method="highs")
    assert res.success
    return res.fun


def random_measure(rng, n, lo=0.0, hi=1.0, total=1.0, zeros=True):
    x = rng.uniform(lo, hi, n)
    m = rng.random(n)
    if zeros:
        m[rng.random(n) < 0.2] = 0.0
    m[0] += 0.1
    return x, total * m / m.sum()


# --------------------------------------------------------------- 1D distances

@pytest.mark.parametrize("seed", range(5))
def test_wasserstein_1d_against_linear_programming(seed):
    rng = np.random.default_rng(seed)
    x1, m1 = random_measure(rng, 7)
    x2, m2 = random_measure(rng, 9, -0.5, 1.5)
    w1 = wasserstein_pp_1d(x1, x2, m1, m2, p=1)
    assert abs(w1 - lp_transport(x1, m1, x2, m2, 1.0)) <= 1e-10
    assert abs(wasserstein_pp_1d(x1, x2, m1, m2, p=1.0) - w1) <= 1e-12
    for beta in (1.5, 2.0, 3.0):
        wb = wasserstein_pp_1d(x1, x2, m1, m2, p=beta)
        assert abs(wb - lp_transport(x1, m1, x2, m2, beta)) <= 1e-10 * max(1, wb)


@pytest.mark.parametrize("seed", range(3))
def test_monotone_plan_marginals_and_cost(seed):
    rng = np.random.default_rng(seed)
    x1, m1 = random_measure(rng, 8, total=2.5)
    x2, m2 = random_measure(rng, 5, total=2.5)
    P = monotone_coupling_1d(x1, x2, m1, m2)
    assert P.shape == (8, 5) and P.min() >= 0
    assert np.allclose(np.asarray(P.sum(axis=1)).ravel(), m1, atol=1e-14)
    assert np.allclose(np.asarray(P.sum(axis=0)).ravel(), m2, atol=1e-14)
    c = np.abs(x1[:, None] - x2[None, :]) ** 2
    assert abs(P.multiply(c).sum() - wasserstein_pp_1d(x1, x2, m1, m2, p=2.0)) <= 1e-13
    # monotone: the support has no crossing pairs (x1 < x1', x2 > x2')
    i, j = P.nonzero()
    a, b = x1[i], x2[j]
    assert not np.any((a[:, None] < a[None, :]) & (b[:, None] > b[None, :]))


def test_wasserstein_symmetric_and_zero_on_equal_measures():
    rng = np.random.default_rng(11)
    x1, m1 = random_measure(rng, 6)
    x2, m2 = random_measure(rng, 6)
    assert wasserstein_pp_1d(x1, x1, m1, m1, p=1) == 0
    assert wasserstein_pp_1d(x1, x1[::-1], m1, m1[::-1], p=2.0) == 0
    assert abs(wasserstein_pp_1d(x1, x2, m1, m2, p=1) - wasserstein_pp_1d(x2, x1, m2, m1, p=1)) <= 1e-15


def test_wasserstein_bad_input():
    x = np.array([0.0, 1.0])
    with pytest.raises(ValueError, match="mu1 and mu2"):
        wasserstein_pp_1d(x, x, [0.5, 0.5], [0.5, 0.6], p=1)
    with pytest.raises(ValueError, match="mu1"):
        wasserstein_pp_1d(x, x, [-0.5, 1.5], [0.5, 0.5], p=1)
    with pytest.raises(ValueError, match="mu2"):
        wasserstein_pp_1d(x, x, [0.5, 0.5], [1.0], p=2.0)
    with pytest.raises(ValueError, match="p"):
        wasserstein_pp_1d(x, x, [0.5, 0.5], [0.5, 0.5], p=0.5)
    with pytest.raises(ValueError, match="x2"):
        wasserstein_pp_1d(x, np.zeros((2, 2)), [0.5, 0.5], [0.5, 0.5], p=1)


# --------------------------------------------------------------- the QP

def test_boundary_distance():
    d = boundary_distance(skfem.MeshLine(np.linspace(-1, 2, 5)), np.array([-1.0, 0.0, 1.5]), signed=False)
    assert np.allclose(d, [0.0, 1.0, 0.5])
    square = skfem.MeshTri.init_sqsymmetric().refined(1)
    d = boundary_distance(square, np.array([[0.5, 0.5], [0.5, 0.2], [0.9, 0.7], [0.0, 0.3]]), signed=False)
    assert np.allclose(d, [0.5, 0.2, 0.1, 0.0])


def setup_1d(n=41, seed=0, rho=0.1):
    """Instance with an attainable desired state y_d = G m_target."""
    rng = np.random.default_rng(seed)
    op = PoissonOperator(skfem.MeshLine(np.linspace(0, 1, n)))
    x = op.vertices[:, 0]
    adm = np.minimum(x, 1 - x) >= rho - 1e-12
    m_target = np.where(adm, rng.random(n) ** 3, 0.0)
    m_target /= m_target.sum()
    mu2 = np.where(adm, np.exp(-((x - 0.45) / 0.12) ** 2), 0.0)
    mu2 /= mu2.sum()
    return op, x, m_target, mu2


def objective(op, y_d, c, nu, pi, rows):
    """Objective of the plan formulation, evaluated from scratch."""
    m = np.zeros(op.nvertices)
    m[rows] = pi.sum(axis=1)
    return op.tracking_value_and_gradient(m, y_d)[0] + nu * np.sum(c * pi)


@pytest.mark.parametrize("nu", [1e-4, 1e-2])
def test_reference_optimality_certificate(nu):
    op, x, m_target, mu2 = setup_1d()
    y_d = op.state(m_target)
    r = solve_control_reference(op, y_d, mu2, nu, rho=0.1)
    assert r.success, r.message
    pi = r.plan.toarray()
    rows = r.control_vertices
    assert np.all(np.minimum(x[rows], 1 - x[rows]) >= 0.1 - 1e-12)
    assert pi.min() >= 0
    assert np.allclose(pi.sum(axis=0), mu2, atol=1e-12)
    assert np.allclose(r.masses[rows], pi.sum(axis=1), atol=1e-15)
    assert np.all(np.delete(r.masses, rows) == 0)
    # first-order condition recomputed here: with g_ij = dT/dm_i + nu c_ij,
    # <g, pi> = sum_j mu2_j min_i g_ij (no feasible direction decreases the objective)
    _, grad = op.tracking_value_and_gradient(r.masses, y_d)
    c = np.abs(x[rows][:, None] - x[None, :]) ** 2
    g = grad[rows][:, None] + nu * c
    gap = np.sum(g * pi) - mu2 @ g.min(axis=0)
    assert -1e-12 <= gap <= 1e-10 * max(1.0, r.fun)
    # the reported objective splits into tracking and W_2^2(m, mu2)
    fun, tracking, transport = control_objective(op, r.masses, y_d, mu2, nu)
    assert abs(r.tracking - tracking) <= 1e-14 + 1e-12 * tracking
    assert abs(r.transport - transport) <= 1e-9 * max(transport, 1e-12)
    assert abs(r.fun - fun) <= 1e-10 * max(fun, 1e-12)


def test_reference_not_worse_than_feasible_perturbations():
    op, x, m_target, mu2 = setup_1d(n=31, seed=2)
    y_d = 0.5 * op.state(m_target)
    nu = 1e-3
    r = solve_control_reference(op, y_d, mu2, nu, rho=0.1)
    assert r.success
    pi, rows = r.plan.toarray(), r.control_vertices
    c = transport_cost_matrix(x[rows], x, 2.0)
    f0 = objective(op, y_d, c, nu, pi, rows)
    assert abs(f0 - r.fun) <= 1e-12 * max(r.fun, 1e-12)
    # f(q) >= min f >= f0 - gap for every feasible q (convexity)
    slack = max(r.residuals["gap"], 0.0) + 1e-13 * f0
    rng = np.random.default_rng(5)
    na, n2 = pi.shape
    for _ in range(200):
        # move mass of one target node between two admissible nodes (stays feasible)
        i, j = divmod(int(rng.choice(np.flatnonzero(pi.ravel() > 0))), n2)
        k = int(rng.integers(na))
        t = pi[i, j] * rng.random()
        q = pi.copy()
        q[i, j] -= t
        q[k, j] += t
        assert objective(op, y_d, c, nu, q, rows) >= f0 - slack
    for _ in range(20):
        # convex combination with a random feasible plan
        rand = rng.random((na, n2))
        rand *= mu2 / rand.sum(axis=0)
        s = rng.random() * 0.1
        assert objective(op, y_d, c, nu, (1 - s) * pi + s * rand, rows) >= f0 - slack


def test_large_nu_control_approaches_prior():
    """nu W_2^2(m, mu2) <= T(mu2) - T(m) gives W_1 <= W_2 <= sqrt(T(mu2) / nu)."""
    op, x, m_target, mu2 = setup_1d(seed=3)
    y_d = op.state(m_target)
    T_prior = op.tracking_value_and_gradient(mu2, y_d)[0]
    dists = []
    for nu in (1e-3, 1e-1, 1e1, 1e3):
        r = solve_control_reference(op, y_d, mu2, nu, rho=0.1)
        assert r.success
        w1 = wasserstein_pp_1d(x, x, r.masses, mu2, p=1)
        w2 = np.sqrt(wasserstein_pp_1d(x, x, r.masses, mu2, p=2.0))
        assert w1 <= w2 + 1e-12
        assert w2 <= np.sqrt(T_prior / nu) + 1e-9
        dists.append(w1)
    assert all(b <= a + 1e-12 for a, b in zip(dists, dists[1:]))
    assert dists[-1] <= 1e-3 * dists[0]


def test_small_nu_recovers_the_control_behind_y_d():
    """y_d = G m_true: T(m) <= nu W_2^2(m_true, mu2) and m -> m_true as nu -> 0."""
    op, x, m_true, mu2 = setup_1d(seed=4)
    y_d = op.state(m_true)
    W_true = wasserstein_pp_1d(x, x, m_true, mu2, p=2.0)
    errs = []
    for nu in (1e-4, 1e-6, 1e-8):
        r = solve_control_reference(op, y_d, mu2, nu, rho=0.1)
        assert r.success
        assert r.tracking <= nu * W_true * (1 + 1e-6) + 1e-15
        errs.append(wasserstein_pp_1d(x, x, r.masses, m_true, p=1))
    assert errs[-1] <= 1e-4
    assert errs[-1] < errs[0]


def test_agreement_with_scipy_on_tiny_instance():
    rng = np.random.default_rng(6)
    op = PoissonOperator(skfem.MeshLine(np.linspace(0, 1, 6)))
    x2 = np.sort(rng.uniform(0.1, 0.9, 6))
    mu2 = rng.random(6)
    mu2 /= mu2.sum()
    y_d = lambda z: 0.08 * np.sin(np.pi * z[0]) * (1 + z[0])
    nu, beta = 0.05, 1.5
    r = solve_control_reference(op, y_d, mu2, nu, target_points=x2, beta=beta, rho=0.2)
    assert r.success, r.message
    rows = r.control_vertices
    assert np.allclose(op.vertices[rows, 0], [0.2, 0.4, 0.6, 0.8])
    c = np.abs(op.vertices[rows, 0][:, None] - x2[None, :]) ** beta
    na, n2 = c.shape

    def fun(z):
        pi = z.reshape(na, n2)
        m = np.zeros(op.nvertices)
        m[rows] = pi.sum(axis=1)
        val, g = op.tracking_value_and_gradient(m, y_d)
        return val + nu * np.sum(c * pi), (g[rows][:, None] + nu * c).ravel()

    cons = {"type": "eq", "fun": lambda z: z.reshape(na, n2).sum(axis=0) - mu2,
            "jac": lambda z: np.kron(np.ones((1, na)), np.eye(n2))}
    z0 = np.tile(mu2 / na, (na, 1)).ravel()
    res = minimize(fun, z0, jac=True, method="SLSQP", bounds=[(0, None)] * z0.size,
                   constraints=[cons], options={"ftol": 1e-15, "maxiter": 1000})
    assert res.success
    assert abs(res.fun - r.fun) <= 1e-8 * abs(r.fun)
    # the tracking is strictly convex in m (G injective on interior nodes): unique m
    m_scipy = res.x.reshape(na, n2).sum(axis=1)
    assert np.max(np.abs(m_scipy - r.masses[rows])) <= 1e-4


def test_reference_80_nodes_is_fast():
    op, x, m_target, mu2 = setup_1d(n=80, seed=7)
    t0 = time.perf_counter()
    r = solve_control_reference(op, 0.7 * op.state(m_target), mu2, 1e-3, rho=0.1)
    elapsed = time.perf_counter() - t0
    assert r.success, r.message
    assert elapsed < 5.0
    assert r.residuals["gap"] <= 1e-8 * max(1, r.fun)


def test_reference_2d():
    op = PoissonOperator(skfem.MeshTri.init_sqsymmetric().refined(2))
    rng = np.random.default_rng(8)
    mu2 = rng.random(op.nvertices)
    mu2 /= mu2.sum()
    y_d = lambda z: 0.02 * np.sin(np.pi * z[0]) * np.sin(np.pi * z[1])
    r = solve_control_reference(op, y_d, mu2, 0.01, rho=0.2)
    assert r.success, r.message
    v = op.vertices[r.control_vertices]
    assert np.all(np.minimum(v, 1 - v).min(axis=1) >= 0.2 - 1e-12)
    fun, _, _ = control_objective(op, r.masses, y_d, mu2, 0.01)  # W_2^2 by an LP
    assert abs(fun - r.fun) <= 1e-9 * r.fun


def test_reference_accepts_a_mesh():
    mesh = skfem.MeshLine(np.linspace(0, 1, 9))
    r = solve_control_reference(mesh, np.zeros(9), np.full(9, 1 / 9), 1.0)
    assert r.success
    # with y_d = 0 and rho = 0, moving all mass to the boundary kills the tracking,
    # but the transport cost keeps the control spread: the objective is positive
    assert r.fun > 0 and r.tracking >= 0


def test_reference_bad_input():
    op = PoissonOperator(skfem.MeshLine(np.linspace(0, 1, 9)))
    mu2 = np.full(9, 1 / 9)
    yd = np.zeros(9)
    with pytest.raises(ValueError, match="mu2"):
        solve_control_reference(op, yd, mu2[:-1], 1.0)
    with pytest.raises(ValueError, match="mu2"):
        solve_control_reference(op, yd, -mu2, 1.0)
    with pytest.raises(ValueError, match="nu"):
        solve_control_reference(op, yd, mu2, -1.0)
    with pytest.raises(ValueError, match="rho"):
        solve_control_reference(op, yd, mu2, 1.0, rho=0.6)
    with pytest.raises(ValueError, match="beta"):
        solve_control_reference(op, yd, mu2, 1.0, beta=0.5)
    with pytest.raises(ValueError, match="solver"):
        solve_control_reference(op, yd, mu2, 1.0, solver="cplex")
    with pytest.raises(ValueError, match="y_d"):
        solve_control_reference(op, np.zeros(3), mu2, 1.0)
    with pytest.raises(ValueError, match="target_points"):
        solve_control_reference(op, yd, mu2, 1.0, target_points=np.zeros((9, 2)))
    with pytest.raises(ValueError, match="poisson"):
        solve_control_reference("mesh", yd, mu2, 1.0)


def test_missing_qp_solver_says_how_to_get_it(monkeypatch):
    op = PoissonOperator(skfem.MeshLine(np.linspace(0, 1, 5)))
    monkeypatch.setitem(sys.modules, "clarabel", None)  # makes `import clarabel` fail
    with pytest.raises(ImportError, match=r"needs the QP solver clarabel; clarabel is a dependency of femot"):
        solve_control_reference(op, np.zeros(5), np.full(5, 0.2), 1.0)
