"""Second-order information and the convex value formulation (docs/problems.md).

* ``QROTResult.dual_jvp``: derivative of the dual potentials (one sparse solve with the
  Newton matrix), checked against finite differences of re-solved potentials;
* ``QROTResult.dual_value``: the optimal value V, its envelope gradient ``w alpha``;
* ``ControlProblem(transport="value",
                       check_resolution=False)``: gradient, ``hessp`` (both formulations), convexity.
"""
import numpy as np
import pytest
import skfem
from _instances import random_1d_problem

from femot import solve_qrot
from femot.fem import PoissonOperator
from femot.fem.meshes import admissible_vertices
from femot.problems.control import ControlProblem

problem = random_1d_problem


def normalized(res, w1, w2):
    """Potentials with equal weighted means (the normalization dual_jvp returns for eps = 0)."""
    a, b = res.alpha.copy(), res.beta.copy()
    if res.eps == 0:
        s = 0.5 * (w1 @ a / w1.sum() - w2 @ b / w2.sum())
        a, b = a - s, b + s
    return a, b


def directions(rng, m1, m2, w1, w2, eps):
    h1, h2 = rng.standard_normal(m1.size), rng.standard_normal(m2.size)
    if eps == 0.0:  # stay on equal masses
        h2 += (w1 @ h1 - w2 @ h2) / w2.sum()
    return h1, h2


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_dual_jvp_matches_finite_differences(seed, eps):
    c, m1, m2, w1, w2, rng = problem(seed)
    gamma = 0.02
    res = solve_qrot(c, m1, m2, gamma, eps, w1, w2, tol=1e-14)
    assert res.success and res.biactive()[0].size == 0  # a differentiable point
    h1, h2 = directions(rng, m1, m2, w1, w2, eps)
    da, db = res.dual_jvp(h1, h2)
    t = 1e-6
    x0 = (res.alpha, res.beta)
    ap, bp = normalized(solve_qrot(c, m1 + t * h1, m2 + t * h2, gamma, eps, w1, w2, x0=x0, tol=1e-14), w1, w2)
    am, bm = normalized(solve_qrot(c, m1 - t * h1, m2 - t * h2, gamma, eps, w1, w2, x0=x0, tol=1e-14), w1, w2)
    fd = np.concatenate([ap - am, bp - bm]) / (2 * t)
    assert np.linalg.norm(np.concatenate([da, db]) - fd) <= 1e-6 * np.linalg.norm(fd)
    if eps == 0.0:  # the documented normalization
        assert abs(w1 @ da / w1.sum() - w2 @ db / w2.sum()) <= 1e-10 * np.abs(fd).max()


@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_dual_jvp_is_consistent_with_the_plan_derivative(eps):
    """pi = (alpha (+) beta - c)_+ / gamma, so jvp = chi ∘ (dalpha (+) dbeta) / gamma on the pattern."""
    c, m1, m2, w1, w2, rng = problem(4)
    gamma = 0.05
    res = solve_qrot(c, m1, m2, gamma, eps, w1, w2, tol=1e-14)
    h1, h2 = directions(rng, m1, m2, w1, w2, eps)
    da, db = res.dual_jvp(h1, h2)
    J = res.jvp(h1, h2).tocoo()
    expect = (da[J.row] + db[J.col]) / gamma
    assert np.abs(J.data - expect).max() <= 1e-8 * np.abs(expect).max()


def test_dual_jvp_at_a_kink_uses_the_chosen_set():
    """With A ⊂ Omega_0 the solve runs on Omega_+ ∪ A (Part III Thm 3.12), the same system as jvp.

    2 x 2 Hitchcock problem, c = [[0, 1], [1, 0]], unit marginals, gamma = 1: the regularized
    plan is the identity and the off-diagonal pairs are exactly biactive (alpha = beta = 1/2).
    """
    c = np.array([[0.0, 1.0], [1.0, 0.0]])
    w = np.ones(2)
    res = solve_qrot(c, [1.0, 1.0], [1.0, 1.0], 1.0, 0.0, w, w, tol=1e-14)
    rows, cols = res.biactive()
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0)]
    # A = None: the pattern is the diagonal (two components), consistent only if h1 = h2;
    # A = Omega_0: connected, and mass may move across (h2 = -h1)
    for A, h1, h2 in ((None, np.array([0.5, -0.5]), np.array([0.5, -0.5])),
                      ((rows, cols), np.array([0.5, -0.5]), np.array([-0.5, 0.5]))):
        da, db = res.dual_jvp(h1, h2, A=A)
        J = res.jvp(h1, h2, A=A).tocoo()
        assert np.allclose(J.data, (da[J.row] + db[J.col]) / res.gamma, rtol=1e-10, atol=1e-12)
        # the linearized marginal equations hold on the chosen pattern
        P = np.zeros((2, 2))
        P[J.row, J.col] = 1.0
        assert P.sum() == (2 if A is None else 4)
        assert np.allclose((P * (da[:, None] + db[None, :])).sum(1), res.gamma * h1, atol=1e-10)
        assert np.allclose((P * (da[:, None] + db[None, :])).sum(0), res.gamma * h2, atol=1e-10)
    with pytest.raises(ValueError, match="subset of the biactive set"):
        res.dual_jvp(h1, h2, A=(np.array([0]), np.array([0])))


def test_dual_jvp_rejects_mass_changing_directions_when_eps_is_zero():
    c, m1, m2, w1, w2, rng = problem(3)
    res = solve_qrot(c, m1, m2, 0.02, 0.0, w1, w2, tol=1e-14)
    with pytest.raises(ValueError, match="preserve mass"):
        res.dual_jvp(np.ones(m1.size), np.zeros(m2.size))
    with pytest.raises(ValueError, match="h1"):
        res.dual_jvp(np.ones(m1.size + 1), np.zeros(m2.size))


@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_dual_value_is_the_optimal_value_and_w_alpha_its_gradient(eps):
    c, m1, m2, w1, w2, rng = problem(6)
    gamma = 0.03
    res = solve_qrot(c, m1, m2, gamma, eps, w1, w2, tol=1e-14)
    V = res.dual_value(m1, m2)
    P = res.plan.toarray()
    if eps == 0.0:  # strong duality with the primal (H_gamma)
        primal = float(np.sum(w1[:, None] * w2[None, :] * (c * P + 0.5 * gamma * P * P)))
        assert abs(V - primal) <= 1e-10 * abs(primal)
        assert V >= res.transport_cost() - 1e-14  # V_gamma >= <c, pi_gamma>
    h1, h2 = directions(rng, m1, m2, w1, w2, eps)
    t = 1e-6
    x0 = (res.alpha, res.beta)
    Vp = solve_qrot(c, m1 + t * h1, m2 + t * h2, gamma, eps, w1, w2, x0=x0, tol=1e-14).dual_value(m1 + t * h1,
                                                                                                   m2 + t * h2)
    Vm = solve_qrot(c, m1 - t * h1, m2 - t * h2, gamma, eps, w1, w2, x0=x0, tol=1e-14).dual_value(m1 - t * h1,
                                                                                                   m2 - t * h2)
    g = w1 @ (res.alpha * h1) + w2 @ (res.beta * h2)
    assert abs((Vp - Vm) / (2 * t) - g) <= 1e-6 * abs(g)
    # second order: d/dt (w alpha . h) = w dalpha . h = <h, Hess V h> >= 0 (convexity)
    da, db = res.dual_jvp(h1, h2)
    curv = w1 @ (da * h1) + w2 @ (db * h2)
    assert curv >= -1e-12 * (np.abs(da).max() + np.abs(db).max())
    assert abs((Vp + Vm - 2 * V) / t**2 - curv) <= 1e-3 * abs(curv) + 1e-6


@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_value_is_convex_in_the_marginals(eps):
    c, m1, m2, w1, w2, rng = problem(7)
    gamma = 0.01
    a1 = rng.uniform(0.2, 2.0, m1.size)
    a1 /= w1 @ a1
    vals = []
    for lam in (0.0, 0.5, 1.0):
        mu = (1 - lam) * m1 + lam * a1
        vals.append(solve_qrot(c, mu, m2, gamma, eps, w1, w2, tol=1e-14).dual_value(mu, m2))
    assert vals[1] <= 0.5 * (vals[0] + vals[2]) + 1e-12


# ----------------------------------------------------------------------------- the control problem

def line_problem(cells=40, rho=0.2):
    op = PoissonOperator(skfem.MeshLine(np.linspace(0.0, 1.0, cells + 1)))
    x = op.vertices[:, 0]
    inside = (x >= rho - 1e-12) & (x <= 1 - rho + 1e-12)

    def bump(c, s):
        m = np.where(inside, np.exp(-((x - c) / s) ** 2), 0.0)
        return m / m.sum()

    return op, op.state(bump(0.38, 0.06)), bump(0.6, 0.1)


def random_control(P, seed):
    x = np.random.default_rng(seed).random(P.n) + 0.1
    return P.mass * x / x.sum()


def _pattern(P):
    plan = P.last["lower"].plan
    return plan.indptr.copy(), plan.indices.copy()


def central(P, x, d):
    """Central differences of f and grad f along d on a segment where the active set is fixed."""
    f, g = P(x)
    base = _pattern(P)
    for t in (1e-6, 3e-7, 1e-7):
        fp, gp = P(x + t * d)
        same = all(np.array_equal(a, b) for a, b in zip(_pattern(P), base))
        fm, gm = P(x - t * d)
        if same and all(np.array_equal(a, b) for a, b in zip(_pattern(P), base)):
            return g, (fp - fm) / (2 * t), (gp - gm) / (2 * t)
    raise AssertionError("no step keeps the active set of the lower level fixed")


def tangent(v):
    return v - v.mean()


@pytest.mark.parametrize("transport", ["value", "plan"])
@pytest.mark.parametrize("eps", [0.0, 1e-2])
def test_control_gradient_and_hessp_match_finite_differences_1d(transport, eps):
    op, y_d, mu2 = line_problem()
    P = ControlProblem(op, y_d, mu2, 0.05, 1e-3, 0.1, eps=eps, transport=transport, check_resolution=False)
    x = random_control(P, 1)
    d = tangent(np.random.default_rng(3).standard_normal(P.n))
    g, dfd, gfd = central(P, x, d)
    assert abs(dfd - g @ d) <= 1e-6 * abs(g @ d)
    Hd = P.hessp(x, d)
    # on the simplex only the tangent part of the gradient matters (eps = 0: alpha up to a shift)
    assert np.linalg.norm(tangent(Hd) - tangent(gfd)) <= 1e-6 * np.linalg.norm(tangent(gfd))
    if transport == "plan":  # the plan term is piecewise linear: hessp is the tracking Hessian
        assert np.allclose(Hd, P.tracking_hessp(d), rtol=0, atol=0)


def test_control_hessp_2d_value_formulation():
    mesh = skfem.MeshTri.init_sqsymmetric().refined(3)
    op = PoissonOperator(mesh)
    X = op.vertices
    adm = admissible_vertices(op.mesh, 0.2)
    mt = np.zeros(op.nvertices)
    mt[adm] = np.exp(-((X[adm] - [0.4, 0.45]) ** 2).sum(1) / 0.02)
    mt /= mt.sum()
    mu2 = np.zeros(op.nvertices)
    mu2[adm] = np.exp(-((X[adm] - [0.6, 0.55]) ** 2).sum(1) / 0.03)
    mu2 /= mu2.sum()
    P = ControlProblem(op, op.state(mt), mu2, 0.05, 5e-3, 0.2, rho=0.2, eps=1e-3, transport="value",
                       check_resolution=False)
    x = random_control(P, 2)
    d = tangent(np.random.default_rng(5).standard_normal(P.n))
    g, dfd, gfd = central(P, x, d)
    assert abs(dfd - g @ d) <= 1e-6 * abs(g @ d)
    assert np.linalg.norm(tangent(P.hessp(x, d)) - tangent(gfd)) <= 1e-6 * np.linalg.norm(tangent(gfd))


@pytest.mark.parametrize("eps", [0.0, 1e-2])
def test_value_formulation_hessian_is_symmetric_positive_semidefinite(eps):
    op, y_d, mu2 = line_problem(cells=32)
    P = ControlProblem(op, y_d, mu2, 0.05, 1e-3, 0.1, eps=eps, transport="value",
                       check_resolution=False)
    x = random_control(P, 4)
    rng = np.random.default_rng(8)
    u, v = tangent(rng.standard_normal(P.n)), tangent(rng.standard_normal(P.n))
    P(x)
    Hu, Hv = P.hessp(x, u), P.hessp(x, v)
    assert abs(u @ Hv - v @ Hu) <= 1e-10 * np.linalg.norm(Hu) * np.linalg.norm(v)
    for k in range(5):
        z = tangent(rng.standard_normal(P.n))
        assert z @ P.hessp(x, z) >= -1e-12 * np.linalg.norm(P.hessp(x, z)) * np.linalg.norm(z)
    # the value term alone is convex as well (nu times a PSD product)
    Hval = P.hessp(x, u) - P.tracking_hessp(u)
    assert u @ Hval >= -1e-12 * np.linalg.norm(Hval) * np.linalg.norm(u)


def test_value_formulation_bounds_and_certificate():
    """V_gamma >= <c, pi_gamma> (eps = 0), fun = tracking + nu V, the FW gap is a valid bound."""
    op, y_d, mu2 = line_problem(cells=32)
    P = ControlProblem(op, y_d, mu2, 0.05, 1e-3, 0.1, transport="value",
                       check_resolution=False)
    x = random_control(P, 6)
    e = P.evaluate(x)
    assert e["transport"] >= e["transport_cost"]
    assert abs(e["fun"] - (e["tracking"] + P.nu * e["transport"])) <= 1e-15 * abs(e["fun"])
    # convexity: f(s) >= f(x) + <g, s - x> at the vertex s minimizing <g, s>, hence
    # f(x) - min f <= fw_gap; check the supporting-hyperplane inequality at a few points
    g = e["grad"]
    fx = e["fun"]
    for k in range(4):
        s = random_control(P, 10 + k)
        assert P(s)[0] >= fx + g @ (s - x) - 1e-12 * abs(fx)
    assert P.frank_wolfe_gap(x, g) >= 0


def test_transport_formulation_is_validated():
    op, y_d, mu2 = line_problem(cells=16)
    with pytest.raises(ValueError, match="transport"):
        ControlProblem(op, y_d, mu2, 0.05, 1e-3, 0.1, transport="values", check_resolution=False)
