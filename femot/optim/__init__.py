"""Optimization over the (weighted) simplex: Part III, Algorithm 4.1.

* :mod:`femot.optim.simplex` -- projections onto {x >= 0, <w, x> = s}, the
  stationarity measure theta_R and the modified measure psi_R;
* :mod:`femot.optim.trust_region` -- the constrained nonsmooth trust-region
  method (:func:`minimize_simplex`) and warm-started path following
  (:func:`minimize_simplex_path`);
* :mod:`femot.optim._newton` -- the projected Newton-CG model (``hessp``);
* :mod:`femot.optim._bundle` -- quadratic cuts, their QP and the convex-combination
  certificate of ``kinks="bundle"`` (quadratic plus piecewise-linear objectives).
"""
from femot.optim.simplex import (
    project_simplex,
    project_weighted_simplex,
    psi_R,
    simplex_diameter,
    simplex_vertices,
    theta_R,
)
from femot.optim.trust_region import (
    DEFAULT_OPTIONS,
    SimplexPathResult,
    SimplexTRResult,
    check_options,
    minimize_simplex,
    minimize_simplex_path,
)

__all__ = [
    "project_simplex",
    "project_weighted_simplex",
    "psi_R",
    "simplex_diameter",
    "simplex_vertices",
    "theta_R",
    "DEFAULT_OPTIONS",
    "SimplexPathResult",
    "SimplexTRResult",
    "check_options",
    "minimize_simplex",
    "minimize_simplex_path",
]
