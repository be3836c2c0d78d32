"""Upper-level problems: transportation identification, tracking, elliptic control."""
from femot.problems.base import (
                                              LowerLevel,
                                              SecondOrderProblem,
                                              SimplexProblem,
                                              UpperLevelResult,
                                              solve_on_simplex,
)
from femot.problems.control import ControlProblem, ControlResult, SmoothedLowerLevel, solve_control
from femot.problems.control_reference import (
                                              control_objective,
                                              monotone_plan_1d,
                                              solve_control_reference,
                                              wasserstein1_1d,
                                              wasserstein_power_1d,
)
from femot.problems.identification import (
                                              IdentificationResult,
                                              TransportIdentification,
                                              band_mask,
                                              identification_errors,
                                              solve_identification,
)
from femot.problems.instances import identification_instance, load_instance, problem_from_instance, save_instance
from femot.problems.tracking import TrackingProblem, TrackingResult, observation_domain, solve_tracking

__all__ = [
    "TransportIdentification", "IdentificationResult", "solve_identification", "identification_errors",
    "band_mask", "identification_instance", "load_instance", "save_instance", "problem_from_instance",
    "ControlProblem", "ControlResult", "SmoothedLowerLevel", "solve_control",
    "TrackingProblem", "TrackingResult", "observation_domain", "solve_tracking",
    "solve_control_reference", "control_objective", "wasserstein1_1d", "wasserstein_power_1d",
    "monotone_plan_1d", "SimplexProblem", "SecondOrderProblem", "LowerLevel", "UpperLevelResult",
    "solve_on_simplex",
]
