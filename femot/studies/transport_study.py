"""Study kind ``transport``: the smoothed, regularized transport S_gamma(T^delta mu1, T^delta mu2)
(Part II (BK^delta_gamma), eq. (2.6)) on an interval against the exact W_beta^beta(mu1, mu2)
(quantile functions) and the exact plan (monotone rearrangement)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from femot.core import monotone_coupling_1d
from femot.fem import interpolate_nodal, quadrature, solve_lower_level, wasserstein_1d
from femot.studies.line_measures import _mass_of, _parse_parts, _support_of, build_measure
from femot.studies.metrics import plan_distance, plan_points, wasserstein_to_measure
from femot.studies.study_problem import ChainContext, StudyProblem
from femot.studies.toml_checks import ConfigError, _num

__all__ = ["TransportStudy"]


@dataclass(kw_only=True)
class TransportChain(ChainContext):
    """The chain's measures and their exact transport cost W_beta^beta."""

    mu1: Any
    mu2: Any
    exact: float


class TransportStudy(StudyProblem):
    """S_gamma(T^delta mu1, T^delta mu2) on an interval vs the exact transport.

    Metrics (both measures normalized to probability measures where masses differ):

    * ``cost_error`` = |sum w_i w_j c_ij pi_ij - W_beta^beta(mu1, mu2)|;
    * ``objective_error`` = the same with the regularized objective (+ gamma/2 |pi|^2);
    * ``marginal_w1``, ``marginal_w2`` = max_k W_p(P_k # pi, mu_k) (W_p of the plan's
      marginals to the unsmoothed marginals);
    * ``plan_w1`` = W1 on Omega x Omega (Euclidean) between pi and the exact plan (the
      monotone rearrangement of the marginals projected to the nodes), exact OT.
    """

    name = "transport"
    all_metrics = ("cost_error", "objective_error", "marginal_w1", "marginal_w2", "plan_w1")
    metrics = all_metrics
    primary = "cost_error"
    notes = ("The exact plan is the monotone rearrangement of mu1, mu2 projected to the level's nodes "
             "(barycentric splitting of atoms, nodal values of densities), so plan_w1 contains an O(h) "
             "projection error; with mesh.nodes_per_delta the mesh size is a fixed fraction of delta.")

    KEYS = {"mu1", "mu2", "beta", "eps", "enlarge", "rho", "tol", "max_iter"}

    def validate(self, sec, *, where, gammas, deltas, d, dim, meshes, base_dir):
        """Check the ``[transport]`` table: the measures, beta, eps, rho, solver settings."""
        domain = self._interval(sec, where, dim, meshes, "1D meshes")
        for k in ("mu1", "mu2"):
            if k not in sec:
                raise ConfigError(f"{where}.{k}: missing (a measure, e.g. {{type = \"diracs\", points = [0.3]}})")
        mu1 = _parse_parts(sec["mu1"], f"{where}.mu1", domain)
        mu2 = _parse_parts(sec["mu2"], f"{where}.mu2", domain)
        m1, m2 = _mass_of(mu1), _mass_of(mu2)
        eps = _num(sec, "eps", where, default=0.0, nonneg=True)
        if eps == 0 and abs(m1 - m2) > 1e-9 * max(m1, m2):
            raise ConfigError(f"{where}.mu2: has mass {m2:.12g}, {where}.mu1 has {m1:.12g}; equal masses are "
                              f"needed (eps = 0)")
        beta = _num(sec, "beta", where, default=2.0, lo=1.0)
        enlarge = sec.get("enlarge", True)
        if not isinstance(enlarge, bool):
            raise ConfigError(f"{where}.enlarge: must be true or false")
        dmax = max(deltas)
        rho = _num(sec, "rho", where, default=dmax, positive=True)
        if rho < dmax * (1 - 1e-12):
            raise ConfigError(f"{where}.rho: {rho:g} must be >= max delta = {dmax:g} (Part II (3.1))")
        if not enlarge:
            for k, parts in (("mu1", mu1), ("mu2", mu2)):
                lo, hi = _support_of(parts)
                if lo < domain[0] + dmax or hi > domain[1] - dmax:
                    raise ConfigError(
                        f"{where}.{k}: the support comes closer than max delta = {dmax:.4g} to the boundary; "
                        f"T^delta needs dist(supp mu, boundary) >= delta (Part II (3.1)); set "
                        f"{where}.enlarge = true (Part II Lemma 2.4)")
        tol = _num(sec, "tol", where, default=1e-10, positive=True)
        max_iter = _num(sec, "max_iter", where, default=200, integer=True, lo=1)
        return {"mu1": mu1, "mu2": mu2, "beta": beta, "eps": eps, "enlarge": enlarge, "rho": rho, "tol": tol,
                "max_iter": max_iter, "domain": list(domain)}

    def setup(self, params, seed):
        """Draw the chain's measures mu1, mu2 and compute the exact transport cost W_beta^beta."""
        dom = tuple(params["domain"])
        mu1 = build_measure(params["mu1"], dom, seed, 1)
        mu2 = build_measure(params["mu2"], dom, seed, 2)
        return TransportChain(params=params, mu1=mu1, mu2=mu2, exact=wasserstein_1d(mu1, mu2, params["beta"]))

    @staticmethod
    def _quadrature(ctx: TransportChain, spec):
        p = ctx.params

        def build(mesh):
            q = quadrature(mesh)
            return q.enlarged(p["rho"]) if p["enlarge"] else q

        return ctx.per_mesh(spec, build)

    def solve(self, ctx: TransportChain, level, warm):
        """Solve the smoothed regularized transport on the level's mesh and measure its errors."""
        p = ctx.params
        q = self._quadrature(ctx, level.mesh)
        x0 = None
        if warm is not None:
            x0 = (interpolate_nodal(warm["x1"], warm["alpha"], q.nodes),
                  interpolate_nodal(warm["x2"], warm["beta"], q.nodes))
        t0 = time.perf_counter()
        res = solve_lower_level(ctx.mu1, ctx.mu2, q, q, level.gamma, level.delta, p["eps"], cost=p["beta"],
                                x0=x0, tol=p["tol"], max_iter=p["max_iter"])
        t_solve = time.perf_counter() - t0
        W = ctx.exact
        w = q.weights
        r1, r2 = res.marginals()
        mw = {}
        for k, (mass, mu) in enumerate(((w * r1, ctx.mu1), (w * r2, ctx.mu2)), start=1):
            for pp in (1, 2):
                mw[(k, pp)] = wasserstein_to_measure(q.nodes, mass, mu, pp)
        # The exact plan on the nodes: monotone rearrangement of the projected marginals.
        a, b = ctx.mu1.masses(q), ctx.mu2.masses(q)
        x = q.nodes[:, 0]
        exact_plan = monotone_coupling_1d(x, x, a, b)
        plan_err = plan_distance(*plan_points(res.plan, q.nodes, q.nodes, w, w),
                                 *plan_points(exact_plan, q.nodes, q.nodes))
        metrics = {
            "cost_error": abs(res.transport_cost - W),
            "objective_error": abs(res.objective - W),
            "marginal_w1": max(mw[(1, 1)], mw[(2, 1)]),
            "marginal_w2": max(mw[(1, 2)], mw[(2, 2)]),
            "plan_w1": plan_err,
        }
        info = {
            "success": bool(res.success), "status": int(res.status), "message": res.message, "nit": int(res.nit),
            "n_nodes": int(q.n), "plan_nnz": int(res.plan.nnz), "marginal_residual": float(res.marginal_error),
            "transport_cost": float(res.transport_cost), "exact": float(W),
            "signed_cost_error": float(res.transport_cost - W),
            "marginal1_w1": mw[(1, 1)], "marginal2_w1": mw[(2, 1)],
            "marginal1_w2": mw[(1, 2)], "marginal2_w2": mw[(2, 2)],
            "solve_time_s": round(t_solve, 4),
        }
        state = {"x1": q.nodes, "x2": q.nodes, "alpha": np.asarray(res.alpha), "beta": np.asarray(res.beta)}
        return metrics, info, state
