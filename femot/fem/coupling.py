"""Coupled parameter schedules (gamma_n, delta_n) of Part II, condition (3.1): gamma_n / delta_n^d -> 0.

The family delta = C gamma^{1/(d+s)} and the schedules :func:`check_coupling` rejects are
described in docs/smoothing.md.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from femot._docstrings import cite
from femot._validation import as_vector, check_positive_scalar

__all__ = ["Schedule", "coupled_schedule", "check_coupling"]


@dataclass(frozen=True)
class Schedule:
    """A schedule of levels: gammas, deltas, d and the ratios gamma_n / delta_n^d.

    Attributes
    ----------
    gammas : numpy.ndarray
        Regularization parameters gamma_n, decreasing.
    deltas : numpy.ndarray
        Smoothing widths delta_n, decreasing.
    d : int
        Dimension of the product space, ``d1 + d2``.
    ratios : numpy.ndarray
        ``gamma_n / delta_n^d``, strictly decreasing (Part II (3.1)).

    Examples
    --------
    >>> from femot.fem import coupled_schedule
    >>> sch = coupled_schedule(d=2, n_levels=3)
    >>> len(sch), [f"{r:.4f}" for r in sch.ratios]  # gamma_n / delta_n^d decreasing
    (3, ['0.2154', '0.1357', '0.0855'])
    >>> [(f"{g:.2e}", f"{de:.4f}") for g, de in sch][0]
    ('1.00e-02', '0.2154')
    """

    gammas: np.ndarray
    deltas: np.ndarray
    d: int
    ratios: np.ndarray

    def __len__(self) -> int:
        return int(self.gammas.size)

    def __iter__(self):
        return iter(zip(self.gammas.tolist(), self.deltas.tolist()))

    def levels(self) -> list[dict]:
        """One dict per level with its ``gamma``, ``delta``, ``d`` and ``ratio``."""
        return [{"gamma": g, "delta": de, "d": self.d, "ratio": r}
                for g, de, r in zip(self.gammas.tolist(), self.deltas.tolist(), self.ratios.tolist())]


def _check_d(d) -> int:
    if not isinstance(d, (int, np.integer)) or d < 1:
        raise ValueError(f"d must be a positive integer (d = d1 + d2), got {d!r}")
    return int(d)


@cite("II")
def check_coupling(gammas, deltas, d: int, *, rho: float | None = None, force: bool = False,
                   ratio_drop: float = 0.5) -> Schedule:
    """Validate a schedule against Part II (3.1); return it as a :class:`Schedule`.

    Raises ``ValueError`` (naming the argument and the reason) unless ``force``, in
    which case a ``UserWarning`` is issued instead. Rejected: lengths differ or < 2;
    nonpositive entries; gammas or deltas increasing or not decreasing overall;
    gamma_n / delta_n^d not strictly decreasing; last ratio > ``ratio_drop`` * first
    ratio; and, when ``rho`` is given, delta_n > rho.

    Parameters
    ----------
    gammas : array_like
        Regularization parameters gamma_n of the levels.
    deltas : array_like
        Smoothing widths delta_n, same length.
    d : int
        Dimension of the product space, ``d = d1 + d2``.
    rho : float or None, optional
        Largest admissible delta (the support margin); None (default) skips that check.
    force : bool, optional
        Warn instead of raising (default False).
    ratio_drop : float, optional
        Required drop of the last ratio against the first (default 0.5).

    Returns
    -------
    Schedule
        The validated gammas, deltas, d and ratios ``gamma_n / delta_n^d``.

    Examples
    --------
    >>> from femot.fem import check_coupling
    >>> [round(r, 6) for r in check_coupling([1e-2, 1e-3], [0.2, 0.1], d=2).ratios.tolist()]
    [0.25, 0.1]
    """
    d = _check_d(d)
    g = as_vector(gammas, "gammas")
    de = as_vector(deltas, "deltas")
    if g.size != de.size:
        raise ValueError(f"gammas and deltas must have the same length, got {g.size} and {de.size}")
    if np.any(g <= 0):
        raise ValueError("gammas must be positive")
    if np.any(de <= 0):
        raise ValueError("deltas must be positive")
    ratios = g / de**d
    problems = []
    if g.size < 2:
        problems.append("gammas: a schedule needs at least two levels to show gamma_n, delta_n -> 0")
    else:
        if np.any(np.diff(g) > 0) or g[-1] >= g[0]:
            problems.append("gammas must decrease towards 0 (nonincreasing, last < first)")
        if np.any(np.diff(de) > 0) or de[-1] >= de[0]:
            problems.append("deltas must decrease towards 0 (nonincreasing, last < first)")
        if np.any(np.diff(ratios) >= 0):
            i = int(np.flatnonzero(np.diff(ratios) >= 0)[0])
            problems.append(f"gammas/deltas: gamma_n / delta_n^d (d = {d}) must strictly decrease to 0 "
                            f"(Part II (3.1)), but it goes from {ratios[i]:.3g} to {ratios[i + 1]:.3g} "
                            f"at level {i + 1}; delta decreases too fast relative to gamma")
        elif ratios[-1] > ratio_drop * ratios[0]:
            problems.append(f"gammas/deltas: gamma_n / delta_n^d falls only from {ratios[0]:.3g} to "
                            f"{ratios[-1]:.3g} (> {ratio_drop} x first); it does not tend to 0 visibly "
                            f"(Part II (3.1))")
    if rho is not None:
        rho = check_positive_scalar(rho, "rho")
        if np.any(de > rho):
            problems.append(f"deltas must not exceed rho = {rho:.4g} (Part II (3.1)); max delta = {de.max():.4g}")
    if problems:
        msg = "; ".join(problems)
        if not force:
            raise ValueError(msg)
        warnings.warn(f"schedule accepted with force=True although: {msg}", UserWarning, stacklevel=2)
    return Schedule(g, de, d, ratios)


@cite("II")
def coupled_schedule(gammas=None, *, d: int, n_levels: int | None = None, s: float = 1.0, C: float = 1.0,
                     gamma0: float = 1e-2, factor: float = 0.25, rho: float | None = None) -> Schedule:
    """A schedule with delta_n = C gamma_n^{1/(d+s)}, so gamma_n / delta_n^d = C^{-d} gamma_n^{s/(d+s)}.

    Give either ``gammas`` (decreasing) or ``n_levels`` (then gamma_n = gamma0 factor^n).
    The result is validated with :func:`check_coupling` (``rho`` bounds delta_n).

    Parameters
    ----------
    gammas : array_like or None, optional
        Positive regularization parameters; give this or ``n_levels``.
    d : int
        Dimension of the product space, ``d = d1 + d2``.
    n_levels : int or None, optional
        Number of levels (>= 2) of the geometric schedule ``gamma0 * factor^n``.
    s : float, optional
        Positive exponent of the coupling (default 1).
    C : float, optional
        Positive constant of the coupling (default 1).
    gamma0 : float, optional
        First gamma of the geometric schedule (default 1e-2).
    factor : float, optional
        Ratio of the geometric schedule, in (0, 1) (default 0.25).
    rho : float or None, optional
        Upper bound of delta_n passed to :func:`check_coupling`.

    Returns
    -------
    Schedule
        The validated schedule.

    Raises
    ------
    ValueError
        If not exactly one of ``gammas`` and ``n_levels`` is given, a parameter is out of
        range, or :func:`check_coupling` rejects the schedule.

    Examples
    --------
    >>> from femot.fem import coupled_schedule
    >>> sch = coupled_schedule(d=2, n_levels=3)
    >>> [f"{g:.2e}" for g in sch.gammas], [f"{de:.4f}" for de in sch.deltas]
    (['1.00e-02', '2.50e-03', '6.25e-04'], ['0.2154', '0.1357', '0.0855'])
    """
    d = _check_d(d)
    s = check_positive_scalar(s, "s")
    C = check_positive_scalar(C, "C")
    if (gammas is None) == (n_levels is None):
        raise ValueError("give exactly one of gammas and n_levels")
    if gammas is None:
        if not isinstance(n_levels, (int, np.integer)) or n_levels < 2:
            raise ValueError(f"n_levels must be an integer >= 2, got {n_levels!r}")
        gamma0 = check_positive_scalar(gamma0, "gamma0")
        factor = check_positive_scalar(factor, "factor")
        if factor >= 1:
            raise ValueError(f"factor must be in (0, 1), got {factor!r}")
        g = gamma0 * factor ** np.arange(n_levels)
    else:
        g = as_vector(gammas, "gammas")
        if np.any(g <= 0):
            raise ValueError("gammas must be positive")
    de = C * g ** (1.0 / (d + s))
    return check_coupling(g, de, d, rho=rho)
