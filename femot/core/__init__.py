"""The finite-dimensional core: regularized and exact transport, sensitivities."""
from femot.core.cost import Cost, DenseCost, GeometricCost, as_cost
from femot.core.exact import exact_ot, exact_ot_1d, monotone_coupling_1d, wasserstein_pp_1d
from femot.core.qrot import QROTResult, residual_floor, solve_qrot

__all__ = ["Cost", "DenseCost", "GeometricCost", "as_cost", "exact_ot", "exact_ot_1d", "wasserstein_pp_1d",
           "monotone_coupling_1d", "QROTResult", "residual_floor",
           "solve_qrot"]
