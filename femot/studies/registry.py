"""The kinds of study by name (the values of ``study.problem``): the one registry."""
from __future__ import annotations

from femot.studies.control_exact_study import ExactControlStudy
from femot.studies.control_study import ControlStudy
from femot.studies.identification_study import IdentificationStudy
from femot.studies.study_problem import StudyProblem
from femot.studies.toml_checks import ConfigError
from femot.studies.tracking_study import TrackingStudy
from femot.studies.transport_study import TransportStudy

__all__ = ["get_problem", "problem_names"]

_REGISTRY = {cls.name: cls for cls in (TransportStudy, ControlStudy, IdentificationStudy, TrackingStudy,
                                       ExactControlStudy)}

# Study kinds renamed since 0.1.0: old name -> new name (a clear error instead of "unknown").
_RENAMED = {"lower-level": "transport"}


def problem_names() -> tuple:
    """Names of the study kinds, in registry order (the values of ``study.problem``).

    >>> problem_names()
    ('transport', 'control', 'identification', 'tracking', 'control-exact')
    """
    return tuple(_REGISTRY)


def get_problem(name: str) -> StudyProblem:
    """A fresh instance of the study kind ``name`` (ConfigError naming ``study.problem`` if unknown).

    >>> get_problem("transport").primary
    'cost_error'
    """
    if name in _REGISTRY:
        return _REGISTRY[name]()
    if name in _RENAMED:
        new = _RENAMED[name]
        raise ConfigError(f"study.problem: the study kind {name!r} is now called {new!r}: write "
                          f"problem = {new!r} and rename the table [{name}] to [{new}]")
    raise ConfigError(f"study.problem: unknown problem {name!r}; choose one of {', '.join(_REGISTRY)}")
