"""
Elliptic control with a transport term on your own mesh
=======================================================

The Wasserstein-regularized control problem (Part II, (OCP) and its regularization)

.. math::

    \\min_{\\mu_1} \\tfrac12 \\|y - y_d\\|_{L^2}^2 + \\nu\\, V_\\gamma(T^\\delta \\mu_1, T^\\delta \\mu_2^d),
    \\qquad -\\Delta y = \\mu_1 \\text{ in } \\Omega,\\ y = 0 \\text{ on } \\partial\\Omega,

over probability measures :math:`\\mu_1` at the vertices, solved on a mesh read from a gmsh
file. :math:`V_\\gamma` is the optimal value of the regularized transport problem, a convex
function of the marginals, so the whole objective is convex and its Frank-Wolfe gap certifies
the answer (value formulation, see the problems page).

What a user needs: a :class:`femot.fem.PoissonOperator` on the mesh (the state equation), the
desired state (nodal values, or a callable of points shaped ``(2, ...)``), the prior
:math:`\\mu_2^d` as masses at the vertices, and :math:`\\nu, \\gamma, \\delta`. The answer's
control is ``res.masses`` (masses at the vertices) and its state ``res.y``.
"""
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import meshio
import numpy as np
import skfem

from femot.fem import PoissonOperator, load_mesh, nodal_density, plot_field, save_mesh
from femot.fem.meshes import admissible_vertices
from femot.problems import ControlProblem

# %%
# A mesh in gmsh format. Here we write one (an L-shaped domain) so that the example is
# self-contained; with your own file, start at ``load_mesh``.
folder = Path(tempfile.mkdtemp())
lshape = skfem.MeshTri.init_lshaped().refined(4)  # node spacing 1/16 <= delta / 4: T^delta resolved
tags = {"gmsh:physical": [np.ones(lshape.t.shape[1], int)], "gmsh:geometrical": [np.ones(lshape.t.shape[1], int)]}
meshio.write(folder / "lshape.msh", meshio.Mesh(lshape.p.T, [("triangle", lshape.t.T)], cell_data=tags),
             file_format="gmsh22", binary=False)
mesh = load_mesh(folder / "lshape.msh")
print(f"read {mesh.p.shape[1]} vertices and {mesh.t.shape[1]} triangles")

# %%
# The data: a desired state made by two bumps of mass, a prior mass in the lower left, both
# kept at distance rho >= delta from the boundary (the smoothing must not leave the domain).
op = PoissonOperator(mesh)
rho = delta = 0.25
adm = admissible_vertices(mesh, rho)
X = op.vertices


def bump(center, r):
    d2 = ((X - np.asarray(center)) ** 2).sum(axis=1)
    return np.clip(1 - d2 / r**2, 0, None) ** 2


m_true = np.zeros(op.nvertices)
m_true[adm] = (bump((-0.5, 0.5), 0.3) + 0.7 * bump((0.5, -0.5), 0.25))[adm]
m_true /= m_true.sum()
y_d = op.state(m_true)                     # reachable desired state
mu2 = np.zeros(op.nvertices)
mu2[adm] = bump((-0.45, -0.45), 0.4)[adm]
mu2 /= mu2.sum()

# %%
# Solve. ``options={"verbose": True}`` prints one line per trust-region iteration.
problem = ControlProblem(op, y_d, mu2, nu=0.005, gamma=1e-2, delta=delta, rho=rho, transport="value")
res = problem.solve()
print(res.message)
print(f"success={res.success}, {res.nit} iterations, objective {res.fun:.6e}, Frank-Wolfe gap {res.fw_gap:.1e}")

# %%
# Write control and state to VTU (ParaView) and draw them.
fields = {"control_density": nodal_density(mesh, res.masses), "state": res.y, "desired_state": y_d}
vtu = save_mesh(mesh, folder / "control.vtu", point_data=fields)
print(f"wrote {vtu.name} with fields {sorted(meshio.read(vtu).point_data)}")

fig, axs = plt.subplots(1, 3, figsize=(13, 3.9), layout="constrained")
plot_field(mesh, res.masses, axs[0], masses=True, title="optimal control (density)", label="control density")
plot_field(mesh, res.y, axs[1], title="state y", label="y", cmap="magma", contours=8)
plot_field(mesh, res.y - y_d, axs[2], title="y - y_d", label="y - y_d", cmap="RdBu_r")
plt.show()
