"""solve_qrot on FE lower-level data at small gamma (lumped P1 weights, smoothed densities, cost O(10)).

The instance class of ``tests/_fe_instances.py``: the lower level of the [-1, 1]^2 control
problem at the uniform control.  At gamma <= 1e-5 its plan has a few entries per row; the
solver must converge cold there (gamma continuation from the 'mean' start, adaptive
Levenberg-Marquardt shift).
"""
import numpy as np
import pytest
from _fe_instances import fe_lower_level, sqdist

from femot import GeometricCost, solve_qrot
from femot.core import certify_working_set
from femot.core import qrot as qrot_module


def check_kkt(r, c, m1, m2, w, gamma, tol):
    """The optimality system of the weighted problem, checked from the returned potentials alone."""
    z = r.alpha[:, None] + r.beta[None, :] - c
    pi = np.maximum(z, 0.0) / gamma  # Part III Thm 2.7: the plan of the potentials
    # the returned plan is that plan
    assert np.abs(r.plan.toarray() - pi).max() <= 1e-9 * pi.max()
    # primal feasibility: marginals (density units) and nonnegativity
    assert np.abs(pi @ w - m1).max() <= tol
    assert np.abs(pi.T @ w - m2).max() <= tol
    # strong duality: primal value == dual value
    primal = float(w @ ((c * pi + 0.5 * gamma * pi * pi) @ w))
    assert abs(primal - r.dual_value(m1, m2)) <= 1e-9 * abs(primal)


@pytest.fixture(scope="module")
def fe_small():
    x, w, m1, m2 = fe_lower_level(-1)  # 21 x 21 transport grid
    return x, w, m1, m2, sqdist(x, x)


def test_fe_instance_data(fe_small):
    x, w, m1, m2, c = fe_small
    # lumped P1 weights of the enlarged grid sum to its area; both marginals carry |mu2| + delta
    assert np.isclose(w.sum(), 2.5 ** 2)
    assert np.isclose(w @ m1, 4.25) and np.isclose(w @ m2, 4.25)
    # the shift delta / |Omega| is the floor of both densities (large contrast with the bulk)
    assert np.isclose(m1.min(), 0.25 / 6.25) and m1.max() / m1.min() > 20
    assert np.isclose(c.max(), 12.5)


@pytest.mark.parametrize("gamma", [1e-5, 1e-7])
def test_fe_small_gamma_cold(fe_small, gamma):
    x, w, m1, m2, c = fe_small
    r = solve_qrot(c, m1, m2, gamma, 0.0, w, w)
    assert r.success, r.message
    assert r.init == "continuation"
    assert [s["gamma"] for s in r.continuation] == sorted((s["gamma"] for s in r.continuation), reverse=True)
    # the plain cold start was tried first and abandoned after its steps were cut short
    assert r.crawled >= 3
    assert r.nit_total == r.nit + sum(s["nit"] for s in r.continuation) + r.crawled
    check_kkt(r, c, m1, m2, w, gamma, 1e-9)


def test_fe_geometric_cost_same_solution(fe_small):
    """The matrix-free path solves the same problem: same plan as the dense cost."""
    x, w, m1, m2, c = fe_small
    gamma = 1e-6
    rd = solve_qrot(c, m1, m2, gamma, 0.0, w, w)
    rg = solve_qrot(GeometricCost(x, x), m1, m2, gamma, 0.0, w, w)
    assert rd.success and rg.success, (rd.message, rg.message)
    check_kkt(rg, c, m1, m2, w, gamma, 1e-9)
    assert abs(rd.plan - rg.plan).max() <= 1e-6 * rd.plan.max()


def test_fe_continuation_only_when_cold_and_small(fe_small):
    x, w, m1, m2, c = fe_small
    # a warm start and an explicit init are used as given
    r0 = solve_qrot(c, m1, m2, 1e-5, 0.0, w, w)
    r1 = solve_qrot(c, m1, m2, 1e-5, 0.0, w, w, x0=(r0.alpha, r0.beta))
    assert r1.init == "warm" and "continuation" not in r1 and r1.nit <= 1
    # at a large gamma (plan spread over the domain) the 'mean' start is kept
    r2 = solve_qrot(c, m1, m2, 1.0, 0.0, w, w)
    assert r2.success and r2.init == "mean" and "continuation" not in r2


def test_short_steps_raise_the_shift():
    """_adapt_shift: a short step raises the factor by 1/t (at most 100), full steps lower it to lm."""
    st = qrot_module._QROTState(np.zeros(1), np.zeros(1), "zero", None, 1e-4)
    qrot_module._adapt_shift(st, 0.05)
    assert st.lm == pytest.approx(2e-3)
    qrot_module._adapt_shift(st, 1e-7)
    assert st.lm == pytest.approx(2e-1)
    qrot_module._adapt_shift(st, 0.5)  # a medium step keeps it
    assert st.lm == pytest.approx(2e-1)
    for _ in range(3):
        qrot_module._adapt_shift(st, 1.0)
    assert st.lm == 1e-4


def test_fe_full_grid_gamma_1e6():
    """The FE lower level on the 41 x 41 grid at gamma = 1e-6 converges from the cold start."""
    x, w, m1, m2 = fe_lower_level(0)
    c = sqdist(x, x)
    r = solve_qrot(c, m1, m2, 1e-6, 0.0, w, w)
    assert r.success, r.message
    check_kkt(r, c, m1, m2, w, 1e-6, 1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("gamma", [1e-5, 1e-6, 1e-7])
def test_fe_full_size_dense_and_geometric(gamma):
    x, w, m1, m2 = fe_lower_level(0)
    c = sqdist(x, x)
    for cost in (c, GeometricCost(x, x)):
        r = solve_qrot(cost, m1, m2, gamma, 0.0, w, w)
        assert r.success, r.message
        check_kkt(r, c, m1, m2, w, gamma, 1e-9)


@pytest.mark.slow
def test_fe_refined_grid_geometric():
    """The refined variant (81 x 81 transport grid, 6,561 nodes), matrix-free."""
    x, w, m1, m2 = fe_lower_level(1)
    gamma = 1e-6
    r = solve_qrot(GeometricCost(x, x), m1, m2, gamma, 0.0, w, w)
    assert r.success, r.message
    # more than 4000 points: the continuation's first stage starts from coarsened point sets
    assert r.init == "continuation" and r.continuation[0]["init"] == "coarse"
    P = r.plan
    assert np.abs(P @ w - m1).max() <= 1e-9 and np.abs(P.T @ w - m2).max() <= 1e-9
    # the plan is the positive part of the potentials' z on its support, and no pair off it is active
    rows = np.repeat(np.arange(P.shape[0]), np.diff(P.indptr))
    z = r.alpha[rows] + r.beta[P.indices] - ((x[rows] - x[P.indices]) ** 2).sum(1)
    assert np.allclose(P.data * gamma, z, rtol=1e-9, atol=1e-12 * np.abs(z).max())
    assert certify_working_set(GeometricCost(x, x), r.alpha, r.beta, P.indptr, P.indices).size == 0
