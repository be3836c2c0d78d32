"""Upper-level problems: transportation identification, tracking, elliptic control."""
from femot.problems.control_reference import (control_objective, monotone_plan_1d, solve_control_reference,
                                              wasserstein1_1d, wasserstein_power_1d)

__all__ = ["solve_control_reference", "control_objective", "wasserstein1_1d", "wasserstein_power_1d",
           "monotone_plan_1d"]
