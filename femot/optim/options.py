"""Options of :func:`femot.optim.minimize_simplex`: one frozen, validated dataclass per method.

The defaults of Algorithm 4.1 are those of Part III, Section 4.2.  A few defaults depend on the
simplex (its dimension n, weights w and mass s); they are ``None`` in the dataclass and filled in
by :meth:`TrustRegionOptions.resolved` / :meth:`BundleOptions.resolved` when a run starts (the
result's ``options`` holds the resolved values).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from femot._validation import check_positive_scalar
from femot.optim.simplex import _diameter

__all__ = ["BundleOptions", "TrustRegionOptions"]


def _weights(n, weights):
    return None if weights is None else np.asarray(weights, dtype=float)


@dataclasses.dataclass(frozen=True)
class _SharedOptions:
    """The fields both methods have, with the same meaning and defaults (Part III, Sec. 4.2),
    the validation helpers and the conversion from a Mapping."""

    R: float | None = None
    Delta0: float = 1.0
    Delta_max: float | None = None
    eta1: float = 0.1
    eta2: float = 0.9
    beta1: float = 0.5
    beta2: float = 1.5
    tol: float = 1e-5
    max_iter: int = 200
    radius_floor: float = 1e-14
    verbose: bool = False

    def _set(self, name, value):
        object.__setattr__(self, name, value)  # frozen: coercion happens once, here

    def _positive(self, *names):
        for key in names:
            self._set(key, check_positive_scalar(getattr(self, key), f"options['{key}']"))

    def _positive_or_none(self, *names):
        for key in names:
            if getattr(self, key) is not None:
                self._positive(key)

    def _integer(self, key, low, what):
        v = getattr(self, key)
        if not isinstance(v, numbers.Integral) or v < low:
            raise ValueError(f"options['{key}'] must be {what}, got {v!r}")
        self._set(key, int(v))

    def _flags(self, *names):
        for key in names:
            self._set(key, bool(getattr(self, key)))

    def __post_init__(self):
        self._positive_or_none("R", "Delta_max")
        self._positive("Delta0", "beta2", "radius_floor")
        self._set("tol", float(self.tol))
        if not (self.tol >= 0.0 and math.isfinite(self.tol)):
            raise ValueError(f"options['tol'] must be a nonnegative number, got {self.tol!r}")
        self._positive("eta1", "eta2", "beta1")
        if not self.eta1 < self.eta2 < 1.0:
            raise ValueError(f"options: need 0 < eta1 < eta2 < 1, got eta1={self.eta1}, eta2={self.eta2}")
        if not self.beta1 < 1.0 < self.beta2:
            raise ValueError(f"options: need 0 < beta1 < 1 < beta2, got beta1={self.beta1}, beta2={self.beta2}")
        self._integer("max_iter", 0, "a nonnegative integer")
        self._flags("verbose")

    def _derived(self, n, weights, mass):
        """R = max(sqrt(n), diameter) and Delta_max = max(Delta0, diameter) where they are None."""
        s = check_positive_scalar(mass, "mass")
        d = _diameter(n, _weights(n, weights), s)
        # Part III, Sec. 4.2: R = sqrt(n) (>= sqrt(2), the diameter of the standard simplex, so
        # theta_R is the closed-form LP value, Remark 4.2); a weighted or rescaled simplex can be
        # wider: keep the ball inactive there as well
        return {"R": max(math.sqrt(n), d) if self.R is None else self.R,
                "Delta_max": max(self.Delta0, d) if self.Delta_max is None else self.Delta_max}

    def without_callables(self) -> Any:
        """A copy with the callable options (``precond``, ``metric``) set to None.

        Results keep this copy: such callables are often bound methods of a problem that
        holds factorizations, which would make the result impossible to pickle or copy.
        """
        gone: dict[str, Any] = {f.name: None for f in dataclasses.fields(self) if callable(getattr(self, f.name))}
        return dataclasses.replace(self, **gone) if gone else self

    @classmethod
    def coerce(cls, options: Any) -> Any:
        """``options`` as this class: an instance, a Mapping of its fields (validated) or None (defaults).

        Raises
        ------
        ValueError
            For an unknown key (the message lists the valid ones), an invalid value or another type.
        """
        if options is None:
            return cls()
        if isinstance(options, cls):
            return options
        if isinstance(options, Mapping):
            valid = sorted(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
            unknown = sorted(set(options) - set(valid))
            if unknown:
                raise ValueError(f"options: unknown option(s) {unknown} for {cls.__name__}; valid: {valid}")
            return cls(**options)
        raise ValueError(f"options must be a {cls.__name__}, a Mapping or None, got {type(options).__name__}")


@dataclasses.dataclass(frozen=True)
class TrustRegionOptions(_SharedOptions):
    """Options of Algorithm 4.1, ``minimize_simplex(method="trust-region")`` (Part III, Sec. 4.2).

    Algorithm 4.1 constants: ``R`` (radius of theta_R / psi_R; None: max(sqrt(n), diameter of
    the simplex)), ``Delta0``, ``Delta_min`` (below it the Bouligand model of Step 11 is used),
    ``eta1``, ``eta2``, ``beta1``, ``beta2``, ``nu`` (Cauchy decrease fraction), ``tol``,
    ``max_iter``.  Safeguards: ``Delta_max`` (None: max(Delta0, diameter)), ``radius_floor``
    (status 2 below it), ``psi_stop_radius`` (psi_R <= tol stops only for Delta <= it; None:
    Delta_min).  BFGS model: ``H0`` (H = H0 I at the start and at resets), ``bfgs_reset`` (reset
    every so many iterations; 0 or None: never), ``reset_scaling`` (reset to (y'y / s'y) I),
    ``max_cond``, ``subspace_step`` (the dogleg on the current face), ``bundle_size`` (cutting
    planes kept for the forecast; 0: off), ``bouligand_H`` ('identity': H0 I, or 'bfgs'),
    ``forecast_switch``.  Bouligand sampling: ``n_probe`` (None: n + 5), ``n_coord``,
    ``n_random``, ``seed``.  Second-order model (``hessp``): ``cg_maxiter`` (CG iterations per
    face; None: min(2 |F| + 10, 500)), ``cg_rtol`` (largest forcing term), ``newton_minor``
    (face changes per step), ``precond`` (None, or a callable ``(x, free) -> M`` with ``M(v)`` an
    SPD approximation of the inverse of the Hessian on the free coordinates ``free`` (a boolean
    mask) applied to a vector that vanishes off them: the CG preconditioner), ``subproblem``
    ('projected': faces shrink by the bounds the first offending CG step reaches; 'active-set':
    every bound the face's minimizer violates is fixed at once, for convex models whose active
    set has a long boundary, as in the control problems).  Convex stop:
    ``convex``, ``fw_rtol``, ``fw_floor``.  Output: ``verbose``.  docs/trust_region.md describes each.

    >>> o = TrustRegionOptions(tol=1e-8)
    >>> print(o.tol, o.Delta0, o.eta1)
    1e-08 1.0 0.1
    >>> r = o.resolved(4)  # R = sqrt(4), Delta_max = diameter of the standard simplex
    >>> print(r.R, round(r.Delta_max, 6), r.n_probe)
    2.0 1.414214 9
    >>> TrustRegionOptions.coerce({"max_iter": 5}).max_iter
    5
    """

    Delta_min: float = 1e-6
    nu: float = 1.0
    bfgs_reset: int | None = 100
    H0: float = 1.0
    reset_scaling: bool = True
    max_cond: float = 1e12
    psi_stop_radius: float | None = None
    bundle_size: int = 50
    bouligand_H: str = "identity"
    forecast_switch: bool = True
    n_coord: int = 0
    n_random: int = 2
    n_probe: int | None = None
    seed: int = 0
    subspace_step: bool = True
    convex: bool = False
    fw_rtol: float = 1e-8
    fw_floor: float = 0.0
    cg_maxiter: int | None = None
    cg_rtol: float = 1e-2
    newton_minor: int = 50
    precond: Callable | None = None
    subproblem: str = "projected"

    def __post_init__(self):
        super().__post_init__()
        self._positive("Delta_min", "H0", "max_cond", "nu", "fw_rtol", "cg_rtol")
        self._positive_or_none("psi_stop_radius")
        if self.nu > 1.0:
            raise ValueError(f"options['nu'] must satisfy 0 < nu <= 1, got {self.nu}")
        if self.Delta0 <= self.Delta_min:
            raise ValueError(f"options: need Delta0 > Delta_min, got Delta0={self.Delta0}, Delta_min={self.Delta_min}")
        if self.bfgs_reset is None:
            self._set("bfgs_reset", 0)
        for key in ("max_iter", "bfgs_reset", "n_coord", "n_random", "seed", "bundle_size"):
            self._integer(key, 0, "a nonnegative integer")
        if self.n_probe is not None:
            self._integer("n_probe", 0, "a nonnegative integer")
        self._flags("subspace_step", "reset_scaling", "forecast_switch", "convex")
        if self.bouligand_H not in ("identity", "bfgs"):
            raise ValueError(f"options['bouligand_H'] must be 'identity' or 'bfgs', got {self.bouligand_H!r}")
        self._set("fw_floor", float(self.fw_floor))
        if not (self.fw_floor >= 0.0 and math.isfinite(self.fw_floor)):
            raise ValueError(f"options['fw_floor'] must be a nonnegative number, got {self.fw_floor!r}")
        if self.cg_rtol >= 1.0:
            raise ValueError(f"options['cg_rtol'] must be < 1, got {self.cg_rtol}")
        if self.cg_maxiter is not None:
            self._integer("cg_maxiter", 1, "a positive integer")
        self._integer("newton_minor", 1, "a positive integer")
        if self.subproblem not in ("projected", "active-set"):
            raise ValueError(f"options['subproblem'] must be 'projected' or 'active-set', got {self.subproblem!r}")
        if self.precond is not None and not callable(self.precond):
            raise ValueError("options['precond'] must be callable or None")

    def resolved(self, n: int, weights=None, mass: float = 1.0) -> TrustRegionOptions:
        """The options with the defaults that depend on the simplex filled in.

        R = max(sqrt(n), diameter), Delta_max = max(Delta0, diameter), psi_stop_radius =
        Delta_min and n_probe = n + 5 where they are None (the diameter of {x >= 0,
        <w, x> = mass}: :func:`femot.optim.simplex_diameter`).  ``cg_maxiter`` stays None (it
        depends on the face, min(2 |F| + 10, 500)).

        >>> print(TrustRegionOptions().resolved(9, mass=2.0).R)
        3.0
        """
        return dataclasses.replace(
            self, **self._derived(n, weights, mass),
            psi_stop_radius=self.Delta_min if self.psi_stop_radius is None else self.psi_stop_radius,
            n_probe=n + 5 if self.n_probe is None else self.n_probe)


@dataclasses.dataclass(frozen=True)
class BundleOptions(_SharedOptions):
    """Options of the bundle method, ``minimize_simplex(method="bundle")``.

    Shared with Algorithm 4.1 (same meaning and defaults): ``R`` (only for the reported
    theta_R), ``Delta0``, ``Delta_max``, ``eta1`` (serious step), ``eta2``, ``beta1``, ``beta2``,
    ``tol`` (on the certificate psi), ``max_iter``, ``radius_floor``, ``verbose``.  Own:
    ``metric`` (optional callable (x, v) -> product added to H in the QP: a damping, recomputed
    at serious steps), ``cut_radius`` (the certificate uses the cuts of the points within it;
    None: 1e-3 times the diameter of the simplex), ``max_cuts`` (cuts kept), ``max_n`` (with
    more variables Algorithm 4.1 runs instead, with these shared options: H is dense).

    >>> o = BundleOptions(tol=1e-9, max_cuts=20)
    >>> print(o.tol, o.max_cuts, o.max_n)
    1e-09 20 3000
    """

    metric: Callable | None = None
    cut_radius: float | None = None
    max_cuts: int = 100
    max_n: int = 3000

    def __post_init__(self):
        super().__post_init__()
        if self.metric is not None and not callable(self.metric):
            raise ValueError("options['metric'] must be callable or None")
        self._positive_or_none("cut_radius")
        for key in ("max_cuts", "max_n"):
            self._integer(key, 2, "an integer >= 2")

    def resolved(self, n: int, weights=None, mass: float = 1.0) -> BundleOptions:
        """The options with R and Delta_max filled in as in :meth:`TrustRegionOptions.resolved`.

        ``cut_radius`` stays None (the method takes 1e-3 times the diameter).

        >>> print(round(BundleOptions().resolved(2).Delta_max, 6))
        1.414214
        """
        return dataclasses.replace(self, **self._derived(n, weights, mass))

    def trust_region(self) -> TrustRegionOptions:
        """The shared options as :class:`TrustRegionOptions` (for the fallback above ``max_n``).

        >>> BundleOptions(tol=1e-7).trust_region().tol
        1e-07
        """
        return TrustRegionOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(_SharedOptions)})
