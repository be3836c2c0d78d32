"""Optimization over the (weighted) simplex: Part III, Algorithm 4.1, and a bundle method.

* :mod:`femot.optim.simplex` -- projections onto {x >= 0, <w, x> = s}, the
  stationarity measure theta_R and the modified measure psi_R;
* :mod:`femot.optim.minimize` -- :func:`minimize_simplex`, the one entry point, with
  ``method="trust-region"`` (:mod:`femot.optim.trust_region`, Algorithm 4.1; its
  projected Newton-CG model in :mod:`femot.optim._newton`) or ``method="bundle"``
  (:mod:`femot.optim.bundle`, quadratic cuts for quadratic plus piecewise-linear objectives);
* :mod:`femot.optim.path` -- warm-started path following (:func:`minimize_simplex_path`);
* :mod:`femot.optim.options` and :mod:`femot.optim.result` -- their options and result.
"""
from femot.optim.minimize import minimize_simplex
from femot.optim.options import BundleOptions, TrustRegionOptions
from femot.optim.path import SimplexPathResult, minimize_simplex_path
from femot.optim.result import LEGEND, SimplexTRResult
from femot.optim.simplex import (
    project_simplex,
    project_weighted_simplex,
    psi_R,
    simplex_diameter,
    simplex_vertices,
    theta_R,
)

__all__ = [
    "project_simplex",
    "project_weighted_simplex",
    "psi_R",
    "simplex_diameter",
    "simplex_vertices",
    "theta_R",
    "BundleOptions",
    "LEGEND",
    "SimplexPathResult",
    "SimplexTRResult",
    "minimize_simplex",
    "minimize_simplex_path",
    "TrustRegionOptions",
]
