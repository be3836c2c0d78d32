"""Figures of nodal fields: the density of vertex masses and the drawing helper."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import skfem  # noqa: E402

from femot.fem import nodal_density, plot_field, quadrature, save_mesh  # noqa: E402


@pytest.mark.parametrize("mesh", [skfem.MeshLine(np.linspace(0.0, 2.0, 9)), skfem.MeshTri().refined(2)])
def test_nodal_density_keeps_the_mass_and_reproduces_constants(mesh):
    w = quadrature(mesh, "lumped").weights
    rng = np.random.default_rng(0)
    masses = rng.random(mesh.nvertices)
    assert np.isclose(w @ nodal_density(mesh, masses), masses.sum())
    # the masses of the constant density 1 under the lumped rule are the weights themselves
    assert np.allclose(nodal_density(mesh, w), 1.0)


def test_plot_field_draws_2d_and_1d_and_refuses_bad_shapes():
    mesh = skfem.MeshTri().refined(2)
    vals = mesh.p[0] + 2 * mesh.p[1]
    ax = plot_field(mesh, vals, title="t", label="u", contours=4)
    assert ax.get_title() == "t" and len(ax.figure.axes) == 2  # the field and its colour bar
    assert ax.figure.axes[1].get_ylabel() == "u"
    coll = ax.collections[0]
    assert np.allclose(np.sort(coll.get_array()), np.sort(vals))
    plt.close(ax.figure)
    line = skfem.MeshLine(np.array([0.0, 0.5, 0.25, 1.0]))  # vertices out of order: drawn sorted
    ax = plot_field(line, np.array([0.0, 2.0, 1.0, 3.0]), label="m")
    x, y = ax.lines[0].get_data()
    assert np.all(np.diff(x) > 0) and np.allclose(y, [0.0, 1.0, 2.0, 3.0])
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="values: shape"):
        plot_field(mesh, vals[:-1])
    with pytest.raises(ValueError, match="masses: shape"):
        plot_field(mesh, vals[:-1], masses=True)
    with pytest.raises(ValueError, match="dimension 3"):
        plot_field(skfem.MeshTet(), np.zeros(8))


def test_fields_written_for_paraview_read_back(tmp_path):
    import meshio

    mesh = skfem.MeshTri().refined(1)
    dens = nodal_density(mesh, np.full(mesh.nvertices, 1.0 / mesh.nvertices))
    path = save_mesh(mesh, tmp_path / "f.vtu", point_data={"density": dens})
    back = meshio.read(path)
    assert np.allclose(back.point_data["density"], dens) and np.allclose(back.points[:, :2], mesh.p.T)


def test_nodal_density_refuses_non_finite_masses():
    mesh = skfem.MeshTri().refined(1)
    m = np.full(mesh.nvertices, 0.1)
    m[3] = np.nan
    with pytest.raises(ValueError, match="masses: contains NaN or infinite entries"):
        nodal_density(mesh, m)
