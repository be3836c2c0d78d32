"""Study problem ``control-exact``: (OCP^delta_gamma) in 2D against the exact limit (OCP) on the same mesh.

The prior ``mu2^d`` is a density: the uniform density on a box (inside the domain, at distance >= max delta
from the boundary), carried by the lumped vertex masses of its P1 interpolant on each mesh.  The
regularized problem (:class:`femot.problems.ControlProblem`) sees those vertex masses; the exact
reference (:func:`femot.problems.control_exact.solve_control_exact`) sees their P1 density, with the same
admissible control vertices, so the errors measure the regularization and smoothing only.  Metrics:

* ``objective_gap`` = J(u_gamma^delta) - J(u*) >= 0, J the exact (OCP) objective (semi-discrete W_2^2);
* ``control_w2``, ``control_w1`` = W_p(u_gamma^delta, u*) between the controls;
* ``value_error`` = |f_gamma^delta(u_gamma^delta) - J(u*)| (optimal values);
* ``fun_bias`` = |f_gamma^delta(u_gamma^delta) - J(u_gamma^delta)|: how far the regularized objective
  ``fun`` is from the exact objective of the same control (the gap the control results report);
* ``state_error`` = |y_gamma^delta - y*|_{L2}.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from femot.fem import PoissonOperator, boundary_distance, nodal_density, quadrature
from femot.fem.meshes import admissible_vertices
from femot.problems import ControlProblem
from femot.problems.control import FORMULATIONS
from femot.problems.control_exact import solve_control_exact
from femot.studies.control_study import ControlStudy
from femot.studies.heartbeat import iteration_tick
from femot.studies.metrics import wasserstein_discrete
from femot.studies.study_problem import ChainContext, StudyProblem
from femot.studies.toml_checks import ConfigError, _check_keys, _interval, _num, _tr_options

__all__ = ["ExactControlStudy"]


@dataclass
class ExactReference:
    """Per mesh: the state equation, desired state, prior vertex masses and the exact 2D (OCP)."""

    op: PoissonOperator
    y_d: Any
    mu2: np.ndarray
    exact: Any
    ref_time: float


class ExactControlStudy(StudyProblem):
    """(OCP^delta_gamma) of Part II by the trust-region method vs the exact 2D (OCP) (semi-discrete W_2)."""

    name: str = "control-exact"
    all_metrics = ("objective_gap", "control_w2", "control_w1", "value_error", "fun_bias", "state_error")
    metrics = all_metrics
    primary = "objective_gap"
    total_reference = False
    error_kinds = ()
    notes = ("Reference: the exact 2D (OCP) on the level's mesh (Newton's method on the Laguerre weights, "
             "semi-discrete W_2^2 to the P1 density of the prior's lumped masses, certified by its Frank-Wolfe "
             "gap). objective_gap and fun_bias use the exact objective of the regularized control that the "
             "control results report (exact_fun); fun_bias is the gap |fun - exact_fun|.")
    KEYS = {"nu", "rho", "y_d", "mu2", "tr", "transport", "rtol", "fw_rtol", "tol", "max_iter"}
    #: the desired state is parsed and built as in the ``control`` study
    _control = ControlStudy()

    def validate(self, sec, *, where, gammas, deltas, d, dim, meshes, base_dir):
        """Check the ``[control-exact]`` table (2D; ``mu2 = {type = "uniform", box = [[a, b], [c, d]]}``)."""
        _check_keys(sec, self.KEYS, where)
        if dim != 2:
            raise ConfigError(f"mesh: the control-exact study needs a 2D mesh, got dimension {dim}")
        if "nu" not in sec:
            raise ConfigError(f"{where}.nu: missing (weight of the Wasserstein term)")
        nu = _num(sec, "nu", where, positive=True)
        dmax = max(deltas)
        rho = _num(sec, "rho", where, default=dmax, positive=True)
        if rho < dmax * (1 - 1e-12):
            raise ConfigError(f"{where}.rho: {rho:g} must be >= max delta = {dmax:g} (Part II (3.1))")
        transport = sec.get("transport", "value")
        if transport not in FORMULATIONS:
            raise ConfigError(f"{where}.transport: must be one of {', '.join(FORMULATIONS)}, got {transport!r}")
        mu2 = sec.get("mu2")
        if not isinstance(mu2, dict) or mu2.get("type") != "uniform":
            raise ConfigError(f'{where}.mu2: must be {{type = "uniform", box = [[a, b], [c, d]]}}')
        _check_keys(mu2, {"type", "box", "mass"}, f"{where}.mu2")
        box = mu2.get("box")
        if not isinstance(box, list) or len(box) != 2:
            raise ConfigError(f"{where}.mu2.box: must be two intervals [[a, b], [c, d]]")
        box = [_interval(iv, f"{where}.mu2.box[{i}]") for i, iv in enumerate(box)]
        mass = _num(mu2, "mass", f"{where}.mu2", default=1.0, positive=True)
        corners = np.array(np.meshgrid(*box)).reshape(2, -1).T
        for spec in meshes:
            mesh = spec.load()
            if np.any(boundary_distance(mesh, corners, signed=True) < dmax * (1 - 1e-12)):
                raise ConfigError(f"{where}.mu2.box: must lie in the mesh at distance >= max delta = {dmax:.4g} "
                                  f"from the boundary (T^delta), mesh {spec.label()}")
            inside = self._box_vertices(mesh, box)
            if not inside.any():
                raise ConfigError(f"{where}.mu2.box: holds no vertex of mesh {spec.label()}")
        return {"nu": nu, "rho": rho, "transport": transport, "mu2": {"box": box, "mass": mass},
                "y_d": self._control._parse_yd(sec.get("y_d"), f"{where}.y_d", dim, base_dir),
                "tr": _tr_options(sec, where),
                "rtol": _num(sec, "rtol", where, default=1e-5, positive=True),
                "fw_rtol": _num(sec, "fw_rtol", where, default=1e-8, positive=True),
                "tol": _num(sec, "tol", where, default=1e-10, positive=True),
                "max_iter": _num(sec, "max_iter", where, default=200, integer=True, lo=1)}

    @staticmethod
    def _box_vertices(mesh, box):
        X = mesh.p.T
        b = np.asarray(box)
        return np.all((X >= b[:, 0] - 1e-12) & (X <= b[:, 1] + 1e-12), axis=1)

    def setup(self, params, seed):
        """The chain's context (the instance is deterministic; the prior is built per mesh)."""
        return ChainContext(params=params)

    def _exact_reference(self, ctx: ChainContext, spec) -> ExactReference:
        p = ctx.params

        def build(mesh):
            op = PoissonOperator(mesh)
            y_d = self._control._y_d(op, p["y_d"])
            mu2 = np.where(self._box_vertices(mesh, p["mu2"]["box"]), quadrature(mesh).weights, 0.0)
            mu2 *= p["mu2"]["mass"] / mu2.sum()
            adm = admissible_vertices(mesh, p["rho"])
            t0 = time.perf_counter()
            ref = solve_control_exact(op, y_d, p["nu"], density=nodal_density(mesh, mu2), control_vertices=adm,
                                      tol=1e-12)
            return ExactReference(op=op, y_d=y_d, mu2=mu2, exact=ref, ref_time=time.perf_counter() - t0)

        return ctx.per_mesh(spec, build)

    def solve(self, ctx: ChainContext, level, warm):
        """Solve the regularized problem on the level's mesh and compare with the exact (OCP)."""
        p = ctx.params
        mc = self._exact_reference(ctx, level.mesh)
        op, y_d, ref = mc.op, mc.y_d, mc.exact
        P = ControlProblem(op, y_d, mc.mu2, p["nu"], level.gamma, level.delta, rho=p["rho"],
                           control_vertices=ref.control_vertices,
                           qrot_options={"tol": p["tol"], "max_iter": p["max_iter"]},
                           transport=p["transport"])
        x0 = None
        if warm is not None and warm["control_points"].shape == P.x1.shape:
            x0 = np.asarray(warm["x"], dtype=float)
        t0 = time.perf_counter()
        r = P.solve(x0, options=dict(p["tr"]) or None, rtol=p["rtol"], fw_rtol=p["fw_rtol"], callback=iteration_tick)
        t_solve = time.perf_counter() - t0
        xr, ur = op.vertices[ref.control_vertices], ref.x[ref.control_vertices]
        e = r.y - ref.y
        metrics = {
            "objective_gap": float(r.exact_fun - ref.fun),
            "control_w2": wasserstein_discrete(P.x1, r.x, xr, ur, 2.0),
            "control_w1": wasserstein_discrete(P.x1, r.x, xr, ur, 1.0),
            "value_error": abs(float(r.fun) - float(ref.fun)),
            "fun_bias": abs(float(r.fun) - float(r.exact_fun)),
            "state_error": math.sqrt(max(float(e @ (op.M @ e)), 0.0)),
        }
        ok = bool(r.success and ref.success and np.isfinite(r.exact_fun))
        info = {
            "success": ok, "status": int(r.status),
            "message": r.message if ref.success else f"{r.message} Reference: {ref.message}",
            "nit": int(r.nit), "iterations": int(r.nit), "formulation": P.formulation,
            "fw_gap": None if r.fw_gap is None else float(r.fw_gap),
            "n_nodes": int(op.nvertices), "n_controls": int(P.n),
            "fun": float(r.fun), "exact_fun": float(r.exact_fun), "exact_method": r.exact_method,
            "signed_fun_bias": float(r.fun - r.exact_fun),
            "reference_fun": float(ref.fun), "reference_gap": float(ref.gap),
            "reference_newton_steps": int(ref.nit), "reference_status": int(ref.status),
            "solve_time_s": round(t_solve, 4), "reference_time_s": round(mc.ref_time, 4),
            "h": float(level.h), "certificate": "fw_gap" if P.formulation == "value" else "relative_stationarity",
        }
        state = {"x": np.asarray(r.x), "control_points": P.x1}
        return metrics, info, state

