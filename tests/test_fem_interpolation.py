"""interpolate_nodal: P1 on the old mesh inside it, the nearest old node outside, a copy on identical nodes."""
import numpy as np
import pytest
from skfem import MeshLine, MeshTri

from femot.fem import interpolate_nodal


def _affine(x):
    return 1.5 - 2.0 * x[:, 0] + (0.7 * x[:, 1] if x.shape[1] > 1 else 0.0)


def test_1d_without_mesh_is_p1_on_sorted_nodes_and_constant_beyond_ends():
    rng = np.random.default_rng(1)
    x_old = rng.permutation(np.linspace(0.0, 1.0, 11))  # unsorted nodes
    v = 3.0 * x_old - 1.0
    x_new = np.array([-0.5, 0.0, 0.123, 0.5, 0.999, 1.0, 2.0])
    out = interpolate_nodal(x_old, v, x_new)
    inside = (x_new >= 0) & (x_new <= 1)
    assert np.allclose(out[inside], 3.0 * x_new[inside] - 1.0)
    assert out[0] == -1.0 and out[-1] == 2.0  # the end values beyond the ends


def test_1d_with_mesh_matches_the_implied_mesh():
    m = MeshLine(np.linspace(0.0, 1.0, 9))
    x_old = m.p[0]
    v = np.sin(4 * x_old)
    x_new = np.linspace(-0.2, 1.3, 37)
    assert np.allclose(interpolate_nodal(x_old, v, x_new, mesh=m), interpolate_nodal(x_old, v, x_new))


def test_2d_p1_is_exact_for_affine_functions_inside_and_nearest_outside():
    m = MeshTri.init_symmetric().refined(2)
    x_old = m.p.T
    v = _affine(x_old)
    rng = np.random.default_rng(2)
    inside = rng.uniform(0.0, 1.0, (50, 2))
    outside = np.array([[1.5, 0.5], [-0.3, -0.3]])
    x_new = np.vstack([inside, outside])
    out = interpolate_nodal(x_old, v, x_new, mesh=m)
    assert np.allclose(out[:50], _affine(inside))
    for k, y in enumerate(outside):
        nearest = np.argmin(((x_old - y) ** 2).sum(axis=1))
        assert out[50 + k] == v[nearest]


def test_2d_without_mesh_takes_the_nearest_old_node():
    x_old = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    out = interpolate_nodal(x_old, [1.0, 2.0, 3.0], [[0.1, 0.1], [0.9, 0.2], [0.2, 2.0]])
    assert out.tolist() == [1.0, 2.0, 3.0]


def test_several_columns_are_carried_together():
    m = MeshTri.init_symmetric().refined(1)
    v = np.stack([_affine(m.p.T), 2.0 * _affine(m.p.T)], axis=1)
    x_new = np.array([[0.3, 0.4], [0.8, 0.1], [2.0, 2.0]])
    out = interpolate_nodal(m.p.T, v, x_new, mesh=m)
    assert out.shape == (3, 2)
    assert np.allclose(out[:, 1], 2.0 * out[:, 0])
    out1 = interpolate_nodal(np.linspace(0, 1, 5), np.stack([np.arange(5.0), -np.arange(5.0)], 1), [0.125])
    assert np.allclose(out1, [[0.5, -0.5]])


@pytest.mark.parametrize("with_mesh", [False, True])
def test_identical_nodes_give_an_exact_copy(with_mesh):
    m = MeshTri.init_circle(3)
    v = np.random.default_rng(3).standard_normal(m.p.shape[1])
    out = interpolate_nodal(m.p.T, v, m.p.T.copy(), mesh=m if with_mesh else None)
    assert np.array_equal(out, v)
    out[0] += 1.0
    assert out[0] != v[0]  # a copy, not a view


def test_invalid_input_is_refused():
    m = MeshTri()
    with pytest.raises(ValueError, match="dimension"):
        interpolate_nodal(m.p.T, np.zeros(4), [0.5])
    with pytest.raises(ValueError, match="values"):
        interpolate_nodal([0.0, 1.0], [1.0, 2.0, 3.0], [0.5])
    with pytest.raises(ValueError, match="NaN"):
        interpolate_nodal([0.0, np.nan], [1.0, 2.0], [0.5])
    with pytest.raises(ValueError, match="vertices"):
        interpolate_nodal(m.p.T[::-1], np.zeros(4), [[0.5, 0.5]], mesh=m)
