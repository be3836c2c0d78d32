"""Finite-element layer: from measures on meshes to the finite-dimensional core (docs/fem.md).

* meshes, mesh_files -- ``load_mesh``, ``save_mesh``, boundary distances, point location, the
  enlarged domain of Part II Lemma 2.4; reading and validating mesh files;
* interpolation -- ``interpolate_nodal``: the one rule carrying nodal values between meshes;
* quadrature -- ``quadrature(mesh, rule)`` nodes and weights, ``product_cost``;
* measures, densities, quantiles -- ``DiracSum``, ``Empirical``, sums; ``Density``, ``FEFunction``;
  ``quantile`` and ``wasserstein_1d``, the exact 1D reference;
* smoothing -- T^delta of Part II eq. (2.6): ``smooth``, ``Smoother``, its adjoint;
* coupling -- schedules with gamma_n / delta_n^d -> 0 (Part II (3.1));
* lower_level -- ``solve_lower_level``: the smoothed, regularized plan through the core;
* poisson -- ``PoissonOperator`` (P1/P2, homogeneous Dirichlet), ``product_mesh``;
* plotting -- ``plot_field`` (nodal fields and vertex masses on 1D/2D meshes), ``nodal_density``.
"""
from femot.fem.coupling import Schedule, check_coupling, coupled_schedule
from femot.fem.densities import Density, FEFunction
from femot.fem.grid_kernel import GridKernel, common_lattice
from femot.fem.interpolation import interpolate_nodal
from femot.fem.lower_level import (
                                   LowerLevelResult,
                                   barycentric_map,
                                   export_plan,
                                   plan_image,
                                   solve_lower_level,
                                   transfer_potentials,
)
from femot.fem.measures import DiracSum, Empirical, Measure, SumMeasure
from femot.fem.meshes import (
    admissible_vertices,
    available_meshes,
    boundary_distance,
    boundary_facets,
    element_volumes,
    enlarged_mesh,
    load_mesh,
    locate,
    mesh_dim,
    save_mesh,
)
from femot.fem.plotting import nodal_density, plot_field
from femot.fem.poisson import PoissonOperator, product_mesh
from femot.fem.quadrature import ProductQuadrature, Quadrature, product_cost, product_quadrature, quadrature
from femot.fem.quantiles import quantile, wasserstein_1d
from femot.fem.smoothing import Smoother, SmoothingOperator, mollifier, mollifier_constant, smooth

__all__ = [
    "load_mesh", "save_mesh", "available_meshes", "mesh_dim", "element_volumes", "boundary_facets", "boundary_distance",
    "admissible_vertices", "locate", "enlarged_mesh", "interpolate_nodal",
    "Quadrature", "quadrature", "product_cost", "ProductQuadrature", "product_quadrature",
    "Measure", "Density", "FEFunction", "DiracSum", "Empirical", "SumMeasure", "quantile", "wasserstein_1d",
    "mollifier", "mollifier_constant", "Smoother", "SmoothingOperator", "smooth", "GridKernel", "common_lattice",
    "Schedule", "coupled_schedule", "check_coupling",
    "PoissonOperator", "product_mesh", "plot_field", "nodal_density",
    "LowerLevelResult", "solve_lower_level", "transfer_potentials", "plan_image", "export_plan", "barycentric_map",
]
