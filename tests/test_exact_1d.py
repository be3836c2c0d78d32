"""The 1D exact transport functions: agreement with the linear program, closed forms, conventions."""
import numpy as np
import pytest

from femot.core import exact_ot, exact_ot_1d, monotone_coupling_1d, wasserstein_pp_1d


def _instance(n1, n2, seed, zeros=False):
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n1), rng.uniform(-1, 2, n2)  # unsorted
    w1, w2 = rng.uniform(0.5, 1.5, n1), rng.uniform(0.5, 1.5, n2)
    mu1, mu2 = rng.uniform(0, 1, n1), rng.uniform(0, 1, n2)
    if zeros:
        mu1[::3] = 0.0
        mu2[1::4] = 0.0
    mu2 *= (w1 @ mu1) / (w2 @ mu2)
    return x1, x2, mu1, mu2, w1, w2


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("p", [1.0, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("zeros", [False, True])
def test_value_and_coupling_match_the_linear_program(seed, p, zeros):
    x1, x2, mu1, mu2, w1, w2 = _instance(17, 13, seed, zeros)
    c = np.abs(x1[:, None] - x2[None, :]) ** p
    lp = exact_ot(c, mu1, mu2, w1, w2)
    assert lp.success
    value = wasserstein_pp_1d(x1, x2, mu1, mu2, w1, w2, p=p)
    assert value == pytest.approx(lp.cost, rel=1e-9, abs=1e-12)
    T = monotone_coupling_1d(x1, x2, mu1, mu2, w1, w2).toarray()
    assert np.all(T >= 0)
    assert np.allclose(T.sum(axis=1), w1 * mu1, atol=1e-12) and np.allclose(T.sum(axis=0), w2 * mu2, atol=1e-12)
    assert float(np.sum(T * c)) == pytest.approx(lp.cost, rel=1e-9, abs=1e-12)
    res = exact_ot_1d(x1, x2, mu1, mu2, w1, w2, cost=lambda d: np.abs(d) ** p)
    assert res.cost == pytest.approx(lp.cost, rel=1e-9, abs=1e-12)
    assert np.allclose(res.masses.toarray(), T, atol=1e-12)
    assert np.allclose(res.plan.toarray() * np.outer(w1, w2), T, atol=1e-12)


@pytest.mark.parametrize("p", [1.0, 2.0, 2.5])
def test_two_diracs(p):
    assert wasserstein_pp_1d([0.5], [-1.5], [3.0], [3.0], p=p) == pytest.approx(3.0 * 2.0 ** p, rel=1e-15)
    # the same Dirac split over weighted points
    assert wasserstein_pp_1d([0.5, 0.5], [-1.5], [1.0, 2.0], [1.0], [1.0, 0.5], [2.0], p=p) == pytest.approx(
        2.0 * 2.0 ** p, rel=1e-14)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_uniform_vs_shifted_uniform(p):
    n, s = 50, 0.3
    x = np.linspace(0.0, 1.0, n)
    u = np.full(n, 1.0 / n)
    perm = np.random.default_rng(4).permutation(n)
    assert wasserstein_pp_1d(x, (x + s)[perm], u, u[perm], p=p) == pytest.approx(s ** p, rel=1e-12)
    T = monotone_coupling_1d(x, (x + s)[perm], u, u[perm]).toarray()
    assert np.allclose(T[np.arange(n), np.argsort(perm)], 1.0 / n)  # i -> the shifted copy of itself


def test_p1_cdf_formula_equals_the_rearrangement():
    x1, x2, mu1, mu2, w1, w2 = _instance(40, 30, 7, zeros=True)
    w_cdf = wasserstein_pp_1d(x1, x2, mu1, mu2, w1, w2, p=1)
    w_mono = exact_ot_1d(x1, x2, mu1, mu2, w1, w2, cost=np.abs).cost
    assert w_cdf == pytest.approx(w_mono, rel=1e-12)


def test_column_points_and_symmetry():
    x1, x2, mu1, mu2, _, _ = _instance(9, 11, 3)
    mu2 *= mu1.sum() / mu2.sum()
    v = wasserstein_pp_1d(x1[:, None], x2[:, None], mu1, mu2)
    assert v == wasserstein_pp_1d(x1, x2, mu1, mu2)
    assert v == pytest.approx(wasserstein_pp_1d(x2, x1, mu2, mu1), rel=1e-13)
    assert wasserstein_pp_1d(x1, x1[::-1], mu1, mu1[::-1]) == 0.0


def test_invalid_input_is_refused():
    x = np.array([0.0, 1.0])
    with pytest.raises(ValueError, match="equal mass"):
        wasserstein_pp_1d(x, x, [0.5, 0.5], [0.5, 0.6])
    with pytest.raises(ValueError, match="equal mass"):
        monotone_coupling_1d(x, x, [0.5, 0.5], [0.5, 0.5], w2=[1.0, 2.0])
    with pytest.raises(ValueError):
        wasserstein_pp_1d(x, x, [-0.5, 1.5], [0.5, 0.5])
    with pytest.raises(ValueError, match="p must be >= 1"):
        wasserstein_pp_1d(x, x, [0.5, 0.5], [0.5, 0.5], p=0.5)
    with pytest.raises(ValueError):
        wasserstein_pp_1d(x, np.zeros((2, 2)), [0.5, 0.5], [0.5, 0.5])
    with pytest.raises(ValueError):
        monotone_coupling_1d(x, x, [0.5, 0.5], [1.0])
