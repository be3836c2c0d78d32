"""Upper-level problems: transportation identification, tracking, elliptic control."""
from femot.problems.control import ControlProblem, ControlResult, SmoothedLowerLevel, solve_control
from femot.problems.control_reference import (control_objective, monotone_plan_1d, solve_control_reference,
                                              wasserstein1_1d, wasserstein_power_1d)
from femot.problems.tracking import TrackingProblem, TrackingResult, observation_domain, solve_tracking

__all__ = [
    "ControlProblem", "ControlResult", "SmoothedLowerLevel", "solve_control",
    "TrackingProblem", "TrackingResult", "observation_domain", "solve_tracking",
    "solve_control_reference", "control_objective", "wasserstein1_1d", "wasserstein_power_1d",
    "monotone_plan_1d",
]
