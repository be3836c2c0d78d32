"""Upper-level problems: transportation identification, tracking, elliptic control."""
from femot.problems.control import ControlProblem, ControlResult
from femot.problems.control_reference import control_objective, solve_control_reference
from femot.problems.identification import (
                                              TransportIdentification,
                                              band_mask,
                                              identification_errors,
)
from femot.problems.identification_paths import IdentificationResult
from femot.problems.instances import identification_instance, load_instance, problem_from_instance, save_instance
from femot.problems.plan_maps import ControlToPlan, MarginalToPlan
from femot.problems.protocol import SecondOrderProblem, SimplexProblem, UpperLevelResult, solve_on_simplex
from femot.problems.tracking import TrackingProblem, TrackingResult, observation_domain

__all__ = [
    "TransportIdentification", "IdentificationResult", "identification_errors",
    "band_mask", "identification_instance", "load_instance", "save_instance", "problem_from_instance",
    "ControlProblem", "ControlResult", "TrackingProblem", "TrackingResult", "observation_domain",
    "solve_control_reference", "control_objective", "SimplexProblem", "SecondOrderProblem", "MarginalToPlan",
    "ControlToPlan", "UpperLevelResult", "solve_on_simplex",
]
