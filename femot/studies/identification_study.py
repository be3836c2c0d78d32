"""Study kind ``identification``: transportation identification (Part III Section 4,
(RTI_gamma^eps)) on random Hitchcock instances (Part III Section 4.2) against the known solution."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from femot.core import exact_ot
from femot.core.instances import hitchcock_instance
from femot.problems import TransportIdentification, band_mask
from femot.studies.heartbeat import iteration_tick
from femot.studies.metrics import plan_distance, plan_points, wasserstein_discrete
from femot.studies.study_problem import ChainContext, StudyProblem
from femot.studies.toml_checks import ConfigError, _check_keys, _num, _tr_options

__all__ = ["IdentificationStudy"]


@dataclass(kw_only=True)
class IdentificationChain(ChainContext):
    """The chain's instance: cost, marginals, the exact plan and the points i / (n - 1) for W1."""

    c: np.ndarray
    mu1: np.ndarray
    mu2: np.ndarray
    plan: sp.csr_matrix
    x: np.ndarray


class IdentificationStudy(StudyProblem):
    """Transportation identification (Part III Section 4, (RTI_gamma^eps)) vs the known solution.

    Instances as in Part III Section 4.2 (``femot.core.instances.hitchcock_instance``,
    seeded): cost c_ij = |i - j|^power on n points, random sparse marginals mu1*, mu2; the
    observations are the exact optimal plan pi* (LP) and mu1*, so with full observation
    the unique solution of the unregularized problem is (mu1*, pi*) with J = 0. Each level
    solves (RTI_gamma^eps) with eps = eps_factor * gamma (Part III: eps = gamma). The
    smoothing parameter delta of the schedule is not used (Part III has no smoothing).
    Metrics: ``mu1_err_max``, ``pi_err_max`` (max norms, as Part III Tables 4.1, 4.2),
    ``mu1_w1`` and ``plan_w1`` (W1 with the points i / (n - 1) of [0, 1]) and ``objective``
    (J at the computed solution; its exact minimum is 0).
    """

    name = "identification"
    uses_mesh = False
    uses_delta = False
    space_dim = 1
    mesh_note = "a Hitchcock problem on n points, Part III Section 4"
    all_metrics = ("mu1_w1", "plan_w1", "mu1_err_max", "pi_err_max", "objective")
    metrics = all_metrics
    primary = "mu1_w1"
    notes = ("The schedule's delta is not used: Part III's identification problem has no smoothing. "
             "W1 distances place the n points at i / (n - 1) in [0, 1].")
    KEYS = {"n", "occupancy", "power", "lam", "eps_factor", "bandwidth", "observe_marginal", "tol", "tr"}

    def validate(self, sec, *, where, gammas, deltas, d, dim, meshes, base_dir):
        """Check the ``[identification]`` table: instance size, observation, solver settings."""
        _check_keys(sec, self.KEYS, where)
        n = _num(sec, "n", where, default=25, integer=True, lo=2, hi=400)
        occ = _num(sec, "occupancy", where, default=0.5, positive=True, hi=1.0)
        power = _num(sec, "power", where, default=2.0, positive=True)
        lam = _num(sec, "lam", where, default=1.0, nonneg=True)
        epsf = _num(sec, "eps_factor", where, default=1.0, positive=True)
        bw = sec.get("bandwidth")
        if bw is not None and (not isinstance(bw, int) or isinstance(bw, bool) or bw < 0):
            raise ConfigError(f"{where}.bandwidth: must be a nonnegative integer (observed |i - j| <= bandwidth)")
        obs = sec.get("observe_marginal", True)
        if not isinstance(obs, bool):
            raise ConfigError(f"{where}.observe_marginal: must be true or false")
        tol = _num(sec, "tol", where, default=1e-10, positive=True)
        return {"n": n, "occupancy": occ, "power": power, "lam": lam, "eps_factor": epsf, "bandwidth": bw,
                "observe_marginal": obs, "tol": tol, "tr": _tr_options(sec, where)}

    def setup(self, params, seed):
        """Generate the chain's instance (cost, marginals, exact plan)."""
        c, mu1, mu2 = hitchcock_instance(params["n"], seed, params["occupancy"], params["power"])
        ex = exact_ot(c, mu1, mu2)
        if not ex.success:
            raise RuntimeError(f"exact transport of the instance failed: {ex.message}")
        return IdentificationChain(params=params, c=c, mu1=mu1, mu2=mu2, plan=sp.csr_matrix(ex.plan),
                                   x=np.linspace(0.0, 1.0, params["n"]))

    def solve(self, ctx: IdentificationChain, level, warm):
        """Solve the identification problem at the level's gamma and compare with the truth."""
        p = ctx.params
        n = p["n"]
        D = None if p["bandwidth"] is None else band_mask(n, n, p["bandwidth"])
        # Not observing the marginal = no marginal term (an empty D1 mask is rejected).
        lam = p["lam"] if p["observe_marginal"] else 0.0
        prob = TransportIdentification(ctx.c, ctx.mu2, ctx.plan, ctx.mu1, D=D, D1=None, lam=lam,
                                       gamma=level.gamma, eps=p["eps_factor"] * level.gamma,
                                       qrot_options={"tol": p["tol"]})
        x0 = None
        if warm is not None:
            x0 = np.maximum(np.asarray(warm["x"], dtype=float), 0.0)
            x0 *= prob.mass / x0.sum()
            prob.lower.warm = (np.asarray(warm["alpha"]), np.asarray(warm["beta"]))
        t0 = time.perf_counter()
        r = prob.solve(x0, options=dict(p["tr"]) or None, callback=iteration_tick)
        t_solve = time.perf_counter() - t0
        x = ctx.x
        diff = (sp.csr_matrix(r.plan) - ctx.plan).tocsr()
        metrics = {
            "mu1_w1": wasserstein_discrete(x, r.mu1, x, ctx.mu1, 1.0),
            "plan_w1": plan_distance(*plan_points(r.plan, x, x), *plan_points(ctx.plan, x, x)),
            "mu1_err_max": float(np.max(np.abs(r.mu1 - ctx.mu1))),
            "pi_err_max": float(np.max(np.abs(diff.data), initial=0.0)),
            "objective": float(r.J),
        }
        info = {"success": bool(r.success), "status": int(r.status), "message": str(r.message), "nit": int(r.nit),
                "stationarity": float(r.stationarity), "n_nodes": n, "eps": float(r.eps),
                "lower_solves": int(r.lower_requests), "solve_time_s": round(t_solve, 4)}
        state = {"x": np.asarray(r.mu1), "alpha": np.asarray(r.alpha), "beta": np.asarray(r.beta)}
        return metrics, info, state

