"""The finite-dimensional core: regularized and exact transport, sensitivities."""
from femot.core.cost import Cost, DenseCost, GeometricCost, as_cost, certify_working_set
from femot.core.exact import exact_ot, exact_ot_1d, monotone_coupling_1d, wasserstein_pp_1d
from femot.core.qrot import residual_floor, solve_qrot
from femot.core.qrot_options import QROTOptions
from femot.core.qrot_result import QROTResult

__all__ = ["solve_qrot", "QROTOptions", "QROTResult", "residual_floor", "Cost", "DenseCost", "GeometricCost",
           "as_cost", "certify_working_set", "exact_ot", "exact_ot_1d", "wasserstein_pp_1d", "monotone_coupling_1d"]
