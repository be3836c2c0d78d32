"""Options of :func:`femot.optim.minimize_simplex` (Part III, Section 4.2 defaults)."""
from __future__ import annotations

import math
import numbers

import numpy as np

from femot._validation import check_positive_scalar
from femot.optim.simplex import _diameter

__all__ = ["DEFAULT_OPTIONS", "check_options"]

#: Options of :func:`minimize_simplex` and their defaults (Part III, Sec. 4.2).
DEFAULT_OPTIONS = {
    "R": None,              # radius in theta_R / psi_R; None -> max(sqrt(n), diameter)
    "Delta0": 1.0,          # initial trust-region radius
    "Delta_min": 1e-6,      # below it the Bouligand model is used (Step 7)
    "Delta_max": None,      # cap of the radius; None -> max(Delta0, diameter)
    "eta1": 0.1,
    "eta2": 0.9,
    "beta1": 0.5,
    "beta2": 1.5,
    "nu": 1.0,              # Cauchy decrease fraction, 0 < nu <= 1
    "tol": 1e-5,            # stop when theta_R (or psi_R) <= tol
    "max_iter": 200,
    "bfgs_reset": 100,      # reset H to a scaled identity every so many iterations (0: never)
    "H0": 1.0,              # initial H = H0 * I
    "reset_scaling": True,  # reset to (y'y/s'y) I (last undamped pair) instead of H0 I
    "max_cond": 1e12,       # reset H when its condition number exceeds this (BFGS failure)
    "psi_stop_radius": None,  # stop on psi_R <= tol only if Delta <= this; None -> Delta_min
    "bundle_size": 50,      # cutting-plane candidate from the last evaluations (0: off)
    "bouligand_H": "identity",  # H_k of the Bouligand model: 'identity' (H0 I) or 'bfgs'
    "forecast_switch": True,  # BFGS path: Bouligand model when the planes forecast every Step 8 candidate to fail
    "radius_floor": 1e-14,  # radius collapse -> status 2
    "n_coord": 0,           # Bouligand sampling: coordinate directions
    "n_random": 2,          # Bouligand sampling: random directions
    "n_probe": None,        # Bouligand exploration along the model direction; None -> n + 5
    "seed": 0,              # rng of the random sampling directions
    "subspace_step": True,  # add the face-restricted dogleg as a candidate
    "convex": False,        # f is convex: stop on the Frank-Wolfe gap (a certificate) instead of tol
    "fw_rtol": 1e-8,        # convex stop: fw_gap <= fw_rtol * max(|f|, fw_floor)
    "fw_floor": 0.0,        # floor of |f| in the convex stop (set it when min f may be 0)
    "cg_maxiter": None,     # hessp model: CG iterations per face; None -> min(2 |F| + 10, 500)
    "cg_rtol": 1e-2,        # hessp model: largest CG forcing term (relative residual)
    "newton_minor": 50,     # hessp model: face changes (projected searches) per step
    "bundle_metric": None,  # method='bundle': optional callable (x, v) added to H in the QP (damping)
    "cut_radius": None,     # method='bundle': certificate uses cuts of points within it; None -> 1e-3 diameter
    "cut_bundle_size": 100,  # method='bundle': cuts kept (nearest to x)
    "cut_max_n": 3000,      # method='bundle': larger n falls back to 'trust-region' (dense H)
    "verbose": False,
}


def check_options(options: dict | None, n: int = 2, weights=None, mass: float = 1.0) -> dict:
    """Validate options of :func:`minimize_simplex` without running it.

    Parameters
    ----------
    options : dict or None
        Options as passed to :func:`minimize_simplex` (keys of :data:`DEFAULT_OPTIONS`).
    n : int
        Dimension of the simplex the options are checked for (R and Delta_min depend on it).
    weights : array_like, optional
        Weights of the weighted simplex (default: all ones).
    mass : float
        Its mass.

    Returns
    -------
    dict
        The completed, checked options.

    Raises
    ------
    ValueError
        Naming the first option with an invalid value.
    """
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    return _parse_options(options, n, w, float(mass))


def _parse_options(options, n, w, s):
    opts = dict(DEFAULT_OPTIONS)
    if options is not None:
        if not isinstance(options, dict):
            raise ValueError(f"options must be a dict, got {type(options).__name__}")
        unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
        if unknown:
            raise ValueError(f"options: unknown option(s) {unknown}; valid: {sorted(DEFAULT_OPTIONS)}")
        opts.update(options)
    o = {}
    if opts["R"] is None:
        # Part III, Sec. 4.2: R = sqrt(n) (>= sqrt(2), the diameter of the standard
        # simplex, so theta_R is the closed-form LP value, Remark 4.2).  A weighted
        # or rescaled simplex can be wider; keep the ball inactive there as well.
        o["R"] = max(math.sqrt(n), _diameter(n, w, s))
    else:
        o["R"] = check_positive_scalar(opts["R"], "options['R']")
    for key in ("Delta0", "Delta_min", "beta2", "radius_floor", "H0", "max_cond"):
        o[key] = check_positive_scalar(opts[key], f"options['{key}']")
    o["tol"] = float(opts["tol"])
    if not (o["tol"] >= 0.0 and math.isfinite(o["tol"])):
        raise ValueError(f"options['tol'] must be a nonnegative number, got {opts['tol']!r}")
    for key in ("eta1", "eta2", "beta1", "nu"):
        o[key] = check_positive_scalar(opts[key], f"options['{key}']")
    if not o["eta1"] < o["eta2"] < 1.0:
        raise ValueError(f"options: need 0 < eta1 < eta2 < 1, got eta1={o['eta1']}, eta2={o['eta2']}")
    if not o["beta1"] < 1.0 < o["beta2"]:
        raise ValueError(f"options: need 0 < beta1 < 1 < beta2, got beta1={o['beta1']}, beta2={o['beta2']}")
    if o["nu"] > 1.0:
        raise ValueError(f"options['nu'] must satisfy 0 < nu <= 1, got {o['nu']}")
    if o["Delta0"] <= o["Delta_min"]:
        raise ValueError(f"options: need Delta0 > Delta_min, got Delta0={o['Delta0']}, Delta_min={o['Delta_min']}")
    psr = opts["psi_stop_radius"]
    o["psi_stop_radius"] = o["Delta_min"] if psr is None else check_positive_scalar(psr, "options['psi_stop_radius']")
    dmax = opts["Delta_max"]
    o["Delta_max"] = (max(o["Delta0"], _diameter(n, w, s)) if dmax is None
                      else check_positive_scalar(dmax, "options['Delta_max']"))
    if opts["n_probe"] is None:
        opts["n_probe"] = n + 5
    for key in ("max_iter", "bfgs_reset", "n_coord", "n_random", "seed", "bundle_size", "n_probe"):
        v = opts[key]
        if v is None and key == "bfgs_reset":
            v = 0
        if not isinstance(v, numbers.Integral) or v < 0:
            raise ValueError(f"options['{key}'] must be a nonnegative integer, got {v!r}")
        o[key] = int(v)
    o["subspace_step"] = bool(opts["subspace_step"])
    o["reset_scaling"] = bool(opts["reset_scaling"])
    o["forecast_switch"] = bool(opts["forecast_switch"])
    if opts["bouligand_H"] not in ("identity", "bfgs"):
        raise ValueError(f"options['bouligand_H'] must be 'identity' or 'bfgs', got {opts['bouligand_H']!r}")
    o["bouligand_H"] = opts["bouligand_H"]
    o["verbose"] = bool(opts["verbose"])
    o["convex"] = bool(opts["convex"])
    o["fw_rtol"] = check_positive_scalar(opts["fw_rtol"], "options['fw_rtol']")
    o["fw_floor"] = float(opts["fw_floor"])
    if not (o["fw_floor"] >= 0.0 and math.isfinite(o["fw_floor"])):
        raise ValueError(f"options['fw_floor'] must be a nonnegative number, got {opts['fw_floor']!r}")
    if opts["bundle_metric"] is not None and not callable(opts["bundle_metric"]):
        raise ValueError("options['bundle_metric'] must be callable or None")
    o["bundle_metric"] = opts["bundle_metric"]
    o["cut_radius"] = (None if opts["cut_radius"] is None
                       else check_positive_scalar(opts["cut_radius"], "options['cut_radius']"))
    for key in ("cut_bundle_size", "cut_max_n"):
        v = opts[key]
        if not isinstance(v, numbers.Integral) or v < 2:
            raise ValueError(f"options['{key}'] must be an integer >= 2, got {v!r}")
        o[key] = int(v)
    o["cg_rtol"] = check_positive_scalar(opts["cg_rtol"], "options['cg_rtol']")
    if o["cg_rtol"] >= 1.0:
        raise ValueError(f"options['cg_rtol'] must be < 1, got {o['cg_rtol']}")
    for key in ("cg_maxiter", "newton_minor"):
        v = opts[key]
        if v is None and key == "cg_maxiter":
            o[key] = None
            continue
        if not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"options['{key}'] must be a positive integer, got {v!r}")
        o[key] = int(v)
    return o

