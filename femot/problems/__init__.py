"""Upper-level problems: transportation identification, tracking, elliptic control."""
from femot.problems.base import (
                                              LowerLevel,
                                              SecondOrderProblem,
                                              SimplexProblem,
                                              UpperLevelResult,
                                              solve_on_simplex,
)
from femot.problems.control import ControlProblem, ControlResult, SmoothedLowerLevel
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
)
from femot.problems.instances import identification_instance, load_instance, problem_from_instance, save_instance
from femot.problems.tracking import TrackingProblem, TrackingResult, observation_domain

__all__ = [
    "TransportIdentification", "IdentificationResult", "identification_errors",
    "band_mask", "identification_instance", "load_instance", "save_instance", "problem_from_instance",
    "ControlProblem", "ControlResult", "SmoothedLowerLevel",
    "TrackingProblem", "TrackingResult", "observation_domain",
    "solve_control_reference", "control_objective", "wasserstein1_1d", "wasserstein_power_1d",
    "monotone_plan_1d", "SimplexProblem", "SecondOrderProblem", "LowerLevel", "UpperLevelResult",
    "solve_on_simplex",
]
