"""Derivatives of the marginal-to-plan map S_{gamma,eps} (Part III §3.1)."""
import itertools

import numpy as np
import pytest
from _instances import random_1d_problem

from femot import solve_qrot
from femot.core.sensitivity import outer_structure

problem = random_1d_problem


def plan_at(c, m1, m2, gamma, eps, w1, w2, x0):
    r = solve_qrot(c, m1, m2, gamma, eps, w1, w2, x0=x0, tol=1e-14)
    assert r.residual <= max(1e-12, 10 * r.residual_floor)
    return r.plan.toarray()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_jvp_matches_finite_differences(seed, eps):
    c, m1, m2, w1, w2, rng = problem(seed)
    gamma = 0.02
    res = solve_qrot(c, m1, m2, gamma, eps, w1, w2, tol=1e-14)
    assert res.success
    assert res.biactive()[0].size == 0  # a differentiable point
    h1, h2 = rng.standard_normal(m1.size), rng.standard_normal(m2.size)
    if eps == 0.0:  # stay on equal masses
        h2 += (w1 @ h1 - w2 @ h2) / w2.sum()
    t = 1e-6
    x0 = (res.alpha, res.beta)
    fd = (plan_at(c, m1 + t * h1, m2 + t * h2, gamma, eps, w1, w2, x0)
          - plan_at(c, m1 - t * h1, m2 - t * h2, gamma, eps, w1, w2, x0)) / (2 * t)
    d = res.jvp(h1, h2).toarray()
    assert np.linalg.norm(d - fd) <= 1e-6 * np.linalg.norm(fd)


@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_vjp_is_adjoint_and_matches_finite_differences(eps):
    c, m1, m2, w1, w2, rng = problem(5)
    gamma = 0.02
    res = solve_qrot(c, m1, m2, gamma, eps, w1, w2, tol=1e-14)
    G = rng.standard_normal(c.shape)
    p1, p2 = res.vjp(G)
    h1, h2 = rng.standard_normal(m1.size), rng.standard_normal(m2.size)
    if eps == 0.0:
        h2 += (w1 @ h1 - w2 @ h2) / w2.sum()
    lhs = np.sum(G * res.jvp(h1, h2).toarray())
    assert abs(lhs - (p1 @ h1 + p2 @ h2)) <= 1e-10 * max(1.0, abs(lhs))
    # finite differences of J(mu1) = <G, S(mu1, mu2)> along h1 (eps > 0: any direction)
    if eps > 0:
        t = 1e-6
        x0 = (res.alpha, res.beta)
        Jp = np.sum(G * plan_at(c, m1 + t * h1, m2, gamma, eps, w1, w2, x0))
        Jm = np.sum(G * plan_at(c, m1 - t * h1, m2, gamma, eps, w1, w2, x0))
        fd = (Jp - Jm) / (2 * t)
        assert abs(fd - p1 @ h1) <= 1e-6 * max(1.0, abs(fd))
    # sparse G gives the same
    import scipy.sparse as sp

    q1, q2 = res.vjp(sp.csr_matrix(G))
    assert np.allclose(q1, p1) and np.allclose(q2, p2)


def test_outer_structure_lp():
    ok, v1, v2 = outer_structure(([0], [0]), ([0, 0], [0, 1]))
    assert ok and v1[0] + v2[0] > 0 and v1[0] + v2[1] < 0
    B = ([0, 0, 1, 1], [0, 1, 0, 1])
    ok, _, _ = outer_structure(([0, 1], [0, 1]), B)  # diagonal of a 2x2 block: impossible
    assert not ok
    ok, _, _ = outer_structure(([0, 0], [0, 1]), B)  # a full row: possible
    assert ok
    with pytest.raises(ValueError, match="subset"):
        outer_structure(([3], [3]), B)


def kink_instance():
    """Exact dyadic data with a prescribed biactive set (Part III Prop. 3.8)."""
    rng = np.random.default_rng(3)
    n1, n2 = 5, 6
    alpha = rng.integers(3, 7, n1).astype(float)
    beta = rng.integers(3, 7, n2).astype(float)
    z = 0.25 * rng.integers(-4, 5, (n1, n2)).astype(float)
    z[z == 0] = -0.5
    B = [(0, 1), (2, 3), (2, 4), (4, 0)]
    for i, j in B:
        z[i, j] = 0.0
    for i in range(n1):  # every row and column carries mass
        z[i, i] = 0.75
    c = alpha[:, None] + beta[None, :] - z
    return c, alpha, beta, B


def marginals_of(c, alpha, beta, gamma, eps):
    """The inverse map F^{-1}(alpha, beta) of Part III Lemma 3.4 (unit weights)."""
    zp = np.maximum(alpha[:, None] + beta[None, :] - c, 0)
    return (zp.sum(1) + gamma * eps * alpha) / gamma, (zp.sum(0) + gamma * eps * beta) / gamma


def test_bouligand_elements_are_limits_of_derivatives():
    gamma, eps = 1.0, 0.25
    c, alpha, beta, B = kink_instance()
    m1, m2 = marginals_of(c, alpha, beta, gamma, eps)
    res = solve_qrot(c, m1, m2, gamma, eps, tol=1e-14)
    assert res.success
    assert np.allclose(res.alpha, alpha, atol=1e-12) and np.allclose(res.beta, beta, atol=1e-12)
    rows, cols = res.biactive()
    assert sorted(zip(rows.tolist(), cols.tolist())) == sorted(B)
    rng = np.random.default_rng(0)
    H = [(rng.standard_normal(5), rng.standard_normal(6)) for _ in range(3)]
    checked = 0
    for k in range(len(B) + 1):
        for A in itertools.combinations(B, k):
            Aidx = (np.array([a[0] for a in A], int), np.array([a[1] for a in A], int))
            ok, v1, v2 = outer_structure(Aidx, (rows, cols))
            if not ok:
                continue
            dv1 = np.array([v1.get(i, 0.0) for i in range(5)])
            dv2 = np.array([v2.get(j, 0.0) for j in range(6)])
            for t in (1e-3, 1e-4):
                a_t, b_t = alpha + t * dv1, beta + t * dv2
                mt1, mt2 = marginals_of(c, a_t, b_t, gamma, eps)
                rt = solve_qrot(c, mt1, mt2, gamma, eps, tol=1e-14)
                assert rt.biactive()[0].size == 0  # differentiable nearby point
                for h1, h2 in H:
                    limit = rt.jvp(h1, h2).toarray()
                    bouligand = res.jvp(h1, h2, A=Aidx).toarray()
                    assert np.allclose(limit, bouligand, atol=1e-9)
            checked += 1
    assert checked >= 2 ** len(B) // 2  # the test exercised most subsets


def test_jvp_rejects_sets_outside_omega0():
    gamma, eps = 1.0, 0.25
    c, alpha, beta, B = kink_instance()
    m1, m2 = marginals_of(c, alpha, beta, gamma, eps)
    res = solve_qrot(c, m1, m2, gamma, eps, tol=1e-14)
    with pytest.raises(ValueError, match="biactive"):
        res.jvp(np.ones(5), np.ones(6), A=(np.array([0]), np.array([0])))
    with pytest.raises(ValueError, match="h1"):
        res.jvp(np.ones(4), np.ones(6))
    with pytest.raises(ValueError, match="G"):
        res.vjp(np.ones((5, 5)))


def test_jvp_rejects_mass_changing_directions_at_eps_zero():
    """With eps = 0 the map S lives on marginals of equal (weighted) mass; a direction with
    sum w1 h1 != sum w2 h2 leaves that set and has no derivative, so it is refused (a plan
    derivative would violate the linearized constraints).  Admissible directions and any
    direction at eps > 0 are accepted, and the derivative then satisfies the linearized
    marginal equations sum_j w2_j dpi_ij = h1_i."""
    c, m1, m2, w1, w2, rng = problem(3)
    res = solve_qrot(c, m1, m2, 0.02, 0.0, w1, w2, tol=1e-14)
    h1, h2 = rng.standard_normal(m1.size), rng.standard_normal(m2.size)
    with pytest.raises(ValueError, match="h1 and h2"):
        res.jvp(h1, h2)
    with pytest.raises(ValueError, match="h1 and h2"):
        res.jvp(np.ones(m1.size), np.zeros(m2.size))
    h2 += (w1 @ h1 - w2 @ h2) / w2.sum()
    d = res.jvp(h1, h2).toarray()
    assert np.abs(d @ w2 - h1).max() <= 1e-8 * np.abs(h1).max()
    assert np.abs(w1 @ d - h2).max() <= 1e-8 * np.abs(h2).max()
    unbalanced = solve_qrot(c, m1, m2, 0.02, 0.3, w1, w2, tol=1e-14)
    unbalanced.jvp(np.ones(m1.size), np.zeros(m2.size))  # eps > 0: every direction
