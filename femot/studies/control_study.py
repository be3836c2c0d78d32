"""Study kind ``control``: (OCP^delta_gamma) of Part II Section 3.2.2 solved by the nonsmooth
trust-region method (Part III Algorithm 4.1) against the exact unregularized (OCP) on the same
mesh (the convex QP of :func:`femot.problems.solve_control_reference`)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator

from femot.fem import DiracSum, PoissonOperator, boundary_distance, load_mesh, locate, quadrature
from femot.fem.meshes import mesh_dim
from femot.fem.smoothing import RESOLUTION_RATIO, mesh_spacing
from femot.problems import ControlProblem, control_objective, solve_control_reference
from femot.problems.control import FORMULATIONS, estimate_size
from femot.problems.control_reference import pick_qp_solver
from femot.studies.heartbeat import iteration_tick
from femot.studies.mesh_spec import _mesh_entry
from femot.studies.metrics import plan_distance, plan_points, wasserstein_discrete
from femot.studies.study_problem import ChainContext, StudyProblem, carry_nodal, nodal_state
from femot.studies.toml_checks import (
    ConfigError,
    _check_keys,
    _interval,
    _num,
    _num_list,
    _table_type,
    _tr_options,
)

__all__ = ["ControlStudy"]


@dataclass(kw_only=True)
class ControlChain(ChainContext):
    """The chain's prior mu2^d (points and masses) and the transport mesh (loaded once)."""

    mu2_points: np.ndarray
    mu2: np.ndarray
    transport_mesh: Any = None


@dataclass
class ControlReference:
    """Per mesh: the state equation, the desired state and the exact (OCP) with its solve time."""

    op: PoissonOperator
    y_d: Any
    ref: Any
    ref_time: float


def _sample_interpolant(points, values):
    """y_d(x), x of shape (dim, ...), from scattered samples: piecewise linear (1D: between sorted
    points, constant beyond; 2D: on the Delaunay triangulation, nearest sample outside its hull)."""
    if points.shape[1] == 1:
        order = np.argsort(points[:, 0])
        xs, vs = points[order, 0], values[order]
        return lambda x: np.interp(x[0], xs, vs)
    lin, near = LinearNDInterpolator(points, values), NearestNDInterpolator(points, values)

    def y_d(x):
        pts = np.moveaxis(np.asarray(x, dtype=float), 0, -1)
        out = lin(pts)
        miss = np.isnan(out)
        if miss.any():
            out[miss] = near(pts[miss])
        return out

    return y_d


class ControlStudy(StudyProblem):
    """(OCP^delta_gamma) of Part II by the trust-region method vs the exact (OCP) QP.

    Both are posed on the same mesh with the same admissible set (vertices at distance
    >= rho from the boundary, rho >= max delta as Part II (3.1) requires), so the errors
    measure the regularization and smoothing only. Metrics:

    * ``control_w1``, ``control_w2`` = W_p(mu1_gamma^delta, mu1_exact) of the controls;
    * ``objective_gap`` = J(mu1_gamma^delta) - J(mu1_exact) >= 0, J the exact (OCP)
      objective (tracking + nu W_beta^beta by monotone rearrangement / LP);
    * ``value_error`` = |f_gamma^delta(mu1_gamma^delta) - J(mu1_exact)| (optimal values);
    * ``state_error`` = |y_gamma^delta - y_exact|_{L2};
    * ``plan_w1`` = W1 on Omega x Omega between the regularized plan and the QP's plan.
    """

    name = "control"
    all_metrics = ("control_w1", "control_w2", "objective_gap", "value_error", "state_error", "plan_w1",
                   "control_w1_total", "control_w2_total", "discretization_w1")
    metrics = all_metrics
    primary = "control_w1"
    #: the study computes the exact reference on its finest mesh too (total errors); the
    #: run ids hash that mesh, so results never mix references of different meshes
    total_reference = True
    #: pairs of (regularization error at fixed h, total error) the report draws together
    error_kinds = (("control_w1", "control_w1_total"), ("control_w2", "control_w2_total"))
    notes = ("Reference: the exact discrete (OCP) on the level's mesh (convex QP, Clarabel, certified by "
             "its Frank-Wolfe gap). The regularized plan carries the smoothed marginals (mass |mu2| + delta); "
             "plans are normalized to probability measures before plan_w1. Total errors (`*_total`) compare "
             "the level's control with the exact discrete (OCP) on the finest mesh of the study; controls are "
             "measures, so no interpolation between meshes is needed: W_p is computed between the two "
             "discrete measures on their own vertex sets (exact 1D formulas, exact OT in 2D). "
             "`discretization_w1` = W1 between the exact discrete controls on the level's mesh and on the "
             "finest mesh, so control_w1_total <= control_w1 + discretization_w1 (triangle inequality) "
             "shows which error dominates.")

    KEYS = {"nu", "beta", "eps", "rho", "y_d", "mu2", "tol", "max_iter", "tr", "order", "transport", "rtol",
            "fw_rtol", "transport_mesh", "transport_refine", "enlarge"}

    def validate(self, sec, *, where, gammas, deltas, d, dim, meshes, base_dir):
        """Check the ``[control]`` table: desired state, prior, weights, solver settings."""
        _check_keys(sec, self.KEYS, where)
        if dim not in (1, 2):
            raise ConfigError(f"mesh: the control study needs 1D or 2D meshes, got dimension {dim}")
        _require_qp_solver(where)
        if "nu" not in sec:
            raise ConfigError(f"{where}.nu: missing (weight of the Wasserstein term)")
        nu = _num(sec, "nu", where, nonneg=True)
        beta = _num(sec, "beta", where, default=2.0, lo=1.0)
        eps = _num(sec, "eps", where, default=0.0, nonneg=True)
        order = _num(sec, "order", where, default=1, integer=True, lo=1, hi=2)
        dmax = max(deltas)
        enlarge = sec.get("enlarge", False)
        if not isinstance(enlarge, bool):
            raise ConfigError(f"{where}.enlarge: must be true or false (smooth on Omega + B(0, delta), Part II "
                              f"Lemma 2.4), got {enlarge!r}")
        if enlarge:  # Lemma 2.4: the controls and the prior may touch the boundary
            rho = _num(sec, "rho", where, default=0.0, nonneg=True)
        else:
            rho = _num(sec, "rho", where, default=dmax, positive=True)
            if rho < dmax * (1 - 1e-12):
                raise ConfigError(f"{where}.rho: {rho:g} must be >= max delta = {dmax:g}: the admissible set "
                                  f"dist(supp mu1, boundary) >= rho needs delta_n <= rho (Part II (3.1)); or set "
                                  f"{where}.enlarge = true (Part II Lemma 2.4)")
        transport_mesh = self._parse_transport_mesh(sec, where, dim, deltas, base_dir)
        tol = _num(sec, "tol", where, default=1e-10, positive=True)
        max_iter = _num(sec, "max_iter", where, default=200, integer=True, lo=1)
        transport = sec.get("transport", "plan")
        if transport not in FORMULATIONS:
            raise ConfigError(f"{where}.transport: must be one of {', '.join(FORMULATIONS)} (the plan term of "
                              f"(OCP^delta_gamma) or the convex value formulation), got {transport!r}")
        # stopping: theta_R <= rtol * theta_R(start) (plan), fw_gap <= fw_rtol |f| (value)
        rtol = _num(sec, "rtol", where, default=1e-5, positive=True)
        fw_rtol = _num(sec, "fw_rtol", where, default=1e-8, positive=True)
        tr = _tr_options(sec, where)
        mu2 = self._parse_mu2(sec.get("mu2"), f"{where}.mu2", dim, base_dir)
        y_d = self._parse_yd(sec.get("y_d"), f"{where}.y_d", dim, base_dir)
        # Geometry: the prior must keep distance >= delta from the boundary (its smoothing),
        # and the admissible set must not be empty; checked on every mesh of the study.
        seen = set()
        for spec in meshes:
            k = repr(spec.key())
            if k in seen:
                continue
            seen.add(k)
            mesh = spec.load()
            pts = self._mu2_points_for_check(mu2, mesh)
            for name, val in (("mu2", mu2), ("y_d", y_d)):
                if val["type"] in ("diracs", "state"):  # every point must lie in the mesh
                    bad = _outside(mesh, val["points"])
                    if bad.size:
                        j = int(bad[0])
                        x = val["points"][j]
                        raise ConfigError(f"{where}.{name}.points[{j}]: {x[0] if dim == 1 else x} lies outside "
                                          f"mesh {spec.label()}")
                elif val["type"] == "random_diracs":
                    bad = _outside(mesh, pts)
                    if bad.size:
                        raise ConfigError(f"{where}.{name}.box: its corner {pts[bad[0]].tolist()} lies outside "
                                          f"mesh {spec.label()}")
            if pts is not None and not enlarge:
                dist = boundary_distance(mesh, pts, signed=False)
                if np.any(dist < dmax * (1 - 1e-12)):
                    raise ConfigError(f"{where}.mu2: a point lies closer than max delta = {dmax:.4g} to the "
                                      f"boundary of mesh {spec.label()} (T^delta needs distance >= delta; or set "
                                      f"{where}.enlarge = true, Part II Lemma 2.4)")
            vdist = boundary_distance(mesh, mesh.p.T, signed=False)
            if not np.any(vdist >= rho * (1 - 1e-12)):
                raise ConfigError(f"{where}.rho: no vertex of mesh {spec.label()} has distance >= rho = {rho:g} "
                                  f"from the boundary")
        out = {"nu": nu, "beta": beta, "eps": eps, "rho": rho, "order": order, "tol": tol, "max_iter": max_iter,
               "tr": tr, "mu2": mu2, "y_d": y_d, "transport": transport, "rtol": rtol, "fw_rtol": fw_rtol}
        if enlarge:  # only when set: the run ids of existing studies stay as they were
            out["enlarge"] = True
        if transport_mesh is not None:
            out["transport_mesh"] = transport_mesh
        return out

    @staticmethod
    def _parse_transport_mesh(sec, where, dim, deltas, base_dir):
        """``transport_mesh`` (+ ``transport_refine``): ``{"name", "refine", "path"}`` or None.

        The transport lives on this mesh's vertices (lumped weights) on every level instead of the
        level's state mesh (:class:`femot.problems.ControlProblem`, ``transport_mesh``); it must be
        a mesh of the same domain's dimension and resolve every delta of the schedule, h <= delta / 4
        with h its node spacing (:func:`femot.fem.smoothing.mesh_spacing`).  ``path`` (the resolved
        file) does not enter the run ids (:func:`femot.studies.config.hashed_params`).
        """
        if "transport_mesh" not in sec:
            if "transport_refine" in sec:
                raise ConfigError(f"{where}.transport_refine: goes with {where}.transport_mesh")
            return None
        refine = _num(sec, "transport_refine", where, default=0, integer=True, lo=0)
        spec = _mesh_entry(sec["transport_mesh"], f"{where}.transport_mesh", base_dir, refine)
        try:
            tm = spec.load()
        except (ValueError, OSError) as exc:
            raise ConfigError(f"{where}.transport_mesh: cannot load {spec.name!r}: {exc}") from None
        if mesh_dim(tm) != dim:
            raise ConfigError(f"{where}.transport_mesh: a {mesh_dim(tm)}D mesh, the study's meshes are {dim}D")
        h = mesh_spacing(tm)
        dmin = min(deltas)
        if h > dmin / RESOLUTION_RATIO * (1 + 1e-12):
            raise ConfigError(f"{where}.transport_mesh: its node spacing h = {h:.4g} does not resolve the smallest "
                              f"delta = {dmin:.4g} (h <= delta / {RESOLUTION_RATIO:g} = {dmin / RESOLUTION_RATIO:.4g} "
                              f"needed); raise {where}.transport_refine or use a finer mesh")
        return {"name": spec.name, "refine": int(refine), "path": spec.path}

    @staticmethod
    def _points_list(value, where, dim):
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{where}: must be a nonempty list of points")
        out = []
        for j, x in enumerate(value):
            if dim == 1 and isinstance(x, (int, float)) and not isinstance(x, bool):
                out.append([float(x)])
            elif (isinstance(x, list) and len(x) == dim and
                  all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x)):
                out.append([float(v) for v in x])
            else:
                raise ConfigError(f"{where}[{j}]: must be a point in R^{dim}, got {x!r}")
        return out

    @staticmethod
    def _table_file(value, where, dim, base_dir, what: str) -> np.ndarray:
        """The rows of ``value["file"]``: a text table (commas or blanks, ``#`` comments) with
        ``dim + 1`` columns, ``dim`` coordinates and ``what``; a relative path is relative to the config."""
        path = Path(str(value["file"])).expanduser()
        if not path.is_absolute():
            path = Path(base_dir or ".") / path
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{where}.file: cannot read {path} ({exc.strerror or exc})") from None
        rows = []
        for k, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].replace(",", " ").strip()
            if not line:
                continue
            try:
                vals = [float(v) for v in line.split()]
            except ValueError:
                raise ConfigError(f"{where}.file: {path}, line {k}: not numbers: {line!r}") from None
            if len(vals) != dim + 1 or not all(np.isfinite(vals)):
                raise ConfigError(f"{where}.file: {path}, line {k}: needs {dim + 1} finite numbers ({dim} "
                                  f"coordinate{'s' if dim > 1 else ''}, then {what}), got {len(vals)}")
            rows.append(vals)
        if not rows:
            raise ConfigError(f"{where}.file: {path} holds no rows")
        return np.array(rows)

    def _weighted_points(self, value, where, dim, base_dir=None):
        """``(points, weights)`` of a table ``{type, points, weights}`` or ``{type, file}``; weights default to
        1/len(points)."""
        _check_keys(value, {"type", "points", "weights", "file"}, where)
        if "file" in value:
            if "points" in value or "weights" in value:
                raise ConfigError(f"{where}.file: give either a file or points/weights, not both")
            tab = self._table_file(value, where, dim, base_dir, "the weight")
            return tab[:, :dim].tolist(), tab[:, dim].tolist()
        pts = self._points_list(value.get("points"), f"{where}.points", dim)
        if "weights" not in value:
            return pts, [1.0 / len(pts)] * len(pts)
        return pts, _num_list(value, "weights", where, positive=False)

    def _parse_mu2(self, value, where, dim, base_dir=None):
        t = _table_type(value, where, '{type = "diracs", points = [0.4, 0.6]}')
        if t == "diracs":
            pts, wts = self._weighted_points(value, where, dim, base_dir)
            if len(wts) != len(pts) or any(v < 0 for v in wts) or sum(wts) <= 0:
                raise ConfigError(f"{where}.weights: needs {len(pts)} nonnegative entries with positive sum")
            return {"type": "diracs", "points": pts, "weights": wts}
        if t == "random_diracs":
            _check_keys(value, {"type", "n", "box", "mass"}, where)
            n = _num(value, "n", where, integer=True, lo=1)
            box = value.get("box")
            if (not isinstance(box, list) or len(box) != dim or
                    not all(isinstance(iv, list) for iv in box)):
                raise ConfigError(f"{where}.box: must be a list of {dim} intervals [[a, b], ...]")
            box = [_interval(iv, f"{where}.box[{i}]") for i, iv in enumerate(box)]
            mass = _num(value, "mass", where, default=1.0, positive=True)
            return {"type": "random_diracs", "n": n, "box": box, "mass": mass}
        raise ConfigError(f"{where}.type: unknown prior type {t!r}; choose 'diracs' or 'random_diracs'")

    @staticmethod
    def with_metrics(params, metrics):
        """Switch off the costly ``plan_w1`` metric unless the report asks for it.

        plan_w1 is exact OT on Omega x Omega between the regularized plan (in 2D up to
        ~10^5 support points) and the QP's plan; computed only when report.metrics lists it.

        Parameters
        ----------
        params : dict
            The parameters from :meth:`validate`.
        metrics : list of str
            The metrics the report lists.

        Returns
        -------
        dict
            ``params`` itself, or a copy with ``plan_metric=False``.
        """
        if "plan_w1" in metrics:
            return params
        return dict(params, plan_metric=False)

    def _mu2_points_for_check(self, mu2, mesh):
        if mu2["type"] == "diracs":
            return np.array([p for p, w in zip(mu2["points"], mu2["weights"]) if w > 0])
        box = np.array(mu2["box"])
        corners = np.array(np.meshgrid(*box)).reshape(len(box), -1).T
        return corners

    def _parse_yd(self, value, where, dim, base_dir=None):
        t = _table_type(value, where, '{type = "state", points = [0.3, 0.7]}')
        if t == "state":
            pts, wts = self._weighted_points(value, where, dim, base_dir)
            if len(wts) != len(pts):
                raise ConfigError(f"{where}.weights: has {len(wts)} entries, {where}.points has {len(pts)}")
            return {"type": "state", "points": pts, "weights": wts}
        if t == "samples":  # measured values: interpolated linearly onto every level's mesh
            _check_keys(value, {"type", "file"}, where)
            if "file" not in value:
                raise ConfigError(f"{where}.file: missing (a table of points and values of y_d)")
            tab = self._table_file(value, where, dim, base_dir, "the value of y_d")
            if len(tab) < dim + 1:
                raise ConfigError(f"{where}.file: needs at least {dim + 1} sample points")
            return {"type": "samples", "points": tab[:, :dim].tolist(), "values": tab[:, dim].tolist()}
        if t == "gaussians":
            _check_keys(value, {"type", "components"}, where)
            comps = value.get("components")
            if not isinstance(comps, list) or not comps:
                raise ConfigError(f"{where}.components: must be a list of [center..., width, height]")
            out = []
            for j, c in enumerate(comps):
                if (not isinstance(c, list) or len(c) != dim + 2 or
                        not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in c) or c[dim] <= 0):
                    raise ConfigError(f"{where}.components[{j}]: must be [center ({dim} numbers), width > 0, "
                                      f"height], got {c!r}")
                out.append([float(v) for v in c])
            return {"type": "gaussians", "components": out}
        if t == "constant":
            _check_keys(value, {"type", "value"}, where)
            return {"type": "constant", "value": _num(value, "value", where)}
        raise ConfigError(f"{where}.type: unknown desired state type {t!r}; choose 'state', 'gaussians', "
                          f"'constant' or 'samples'")

    def setup(self, params, seed):
        """Draw the chain's prior mu2^d (points and masses)."""
        m = params["mu2"]
        if m["type"] == "diracs":
            pts, wts = np.array(m["points"]), np.array(m["weights"])
        else:
            rng = np.random.default_rng([seed, 2])
            box = np.array(m["box"])
            pts = box[:, 0] + (box[:, 1] - box[:, 0]) * rng.random((m["n"], box.shape[0]))
            wts = rng.dirichlet(np.ones(m["n"])) * m["mass"]
        return ControlChain(params=params, mu2_points=pts, mu2=wts)

    def _y_d(self, op, spec):
        if spec["type"] == "state":
            load = op.load_dirac(np.array(spec["points"]), np.array(spec["weights"]))
            return op.solve(load)
        if spec["type"] == "constant":
            v = spec["value"]
            return lambda x: np.full(x.shape[1:], v)
        if spec["type"] == "samples":
            return _sample_interpolant(np.array(spec["points"]), np.array(spec["values"]))
        comps = np.array(spec["components"])
        dim = op.dim

        def y_d(x):
            out = np.zeros(x.shape[1:])
            for c in comps:
                r2 = sum((x[k] - c[k]) ** 2 for k in range(dim))
                out = out + c[dim + 1] * np.exp(-0.5 * r2 / c[dim] ** 2)
            return out

        return y_d

    def estimate(self, params, level) -> dict:
        """Size, memory and time estimate of one level (``femot study --check``).

        :func:`femot.problems.control.estimate_size` on the level's mesh with the study's
        transport mesh, enlargement and admissible set (the exact reference QP is not included).

        Parameters
        ----------
        params : dict
            The validated parameters (:meth:`validate`).
        level : femot.studies.config.Level
            The level (its mesh, gamma and delta).

        Returns
        -------
        dict
            See :func:`~femot.problems.control.estimate_size`.
        """
        m = params["mu2"]
        mass = float(sum(m["weights"])) if m["type"] == "diracs" else float(m["mass"])
        t = params.get("transport_mesh")
        tm = None if t is None else load_mesh(t["path"] or t["name"], refine=t["refine"])
        return estimate_size(level.mesh.load(), level.gamma, level.delta, mass=mass, transport_mesh=tm,
                             enlarge=params.get("enlarge", False), rho=params["rho"])

    @staticmethod
    def _transport_mesh(ctx: ControlChain):
        """The ``transport_mesh`` of the parameters, loaded once per chain (None: the level's mesh)."""
        t = ctx.params.get("transport_mesh")
        if t is None:
            return None
        if ctx.transport_mesh is None:
            ctx.transport_mesh = load_mesh(t["path"] or t["name"], refine=t["refine"])
        return ctx.transport_mesh

    def _reference(self, ctx: ControlChain, spec) -> ControlReference:
        p = ctx.params

        def build(mesh):
            op = PoissonOperator(mesh, order=p["order"])
            y_d = self._y_d(op, p["y_d"])
            t0 = time.perf_counter()
            ref = solve_control_reference(op, y_d, ctx.mu2, p["nu"], target_points=ctx.mu2_points,
                                          beta=p["beta"], rho=p["rho"])
            return ControlReference(op=op, y_d=y_d, ref=ref, ref_time=time.perf_counter() - t0)

        return ctx.per_mesh(spec, build)

    def solve(self, ctx: ControlChain, level, warm):
        """Solve the regularized control problem on the level's mesh and compare with the exact QP."""
        p = ctx.params
        mc = self._reference(ctx, level.mesh)
        op, y_d, ref = mc.op, mc.y_d, mc.ref
        P = ControlProblem(op, y_d, ctx.mu2, p["nu"], level.gamma, level.delta, beta=p["beta"], rho=p["rho"],
                           eps=p["eps"], target_points=ctx.mu2_points,
                           qrot_options={"tol": p["tol"], "max_iter": p["max_iter"]},
                           transport=p.get("transport", "plan"), transport_mesh=self._transport_mesh(ctx),
                           enlarge=p.get("enlarge", False),
                           check_resolution=False)  # validated with the study's mesh.resolution_ratio
        x0 = None
        warm_kind = "cold"
        if warm is not None:
            if warm["control_points"].shape == P.x1.shape and np.array_equal(warm["control_points"], P.x1):
                x0 = np.asarray(warm["x"], dtype=float)
            else:  # another mesh: split the old point masses onto the new vertices
                m = DiracSum(warm["control_points"], warm["x"]).masses(quadrature(op.mesh))[P.control_vertices]
                x0 = m * (P.mass / m.sum()) if m.sum() > 0 else None
            P.lower.warm = (carry_nodal(warm, "alpha", P.q.nodes), carry_nodal(warm, "beta", P.q.nodes))
            warm_kind = "previous level"
        t0 = time.perf_counter()
        r = P.solve(x0, options=dict(p["tr"]) or None, rtol=p.get("rtol", 1e-5), fw_rtol=p.get("fw_rtol", 1e-8),
                    callback=iteration_tick)
        t_solve = time.perf_counter() - t0
        adm = ref.control_vertices
        xr = op.vertices[adm]
        total = {}
        fin = ctx.finest
        if fin is not None:
            fc = self._reference(ctx, fin)
            fref = fc.ref
            xf = fc.op.vertices[fref.control_vertices]
            mf = fref.masses[fref.control_vertices]
            total = {
                "control_w1_total": wasserstein_discrete(P.x1, r.x, xf, mf, 1.0),
                "control_w2_total": wasserstein_discrete(P.x1, r.x, xf, mf, 2.0),
                "discretization_w1": wasserstein_discrete(xr, ref.masses[adm], xf, mf, 1.0),
            }
            finest_info = {"finest_mesh": fin.label(), "finest_nodes": int(fc.op.nvertices),
                           "finest_reference_status": int(fref.status),
                           "finest_reference_fun": float(fref.fun)}
        else:
            finest_info = {}
        J, J_track, J_transport = control_objective(op, r.masses, y_d, ctx.mu2, p["nu"],
                                                    target_points=ctx.mu2_points, beta=p["beta"])
        e = r.y - ref.y
        w = P.q.weights
        metrics = {
            "control_w1": wasserstein_discrete(P.x1, r.x, xr, ref.masses[adm], 1.0),
            "control_w2": wasserstein_discrete(P.x1, r.x, xr, ref.masses[adm], 2.0),
            "objective_gap": float(J - ref.fun),
            "value_error": abs(float(r.fun) - float(ref.fun)),
            "state_error": math.sqrt(max(float(e @ (op.M @ e)), 0.0)),
            "plan_w1": plan_distance(*plan_points(r.plan, P.q.nodes, P.q.nodes, w, w),
                                     *plan_points(ref.plan, xr, ref.target_points))
            if p.get("plan_metric", True) else math.nan,
            **total,
        }
        success = bool(r.success and ref.success)
        message = r.message if ref.success else f"{r.message} Reference: {ref.message}"
        info = {
            "success": success, "status": int(r.status), "message": message, "nit": int(r.nit),
            "iterations": int(r.nit), "formulation": P.formulation,
            "stationarity": float(r.stationarity), "relative_stationarity": float(r.relative_stationarity),
            "fw_gap": None if r.fw_gap is None else float(r.fw_gap),
            "n_nodes": int(op.nvertices), "n_controls": int(P.n), "transport_nodes": int(P.q.n),
            "transport_pairs": int(P.q.n) ** 2, "matrix_free": bool(P.matrix_free), "plan_nnz": int(r.plan.nnz),
            "fun": float(r.fun), "exact_objective": float(J), "reference_fun": float(ref.fun),
            "reference_status": int(ref.status), "reference_gap": float(ref.residuals["gap"]),
            "lower_solves": int(r.lower_solves), "newton_iterations": int(r.newton_iterations),
            "lower_failures": int(r.lower_failures), "warm_start": warm_kind,
            "solve_time_s": round(t_solve, 4), "reference_time_s": round(mc.ref_time, 4),
            "h": float(level.h), "delta_over_h": float(level.delta / level.h) if level.h > 0 else None,
            "certificate": ("fw_gap" if P.formulation == "value" else "relative_stationarity"),
            **finest_info,
        }
        state = {"x": np.asarray(r.x), "control_points": P.x1, "alpha": np.asarray(r.lower.alpha),
                 "beta": np.asarray(r.lower.beta), **nodal_state(P.q)}
        return metrics, info, state




def _require_qp_solver(where):
    """The exact control reference needs a QP solver; say so at validation, not once per run."""
    try:
        pick_qp_solver("auto")
    except ImportError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _outside(mesh, points) -> np.ndarray:
    """Indices of the points that lie outside the mesh."""
    return np.flatnonzero(locate(mesh, np.asarray(points, dtype=float))[0] < 0)
