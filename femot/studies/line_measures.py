"""Measures on the line given in a study's TOML: Gaussian mixtures, uniform densities, atoms,
random atoms; their parsing (errors name the field) and the femot measures they stand for."""
from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr
from skfem import MeshLine

from femot.fem import Density, DiracSum
from femot.studies.toml_checks import ConfigError, _check_keys, _interval, _num, _num_list

__all__ = ["build_measure"]

_MEASURE_KEYS = {
    "gaussian_mixture": {"type", "components", "mass"},
    "uniform": {"type", "interval", "mass"},
    "diracs": {"type", "points", "weights", "mass"},
    "random_diracs": {"type", "n", "interval", "mass"},
}


def _parse_parts(value, where, domain) -> list:
    """A measure on the line: one table or a list of tables (a sum of parts)."""
    parts = value if isinstance(value, list) else [value]
    if not parts:
        raise ConfigError(f"{where}: must be a table or a nonempty list of tables")
    out = []
    for i, p in enumerate(parts):
        w = f"{where}[{i}]" if isinstance(value, list) else where
        if not isinstance(p, dict):
            raise ConfigError(f"{w}: must be a table like {{type = \"diracs\", points = [...]}}")
        t = p.get("type")
        if t not in _MEASURE_KEYS:
            raise ConfigError(f"{w}.type: unknown measure type {t!r}; choose one of {', '.join(_MEASURE_KEYS)}")
        _check_keys(p, _MEASURE_KEYS[t], w)
        mass = _num(p, "mass", w, default=1.0, positive=True)
        q = {"type": t, "mass": mass}
        if t == "gaussian_mixture":
            comps = p.get("components")
            if not isinstance(comps, list) or not comps:
                raise ConfigError(f"{w}.components: must be a nonempty list of [mean, std, weight]")
            cs = []
            for j, c in enumerate(comps):
                if (not isinstance(c, list) or len(c) != 3 or
                        not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in c) or
                        c[1] <= 0 or c[2] <= 0):
                    raise ConfigError(f"{w}.components[{j}]: must be [mean, std > 0, weight > 0], got {c!r}")
                cs.append([float(v) for v in c])
            q["components"] = cs
        elif t == "uniform":
            q["interval"] = _interval(p.get("interval"), f"{w}.interval", domain)
        elif t == "diracs":
            if "points" not in p:
                raise ConfigError(f"{w}.points: missing")
            pts = _num_list(p, "points", w, positive=False)
            for j, x in enumerate(pts):
                if not domain[0] <= x <= domain[1]:
                    raise ConfigError(f"{w}.points[{j}]: {x:g} lies outside the domain "
                                      f"[{domain[0]:g}, {domain[1]:g}]")
            if "weights" in p:
                wts = _num_list(p, "weights", w, positive=False)
                if len(wts) != len(pts):
                    raise ConfigError(f"{w}.weights: has {len(wts)} entries, {w}.points has {len(pts)}")
                if any(v < 0 for v in wts) or sum(wts) <= 0:
                    raise ConfigError(f"{w}.weights: must be nonnegative with positive sum")
                if "mass" in p:
                    raise ConfigError(f"{w}.mass: the weights are the masses; give weights or mass")
                q["mass"] = float(sum(wts))
            else:
                wts = [mass / len(pts)] * len(pts)
            q["points"], q["weights"] = pts, wts
        else:
            q["n"] = _num(p, "n", w, integer=True, lo=1)
            q["interval"] = _interval(p.get("interval", list(domain)), f"{w}.interval", domain)
        out.append(q)
    return out


def _mass_of(parts) -> float:
    return float(sum(p["mass"] for p in parts))


def _support_of(parts) -> tuple:
    lo, hi = math.inf, -math.inf
    for p in parts:
        if p["type"] == "gaussian_mixture":
            return (-math.inf, math.inf)
        if p["type"] == "diracs":
            pts = [x for x, w in zip(p["points"], p["weights"]) if w > 0]
            lo, hi = min(lo, min(pts)), max(hi, max(pts))
        else:
            lo, hi = min(lo, p["interval"][0]), max(hi, p["interval"][1])
    return lo, hi


def _gaussian_mixture(components, a, b):
    """pdf and cdf of a Gaussian mixture [(mean, std, weight), ...] restricted to [a, b], mass 1."""
    comps = np.asarray(components, dtype=float)
    z = sum(w * (ndtr((b - m) / s) - ndtr((a - m) / s)) for m, s, w in comps)

    def pdf(x):
        x = np.asarray(x, dtype=float)[:, 0]
        val = sum(w * np.exp(-0.5 * ((x - m) / s) ** 2) / (s * np.sqrt(2 * np.pi)) for m, s, w in comps)
        return np.where((x >= a) & (x <= b), val / z, 0.0)

    def cdf(x):
        xc = np.clip(np.asarray(x, dtype=float), a, b)
        return sum(w * (ndtr((xc - m) / s) - ndtr((a - m) / s)) for m, s, w in comps) / z

    return pdf, cdf


def _random_diracs(n, interval, mass, rng):
    x = np.sort(rng.uniform(interval[0], interval[1], n))
    w = rng.dirichlet(np.ones(n)) * mass
    return x, w


def build_measure(parts, domain, seed: int, salt: int):
    """The femot measure of a parsed spec; random parts draw from default_rng([seed, salt, i]).

    Parameters
    ----------
    parts : list of dict
        The parsed parts of the measure (types ``gaussian_mixture``, ``uniform``, ``diracs``,
        ``random_diracs``); their sum is returned.
    domain : tuple of float
        The interval ``(a, b)`` on which densities are discretized.
    seed : int
        The chain's seed.
    salt : int
        Distinguishes the measures of one chain (e.g. 1 for mu1, 2 for mu2).

    Returns
    -------
    Density, DiracSum or their sum
        The measure on the line.

    Examples
    --------
    >>> parts = [{"type": "diracs", "points": [0.25, 0.75], "weights": [0.5, 0.5], "mass": 1.0}]
    >>> mu = build_measure(parts, (0.0, 1.0), seed=0, salt=1)
    >>> print(f"{mu.mass():.2f}")
    1.00
    """
    a, b = domain
    base = None
    out = []
    for i, p in enumerate(parts):
        t = p["type"]
        if t in ("gaussian_mixture", "uniform") and base is None:
            base = MeshLine(np.linspace(a, b, 401))
        if t == "gaussian_mixture":
            pdf, cdf = _gaussian_mixture(p["components"], a, b)
            mu = p["mass"] * Density(pdf, base, mass=1.0, cdf=cdf)
        elif t == "uniform":
            lo, hi = p["interval"]
            L = hi - lo
            f = lambda x, lo=lo, hi=hi, L=L: np.where((x[:, 0] >= lo) & (x[:, 0] <= hi), 1.0 / L, 0.0)
            F = lambda x, lo=lo, L=L: np.clip((np.asarray(x) - lo) / L, 0.0, 1.0)
            # The mesh must resolve [lo, hi] exactly for the support to be a union of cells.
            knots = np.unique(np.concatenate([np.linspace(a, b, 401), [lo, hi]]))
            mu = p["mass"] * Density(f, MeshLine(knots), mass=1.0, cdf=F)
        elif t == "diracs":
            mu = DiracSum(p["points"], p["weights"])
        else:
            x, w = _random_diracs(p["n"], p["interval"], p["mass"], np.random.default_rng([seed, salt, i]))
            mu = DiracSum(x, w)
        out.append(mu)
    total = out[0]
    for mu in out[1:]:
        total = total + mu
    return total

