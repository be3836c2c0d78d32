"""W^{-1,p'} tracking of the plan (Part II eq. (3.11) with the lower level of (3.13))."""
import numpy as np
import pytest
import scipy.sparse as sp
import skfem

from femot.core import wasserstein_pp_1d
from femot.fem import quadrature
from femot.problems import TrackingProblem, observation_domain

BOX = (0.125, 0.875, 0.0625, 0.9375)


def in_box(c):
    a, b, lo, hi = BOX
    return (c[0] > a) & (c[0] < b) & (c[1] > lo) & (c[1] < hi)


def setup(cells=32, rho=0.15, delta=0.1, gamma=1e-3):
    mesh = skfem.MeshLine(np.linspace(0.0, 1.0, cells + 1))
    x = mesh.p[0]
    inside = (x >= rho - 1e-12) & (x <= 1 - rho + 1e-12)

    def bump(parts):
        m = np.where(inside, sum(a * np.exp(-((x - c) / s) ** 2) for c, s, a in parts), 0.0)
        return m / m.sum()

    m_true = bump([(0.33, 0.06, 1.0), (0.7, 0.05, 0.5)])
    mu2 = bump([(0.5, 0.12, 1.0)])
    gen = TrackingProblem(mesh, mesh, mu2, np.zeros((cells + 1, cells + 1)), 0.0, gamma, delta, rho=rho)
    pi_true = gen.lower.solve(m_true[gen.control_vertices]).plan.toarray()
    return mesh, x, m_true, mu2, pi_true


def fd_check(P, xc, d):
    """Central differences on a segment where the lower level keeps its active set and the
    l1 term its signs (so F is smooth there)."""
    f, g = P(xc)
    base = P.lower.solve(xc).plan
    for h in (1e-6, 3e-7, 1e-7):
        ok = True
        vals = []
        for s in (1, -1):
            xs = xc + s * h * d
            plan = P.lower.solve(xs).plan
            ok &= np.array_equal(plan.indptr, base.indptr) and np.array_equal(plan.indices, base.indices)
            ok &= np.array_equal(np.sign(xs - P.mu1_d[P.control_vertices]),
                                 np.sign(xc - P.mu1_d[P.control_vertices]))
            vals.append(P(xs)[0])
        if ok:
            return abs((vals[0] - vals[1]) / (2 * h) - g @ d) / abs(g @ d)
    raise AssertionError("no step keeps the objective on one smooth piece")


@pytest.mark.parametrize("p_prime", [2.0, 1.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_reduced_subgradient_finite_differences(p_prime, seed):
    mesh, x, m_true, mu2, pi_true = setup()
    rng = np.random.default_rng(seed)
    pi_d = pi_true * (1 + 0.3 * rng.random(pi_true.shape))
    P = TrackingProblem(mesh, mesh, mu2, pi_d, 1e-3, 1e-3, 0.1, rho=0.15, p_prime=p_prime, subdomain=in_box,
                        qrot_options={"tol": 1e-13})
    xc = rng.random(P.n) + 0.1
    xc /= xc.sum()
    d = rng.standard_normal(P.n)
    d -= d.mean()  # tangent to the simplex (eps = 0 needs equal masses)
    assert fd_check(P, xc, d) <= 1e-6


def test_eps_positive_gradient_in_any_direction():
    mesh, x, m_true, mu2, pi_true = setup()
    P = TrackingProblem(mesh, mesh, mu2, 0.5 * pi_true, 0.0, 1e-3, 0.1, rho=0.15, eps=1e-2, subdomain=in_box,
                        qrot_options={"tol": 1e-13})
    rng = np.random.default_rng(3)
    xc = rng.random(P.n) + 0.1
    xc /= xc.sum()
    assert fd_check(P, xc, rng.standard_normal(P.n)) <= 1e-6


def test_observation_domain_is_a_proper_subdomain_with_dirichlet_boundary():
    mesh, x, m_true, mu2, pi_true = setup()
    D, vmap, prod = observation_domain(mesh, mesh, in_box)
    n = x.size
    assert 0 < D.nvertices < prod.nvertices
    i, j = np.divmod(vmap, n)
    a, b, lo, hi = BOX
    assert np.all((x[i] >= a - 1e-12) & (x[i] <= b + 1e-12) & (x[j] >= lo - 1e-12) & (x[j] <= hi + 1e-12))
    assert np.allclose(D.p, prod.p[:, vmap])
    q = quadrature(mesh)
    P = TrackingProblem(mesh, mesh, mu2, pi_true, 0.0, 1e-3, 0.1, rho=0.15, subdomain=in_box)
    rng = np.random.default_rng(0)
    plan = pi_true + rng.random(pi_true.shape)
    val, G, phi = P.misfit(plan)
    # the load is the measure with masses w_i w_j (pi - pi_d)_ij at the vertices of D
    eta = q.weights[i] * q.weights[j] * (plan - pi_true)[i, j]
    assert np.allclose(phi, P.opD.solve(eta))
    # phi vanishes on the boundary of D (not only on the boundary of the square)
    assert np.all(phi[P.opD.boundary] == 0)
    # p' = 2: |grad phi|^2 = phi^T K phi = b^T K^{-1} b (energy identity with the load b)
    assert np.isclose(val, phi @ (P.opD.K @ phi), rtol=1e-10)
    # the misfit ignores the plan outside D and on the boundary of D
    outside = np.ones(pi_true.shape, dtype=bool)
    outside[i, j] = False
    bnd = vmap[P.opD.boundary]
    plan2 = plan.copy()
    plan2[outside] += 5.0
    plan2[np.divmod(bnd, n)] += 3.0
    assert np.isclose(P.misfit(plan2)[0], val, rtol=1e-12)
    # the measured plan itself has zero misfit; the gradient w.r.t. pi is supported in D
    assert P.misfit(pi_true)[0] <= 1e-20
    assert np.all(G.toarray()[outside] == 0)


def test_misfit_gradient_wrt_plan_finite_differences():
    mesh, x, m_true, mu2, pi_true = setup(cells=16)
    P = TrackingProblem(mesh, mesh, mu2, pi_true, 0.0, 1e-3, 0.1, rho=0.15, p_prime=1.5, subdomain=in_box)
    rng = np.random.default_rng(2)
    plan = pi_true + rng.random(pi_true.shape)
    val, G, _ = P.misfit(plan)
    E = rng.standard_normal(plan.shape)
    h = 1e-6
    fd = (P.misfit(plan + h * E)[0] - P.misfit(plan - h * E)[0]) / (2 * h)
    assert abs(fd - G.multiply(E).sum()) <= 1e-6 * abs(fd)


def test_radon_term_value_and_subgradient():
    mesh, x, m_true, mu2, pi_true = setup()
    md = np.zeros(x.size)
    md[3] = 0.2  # mass where the control cannot go counts as a constant
    P = TrackingProblem(mesh, mesh, mu2, pi_true, 0.5, 1e-3, 0.1, rho=0.15, mu1_d=md)
    xc = P.uniform()
    val, sub = P.radon(xc)
    assert np.isclose(val, np.abs(P.full(xc) - md).sum())
    assert np.all(np.abs(sub) <= 1)
    # at a tie m_k = m_d,k the subgradient entry lies in [-1, 1] (Clarke subdifferential of |.|)
    md2 = np.zeros(x.size)
    md2[P.control_vertices] = xc
    P2 = TrackingProblem(mesh, mesh, mu2, pi_true, 0.5, 1e-3, 0.1, rho=0.15, mu1_d=md2)
    v2, s2 = P2.radon(xc)
    assert v2 == 0 and np.all(s2 == 0)


def test_known_control_is_recovered():
    """pi_d = regularized plan of m_true: m_true minimizes the misfit; the TR finds it from the uniform start."""
    mesh, x, m_true, mu2, pi_true = setup()
    P = TrackingProblem(mesh, mesh, mu2, pi_true, 1e-5, 1e-3, 0.1, rho=0.15, subdomain=in_box)
    r = P.solve(options={"max_iter": 300}, rtol=1e-3)
    assert r.success, r.message
    f_true = P.evaluate(m_true[P.control_vertices], gradient=False)["fun"]
    assert r.fun <= f_true + 1e-3 * P(P.uniform())[0]
    start = wasserstein_pp_1d(x, x, P.full(P.uniform()), m_true, p=1)
    assert wasserstein_pp_1d(x, x, r.masses, m_true, p=1) < 0.05 * start
    assert np.isclose(r.x.sum(), 1.0) and r.x.min() >= 0


def test_sparse_measured_plan_and_bad_input():
    mesh, x, m_true, mu2, pi_true = setup(cells=16)
    n = x.size
    P = TrackingProblem(mesh, mesh, mu2, sp.csr_matrix(pi_true), 0.0, 1e-3, 0.1, rho=0.15)
    assert np.allclose(P.pi_d, pi_true)
    with pytest.raises(ValueError, match="p_prime"):
        TrackingProblem(mesh, mesh, mu2, pi_true, 0.0, 1e-3, 0.1, rho=0.15, p_prime=2.5)
    with pytest.raises(ValueError, match="p_prime"):
        TrackingProblem(mesh, mesh, mu2, pi_true, 0.0, 1e-3, 0.1, rho=0.15, p_prime=1.0)
    with pytest.raises(ValueError, match="pi_d"):
        TrackingProblem(mesh, mesh, mu2, pi_true[:-1], 0.0, 1e-3, 0.1, rho=0.15)
    with pytest.raises(ValueError, match="subdomain"):
        TrackingProblem(mesh, mesh, mu2, pi_true, 0.0, 1e-3, 0.1, rho=0.15, subdomain=lambda c: c[0] > 2)
    with pytest.raises(ValueError, match="subdomain"):
        TrackingProblem(mesh, mesh, mu2, pi_true, 0.0, 1e-3, 0.1, rho=0.15, subdomain=np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="rho"):
        TrackingProblem(mesh, mesh, mu2, pi_true, 0.0, 1e-3, 0.1, rho=0.05)
    with pytest.raises(ValueError, match="mu2"):
        TrackingProblem(mesh, mesh, mu2[:-1], pi_true, 0.0, 1e-3, 0.1, rho=0.15)
    with pytest.raises(ValueError, match="mu1_d"):
        TrackingProblem(mesh, mesh, mu2, pi_true, 0.0, 1e-3, 0.1, rho=0.15, mu1_d=-np.ones(n))
    with pytest.raises(ValueError, match="nu"):
        TrackingProblem(mesh, mesh, mu2, pi_true, -1.0, 1e-3, 0.1, rho=0.15)


@pytest.mark.parametrize("eps", [0.0, 1e-2])
def test_hessp_matches_finite_differences_of_the_gradient(eps):
    """p' = 2: hessp = T^T S'^T (Hess F) S' T where the lower level keeps its active set."""
    mesh, x, m_true, mu2, pi_true = setup()
    rng = np.random.default_rng(4)
    pi_d = pi_true * (1 + 0.3 * rng.random(pi_true.shape))
    P = TrackingProblem(mesh, mesh, mu2, pi_d, 0.0, 1e-3, 0.1, rho=0.15, eps=eps, subdomain=in_box,
                        qrot_options={"tol": 1e-13})
    xc = rng.random(P.n) + 0.1
    xc /= xc.sum()
    d = rng.standard_normal(P.n)
    d -= d.mean()
    P(xc)
    base = P.lower.solve(xc).plan
    Hd = P.hessp(xc, d)
    for h in (1e-6, 3e-7, 1e-7):
        grads, same = [], True
        for s in (1, -1):
            grads.append(P(xc + s * h * d)[1])
            plan = P.lower.solve(xc + s * h * d).plan
            same &= np.array_equal(plan.indptr, base.indptr) and np.array_equal(plan.indices, base.indices)
        if same:
            fd = (grads[0] - grads[1]) / (2 * h)
            fd, Ht = fd - fd.mean(), Hd - Hd.mean()  # tangent parts (the simplex)
            assert np.linalg.norm(Ht - fd) <= 1e-5 * np.linalg.norm(fd)
            break
    else:
        raise AssertionError("no step keeps the active set of the lower level fixed")
    # symmetric and positive semidefinite (Gauss-Newton structure S'^T (Hess F) S')
    u = rng.standard_normal(P.n)
    u -= u.mean()
    Hu = P.hessp(xc, u)
    assert abs(u @ Hd - d @ Hu) <= 1e-8 * np.linalg.norm(Hu) * np.linalg.norm(d)
    assert d @ Hd >= -1e-12 * np.linalg.norm(Hd) * np.linalg.norm(d)


def test_hessp_needs_p_prime_two():
    mesh, x, m_true, mu2, pi_true = setup(cells=16)
    P = TrackingProblem(mesh, mesh, mu2, pi_true, 0.0, 1e-3, 0.1, rho=0.15, p_prime=1.5, subdomain=in_box)
    with pytest.raises(ValueError, match="p_prime = 2"):
        P.hessp(P.uniform(), np.zeros(P.n))
