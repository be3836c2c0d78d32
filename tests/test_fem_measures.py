"""Measures: mass, support distance, discretization, 1D exact transport cost."""
import numpy as np
import pytest
from skfem import Basis, ElementTriP1, MeshLine

from femot.core import wasserstein_pp_1d
from femot.fem import (
    Density,
    DiracSum,
    Empirical,
    FEFunction,
    SumMeasure,
    load_mesh,
    quadrature,
    quantile,
    wasserstein_1d,
)


def bump1d(a, b):
    return lambda x: np.maximum(0.0, (x[:, 0] - a) * (b - x[:, 0])) ** 2


def test_density_mass_support_discretize():
    m = load_mesh("unit_interval_64")  # vertices at multiples of 1/64
    mu = Density(bump1d(0.25, 0.75), m, order=6)
    exact = 0.5**5 / 30  # int_0^L (t (L - t))^2 dt = L^5 / 30
    assert mu.mass() == pytest.approx(exact, rel=1e-12)  # degree-4 polynomial per cell
    assert mu.support_distance_to_boundary(m) == pytest.approx(0.25, abs=1e-15)
    lo, hi = mu.support_extent()
    assert lo[0] == pytest.approx(0.25) and hi[0] == pytest.approx(0.75)
    lo, hi = (mu + DiracSum([0.9], [1.0])).support_extent()
    assert lo[0] == pytest.approx(0.25) and hi[0] == pytest.approx(0.9)
    for rule in ("lumped", "gauss"):
        q = quadrature(load_mesh("unit_interval_256"), rule)
        dens = mu.discretize(q)
        assert q.weights @ dens == pytest.approx(exact, rel=1e-14)
        assert np.all(dens >= 0)
    assert (3.0 * mu).mass() == pytest.approx(3 * exact, rel=1e-14)
    with pytest.raises(ValueError, match="nonnegative"):
        Density(lambda x: x[:, 0] - 0.5, m).mass()


def test_dirac_discretization_keeps_mass_and_first_moment():
    rng = np.random.default_rng(4)
    m = load_mesh("disk")
    pts = 0.7 * (rng.random((20, 2)) - 0.5)
    mu = DiracSum(pts, rng.random(20))
    q = quadrature(m)
    a = mu.masses(q)
    assert a.sum() == pytest.approx(mu.mass(), rel=1e-14)
    assert np.allclose(a @ q.nodes, mu.weights @ pts, atol=1e-14)  # barycentric splitting
    qg = quadrature(m, "gauss", 2)
    assert qg.weights @ mu.discretize(qg) == pytest.approx(mu.mass(), rel=1e-14)
    with pytest.raises(ValueError, match="outside"):
        DiracSum([[2.0, 0.0]]).masses(q)
    with pytest.raises(ValueError, match="weights"):
        DiracSum([[0.0, 0.0]], [-1.0])


def test_dirac_support_distance_polygon():
    m = load_mesh("lshaped")
    mu = DiracSum([[-0.5, -0.5], [-0.2, 0.5], [0.5, -0.9]])
    assert mu.support_distance_to_boundary(m) == pytest.approx(0.1, abs=1e-14)
    assert DiracSum([[0.5, 0.5]]).support_distance_to_boundary(m) < 0  # in the removed quadrant


def test_fe_function_measure():
    m = load_mesh("unit_square")
    basis = Basis(m, ElementTriP1())
    x, y = m.p
    u = np.maximum(0.0, 0.09 - (x - 0.5) ** 2 - (y - 0.5) ** 2)
    mu = FEFunction(basis, u)
    # Mass of the P1 interpolant: lumped quadrature is exact for P1 functions.
    assert mu.mass() == pytest.approx(quadrature(m).weights @ u, rel=1e-13)
    # Support: closed union of cells with a positive vertex value; brute-force distance.
    cells = mu.support_cells()
    v = m.p[:, np.unique(m.t[:, cells])]
    brute = np.min(np.minimum.reduce([v[0], 1 - v[0], v[1], 1 - v[1]]))
    assert mu.support_distance_to_boundary(m) == pytest.approx(brute, abs=1e-14)
    qg = quadrature(m, "gauss", 3)
    assert qg.weights @ mu.discretize(qg) == pytest.approx(mu.mass(), rel=1e-13)
    with pytest.raises(ValueError, match="nonnegative"):
        FEFunction(basis, u - 0.01)


def test_empirical_and_sums():
    m = load_mesh("unit_interval_64")
    dens = Density(bump1d(0.3, 0.7), m)
    e1 = Empirical.from_density(dens, 500, seed=7, mass=1.0)
    e2 = Empirical.from_density(dens, 500, seed=7, mass=1.0)
    assert np.array_equal(e1.points, e2.points)
    assert np.all((e1.points > 0.3) & (e1.points < 0.7))
    assert e1.mass() == pytest.approx(1.0)
    # The sample mean of a symmetric density is close to its center (500 samples).
    assert abs(e1.points.mean() - 0.5) < 0.02
    s = 0.5 * e1 + DiracSum([0.1], [0.5])
    assert isinstance(s, SumMeasure) and s.mass() == pytest.approx(1.0)
    assert s.support_distance_to_boundary(m) == pytest.approx(0.1, abs=1e-12)
    with pytest.raises(ValueError, match="dimensions"):
        s + DiracSum([[0.1, 0.2]])


def test_cdf_and_quantile():
    m = MeshLine(np.linspace(0, 1, 11))
    mu = Density(lambda x: np.ones(x.shape[0]), m, mass=1.0)  # numeric CDF
    x = np.array([-0.5, 0.0, 0.123, 0.5, 0.9999, 1.3])
    assert np.allclose(mu.cdf(x), np.clip(x, 0, 1), atol=1e-14)
    d = DiracSum([0.2, 0.7], [0.25, 0.75])
    assert np.allclose(d.cdf([0.1, 0.2, 0.5, 0.7, 0.9]), [0, 0.25, 0.25, 1.0, 1.0])
    assert np.allclose(quantile(d, [0.1, 0.25, 0.26, 1.0]), [0.2, 0.2, 0.7, 0.7])
    t = np.array([0.1, 0.5, 0.77])
    assert np.allclose(quantile(mu, t), t, atol=1e-14)


def test_wasserstein_1d_closed_forms():
    m = MeshLine(np.linspace(0, 1, 41))  # 0.1, 0.4, 0.5, 0.8 are vertices
    unif = Density(lambda x: np.ones(x.shape[0]), m, mass=1.0)
    half = DiracSum([0.5], [1.0])
    assert wasserstein_1d(unif, half, 2.0) == pytest.approx(1 / 12, rel=1e-12)
    assert wasserstein_1d(unif, half, 1.0) == pytest.approx(1 / 4, rel=1e-12)
    assert wasserstein_1d(DiracSum([0.1]), DiracSum([0.6]), 3.0) == pytest.approx(0.5**3, rel=1e-12)
    # Translation of a density: W_2^2 = s^2 for any beta-independent shape.
    f = bump1d(0.1, 0.5)
    g = lambda x: f(x - 0.3)
    mu, nu = Density(f, m), Density(g, m)
    assert wasserstein_1d(mu, nu, 2.0) == pytest.approx(0.3**2 * mu.mass(), rel=1e-9)
    with pytest.raises(ValueError, match="equal mass"):
        wasserstein_1d(unif, DiracSum([0.5], [2.0]))


def test_wasserstein_1d_against_sorted_samples():
    """Equal-weight empirical measures: W is the mean cost of the sorted matching."""
    rng = np.random.default_rng(5)
    a, b = rng.random(40), rng.random(40)
    ref = np.mean(np.abs(np.sort(a) - np.sort(b)) ** 1.5)
    assert wasserstein_1d(Empirical(a), Empirical(b), 1.5) == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("p", [1.0, 1.5, 2.0, 3.0])
def test_wasserstein_1d_of_atoms_agrees_with_the_core_formula(p):
    """On weighted atoms the quantile integral is the core's exact W_p^p of the masses."""
    rng = np.random.default_rng(6)
    x1, x2 = rng.random(7), rng.random(5)
    m1, m2 = rng.random(7), rng.random(5)
    m2 *= m1.sum() / m2.sum()
    ref = wasserstein_pp_1d(x1, x2, m1, m2, p=p)
    assert wasserstein_1d(DiracSum(x1, m1), DiracSum(x2, m2), p) == pytest.approx(ref, rel=1e-12)
