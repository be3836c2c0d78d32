"""T^delta of Part II eq. (2.6): mollifier, mass identity, weak convergence, adjoint, support checks."""
import numpy as np
import pytest
from skfem import Basis, ElementTriP1, MeshLine

from femot.fem import Density, DiracSum, Empirical, FEFunction, Smoother, load_mesh, mollifier, quadrature, smooth


@pytest.mark.parametrize("dim,n", [(1, 4001), (2, 801), (3, 161)])
@pytest.mark.parametrize("delta", [1.0, 0.3])
def test_mollifier_unit_mass(dim, n, delta):
    """Tensor trapezoid rule on [-delta, delta]^dim (spectrally accurate for C_c^inf functions)."""
    s = np.linspace(-delta, delta, n)
    h = s[1] - s[0]
    grids = np.meshgrid(*([s] * dim), indexing="ij")
    x = np.stack([g.ravel() for g in grids], axis=1)
    total = mollifier(x, delta).sum() * h**dim
    assert total == pytest.approx(1.0, abs=1e-9)


def test_mollifier_support_and_symmetry():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 2))
    v = mollifier(x, 0.5)
    r = np.linalg.norm(x, axis=1)
    assert np.all(v[r >= 0.5] == 0) and np.all(v[r < 0.49] > 0)
    assert np.allclose(v, mollifier(-x, 0.5))
    # phi_delta(x) = delta^-d phi(x / delta)
    assert np.allclose(mollifier(x, 0.5), mollifier(x / 0.5, 1.0) / 0.25)
    with pytest.raises(ValueError, match="delta"):
        mollifier(x, 0.0)


def _bump2d(center, r):
    c = np.asarray(center)
    return lambda x: np.maximum(0.0, r * r - ((x - c) ** 2).sum(axis=1)) ** 2


def _measures_2d(mesh):
    basis = Basis(mesh, ElementTriP1())
    u = _bump2d((-0.5, -0.5), 0.3)(mesh.p.T)
    rng = np.random.default_rng(1)
    return {
        "density": Density(_bump2d((-0.5, -0.5), 0.3), mesh),
        "fe": FEFunction(basis, u),
        "diracs": DiracSum([[-0.5, -0.4], [0.5, -0.5], [-0.4, 0.6]], [0.2, 0.3, 0.5]),
        "empirical": Empirical(rng.uniform(-0.7, -0.3, (200, 2)), mass=2.0),
        "sum": Density(_bump2d((-0.5, -0.5), 0.3), mesh) + DiracSum([[0.5, -0.5]], [0.7]),
    }


@pytest.mark.parametrize("rule", ["lumped", "gauss"])
def test_mass_identity_2d(rule):
    mesh = load_mesh("lshaped")
    q = quadrature(mesh, rule, order=2)
    delta = 0.15
    for name, mu in _measures_2d(mesh).items():
        t = smooth(mu, q, delta)
        assert np.all(t >= delta / q.measure * (1 - 1e-14)), name  # shift makes it strictly positive
        assert abs(q.weights @ t - (mu.mass() + delta)) <= 1e-12 * (mu.mass() + delta), name


def test_mass_identity_1d_and_exact_mass_correction():
    mu = Density(lambda x: np.maximum(0, (x[:, 0] - 0.25) * (0.75 - x[:, 0])) ** 2, load_mesh("unit_interval_64"))
    exact = 0.5**5 / 30
    for n in (40, 97, 300):  # coarse meshes: sum w f has a visible quadrature error
        q = quadrature(MeshLine(np.linspace(0, 1, n + 1)))
        raw = q.weights @ mu(q.nodes)
        t = smooth(mu, q, 0.1)
        assert abs(q.weights @ t - (exact + 0.1)) <= 1e-12 * (exact + 0.1)
        if n == 40:
            assert abs(raw - exact) > 1e-6 * exact  # the correction did something


def test_weak_convergence_with_rate(record_property):
    """<T^delta mu, v>_w -> <mu, v> for smooth v: rate 1 (the shift delta/|Omega|) and rate 2
    for the convolution part alone (symmetric kernel), on meshes with h = delta / 16."""
    v = lambda x: np.cos(3 * x) + x**2
    mu = DiracSum([0.3, 0.55], [0.4, 0.6]) + Density(
        lambda x: np.maximum(0, (x[:, 0] - 0.25) * (0.75 - x[:, 0])) ** 2, MeshLine(np.linspace(0, 1, 9)), order=10)
    from scipy.integrate import quad

    exact = 0.4 * v(0.3) + 0.6 * v(0.55) + quad(lambda s: v(s) * ((s - 0.25) * (0.75 - s)) ** 2, 0.25, 0.75,
                                                  epsabs=1e-15, epsrel=1e-14)[0]
    deltas = np.array([0.16, 0.08, 0.04, 0.02, 0.01])
    e_full, e_conv = [], []
    for delta in deltas:
        q = quadrature(MeshLine(np.linspace(0, 1, int(round(16 / delta)) + 1)))
        S = Smoother(q, delta)
        conv = S.convolve(mu)
        vv = v(q.nodes[:, 0])
        e_conv.append(abs(q.weights @ (conv * vv) - exact))
        e_full.append(abs(q.weights @ (S(mu) * vv) - exact))
    e_full, e_conv = np.array(e_full), np.array(e_conv)
    rate_full = np.polyfit(np.log(deltas), np.log(e_full), 1)[0]
    rate_conv = np.polyfit(np.log(deltas), np.log(e_conv), 1)[0]
    record_property("weak_rate_T_delta", rate_full)
    record_property("weak_rate_convolution", rate_conv)
    print(f"observed weak-convergence rates: T^delta {rate_full:.3f}, phi_delta * mu {rate_conv:.3f}")
    assert np.all(np.diff(e_full) < 0) and np.all(np.diff(e_conv) < 0)
    assert 0.9 < rate_full < 1.1
    assert rate_conv > 1.8


@pytest.mark.parametrize("name,rule", [("unit_interval_256", "lumped"), ("lshaped", "gauss"), ("disk", "lumped")])
def test_adjoint_identity(name, rule):
    rng = np.random.default_rng(2)
    q = quadrature(load_mesh(name), rule, order=2)
    delta = 0.1 if q.dim == 1 else 0.2
    S = Smoother(q, delta)
    op = S.operator()  # sources: the nodes at distance >= delta from the boundary
    assert np.all(q.boundary_distance()[op.source_index] >= delta * (1 - 1e-12))
    k = op.shape[1]
    a = rng.random(k)
    a /= a.sum()  # a probability vector: op equals T^delta there
    f = rng.normal(size=q.n)
    lhs = q.weights @ (op.apply(a) * f)  # <T mu, f>_w
    rhs = a @ op.adjoint(f)  # <mu, T* f>
    assert lhs == pytest.approx(rhs, rel=1e-12)
    b = rng.normal(size=k)  # linearity: the identity holds on all of R^k
    assert q.weights @ (op.apply(b) * f) == pytest.approx(b @ op.adjoint(f), rel=1e-11, abs=1e-12)
    g = rng.normal(size=q.n)
    assert g @ op.apply(b) == pytest.approx(b @ op.transpose(g), rel=1e-11, abs=1e-12)
    # The sparse part of the adjoint plus the rank-one shift reproduce adjoint().
    full = op.adjoint_matrix() @ f + op.shift * (q.weights @ f)
    assert np.allclose(full, op.adjoint(f), rtol=1e-13, atol=1e-13)
    # On probability vectors the operator is the discrete T^delta of the Dirac sum.
    assert np.allclose(op.apply(a), S(DiracSum(op.source_points, a)), rtol=1e-12, atol=1e-12)
    L = op.as_linear_operator()
    assert np.allclose(L.rmatvec(g), op.transpose(g))


def test_kernel_is_sparse():
    q = quadrature(load_mesh("unit_interval_1024"))
    K = Smoother(q, 0.01).kernel(q.nodes[100:900])
    assert K.nnz <= 800 * 21  # at most 2 * 0.01 * 1024 + 1 nodes per ball
    assert np.allclose(q.weights @ K, 1.0, rtol=1e-14)


def test_support_too_close_rejected_and_enlargement():
    q1 = quadrature(load_mesh("unit_interval_256"))
    near = DiracSum([0.05, 0.5], [0.5, 0.5])
    with pytest.raises(ValueError, match="closer than delta.*Lemma 2.4"):
        smooth(near, q1, 0.1)
    with pytest.raises(ValueError, match="leaves the domain"):
        smooth(DiracSum([1.2]), q1, 0.1)
    t = smooth(near, q1, 0.04)  # fine with a smaller delta
    assert q1.weights @ t == pytest.approx(1.04, rel=1e-12)
    # Lemma 2.4: on [-rho, 1 + rho] the same measure is admissible.
    qe = q1.enlarged(0.1)
    te = smooth(near, qe, 0.1)
    assert qe.weights @ te == pytest.approx(1.1, rel=1e-12)
    assert qe.measure == pytest.approx(1.2, rel=1e-12)
    # 2D: a density touching the boundary of the square, then on the enlarged box.
    sq = load_mesh("unit_square")
    touching = Density(_bump2d((0.2, 0.5), 0.25), sq)
    with pytest.raises(ValueError, match="closer than delta"):
        smooth(touching, quadrature(sq), 0.05)
    qb = quadrature(sq).enlarged(0.05)
    tb = smooth(touching, qb, 0.05)
    assert qb.weights @ tb == pytest.approx(touching.mass() + 0.05, rel=1e-12)
    # Sources of an operator must also keep their distance.
    with pytest.raises(ValueError, match="closer than delta"):
        Smoother(q1, 0.1).operator(sources=[[0.05]])


def test_delta_below_mesh_resolution_rejected():
    q = quadrature(load_mesh("unit_interval_16"))
    with pytest.raises(ValueError, match="too small"):
        smooth(DiracSum([0.53125]), q, 0.01)  # no node within 0.01 of a cell midpoint
