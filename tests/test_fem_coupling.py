"""Parameter coupling gamma_n / delta_n^d -> 0 (Part II, (3.1))."""
import numpy as np
import pytest

from femot.fem import check_coupling, coupled_schedule


@pytest.mark.parametrize("d,s", [(2, 1.0), (4, 0.5), (3, 2.0)])
def test_coupled_schedule_satisfies_coupling(d, s):
    sch = coupled_schedule(d=d, n_levels=6, s=s, gamma0=1e-2, factor=0.25)
    g, de = sch.gammas, sch.deltas
    assert np.allclose(de, g ** (1 / (d + s)))
    assert np.allclose(sch.ratios, g / de**d)
    assert np.allclose(sch.ratios, g ** (s / (d + s)))  # closed form of the ratio
    assert np.all(np.diff(sch.ratios) < 0) and np.all(np.diff(de) < 0)
    assert len(sch) == 6 and len(sch.levels()) == 6 and sch.levels()[0]["d"] == d


def test_explicit_gammas_and_rho():
    g = [1e-2, 3e-3, 1e-3, 1e-4]
    sch = coupled_schedule(g, d=2, C=0.5)
    assert np.allclose(sch.deltas, 0.5 * np.array(g) ** (1 / 3))
    with pytest.raises(ValueError, match="rho"):
        coupled_schedule(g, d=2, rho=0.05)  # delta_0 = 0.108 > rho


def test_rejects_violations_with_reason():
    g = 1e-2 * 0.25 ** np.arange(5)
    # delta = gamma^(1/d): the ratio is constant 1 -> does not tend to 0.
    with pytest.raises(ValueError, match="gamma_n / delta_n\\^d"):
        check_coupling(g, g ** (1 / 2), 2)
    # delta shrinking faster than gamma^(1/d): the ratio grows.
    with pytest.raises(ValueError, match="must strictly decrease"):
        check_coupling(g, g ** (1 / 1.5), 2)
    # A ratio that decreases but barely.
    with pytest.raises(ValueError, match="falls only"):
        check_coupling(g, g ** (1 / 2.02), 2)
    with pytest.raises(ValueError, match="gammas must decrease"):
        check_coupling(g[::-1], g[::-1] ** 0.2, 2)
    with pytest.raises(ValueError, match="same length"):
        check_coupling(g, g[:3], 2)
    with pytest.raises(ValueError, match="positive"):
        check_coupling([1e-2, -1e-3], [0.1, 0.05], 2)
    with pytest.raises(ValueError, match="d must be"):
        check_coupling(g, g ** 0.2, 0)


def test_force_accepts_with_warning():
    g = 1e-2 * 0.25 ** np.arange(5)
    with pytest.warns(UserWarning, match="force=True"):
        sch = check_coupling(g, g ** (1 / 2), 2, force=True)
    assert np.allclose(sch.ratios, 1.0)
