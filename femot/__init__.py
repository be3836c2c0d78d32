"""femot: bilevel optimization of quadratically regularized optimal transport on FE meshes."""
from femot.core import DenseCost, GeometricCost, QROTResult, exact_ot, exact_ot_1d, solve_qrot

__version__ = "0.1.0"
__all__ = ["solve_qrot", "exact_ot", "exact_ot_1d", "QROTResult", "DenseCost", "GeometricCost", "__version__"]
