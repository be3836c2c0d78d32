"""The options of :func:`femot.solve_qrot` as one validated, frozen object."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

from femot._validation import check_nonnegative_scalar, check_positive_scalar

__all__ = ["QROTOptions"]

_INITS = ("auto", "monge", "exact", "mean", "coarse", "zero", "x0")
_LINEAR_SOLVERS = ("auto", "direct", "cg")


def _flag(value, name: str) -> bool:
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {value!r}")


@dataclass(frozen=True)
class QROTOptions:
    """Keyword options of :func:`femot.solve_qrot`, with its defaults; validated on construction.

    The fields are the solver's keywords (their meaning is documented there); the data
    (``c, mu1, mu2, gamma, eps, w1, w2``), the warm start ``x0`` and the ``callback`` are
    arguments of a call, not options. Layers above the core take their ``qrot_options``
    as a mapping or a ``QROTOptions`` and call
    ``solve_qrot(c, mu1, mu2, gamma, ..., **QROTOptions.from_mapping(qrot_options).as_kwargs())``;
    :func:`femot.solve_qrot` itself keeps plain keywords (it validates them through this
    class, the one home of the checks).

    Parameters
    ----------
    tol : float, optional
        Target residual (> 0, default 1e-10).
    max_iter : int, optional
        Largest number of Newton iterations (>= 0, default 200).
    init : {'auto', 'monge', 'exact', 'mean', 'coarse', 'zero', 'x0'}, optional
        Cold start (default 'auto').
    linear_solver : {'auto', 'direct', 'cg'}, optional
        Solver of the Newton systems (default 'auto').
    lm : float, optional
        Initial and smallest Levenberg-Marquardt factor (>= 0, default 1e-4).
    screening : bool, optional
        Restrict passes to a provably sufficient working set (default True).
    curve : bool, optional
        Also search along the semi-duals when the line search stops early (default True).
    verbose : bool, optional
        Print an iteration table (default False).

    Raises
    ------
    ValueError
        If a value is out of range or not one of the allowed names.

    Examples
    --------
    >>> opts = QROTOptions.from_mapping({"tol": 1e-8, "linear_solver": "direct"})
    >>> opts.tol, opts.max_iter, opts.linear_solver
    (1e-08, 200, 'direct')
    >>> sorted(opts.as_kwargs())[:3]
    ['curve', 'init', 'linear_solver']
    >>> QROTOptions.from_mapping({"tolerance": 1e-8})
    Traceback (most recent call last):
        ...
    ValueError: unknown QROT option(s) ['tolerance']; valid: tol, max_iter, init, ..., verbose
    """

    tol: float = 1e-10
    max_iter: int = 200
    init: str = "auto"
    linear_solver: str = "auto"
    lm: float = 1e-4
    screening: bool = True
    curve: bool = True
    verbose: bool = False

    def __post_init__(self):
        put = object.__setattr__  # frozen: normalize the validated values in place
        put(self, "tol", check_positive_scalar(self.tol, "tol"))
        try:
            max_iter = int(self.max_iter)
        except (TypeError, ValueError):
            raise ValueError(f"max_iter must be an integer, got {self.max_iter!r}") from None
        if isinstance(self.max_iter, (bool, np.bool_)) or max_iter != self.max_iter or max_iter < 0:
            raise ValueError(f"max_iter must be an integer >= 0, got {self.max_iter!r}")
        put(self, "max_iter", max_iter)
        if self.init not in _INITS:
            raise ValueError(f"init must be one of {', '.join(map(repr, _INITS))}, got {self.init!r}")
        if self.linear_solver not in _LINEAR_SOLVERS:
            raise ValueError(f"linear_solver must be one of {', '.join(map(repr, _LINEAR_SOLVERS))}, "
                             f"got {self.linear_solver!r}")
        put(self, "lm", check_nonnegative_scalar(self.lm, "lm"))
        for name in ("screening", "curve", "verbose"):
            put(self, name, _flag(getattr(self, name), name))

    @classmethod
    def from_mapping(cls, options: QROTOptions | Mapping | None = None) -> QROTOptions:
        """Options from a mapping of keywords (missing ones default), a ``QROTOptions`` (returned as is) or None.

        Raises
        ------
        ValueError
            If a key is not an option (the message lists the valid ones) or a value is invalid.
        TypeError
            If ``options`` is neither a mapping, a ``QROTOptions`` nor None.
        """
        if options is None:
            return cls()
        if isinstance(options, cls):
            return options
        if not isinstance(options, Mapping):
            raise TypeError(f"QROT options must be a mapping, a QROTOptions or None, got {type(options).__name__}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in options if k not in valid)
        if unknown:
            raise ValueError(f"unknown QROT option(s) {unknown}; valid: {', '.join(valid)}")
        return cls(**options)

    def as_kwargs(self) -> dict:
        """The options as keywords of :func:`femot.solve_qrot` (a new dict)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
