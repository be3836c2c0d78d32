"""Study configuration: TOML in, a validated :class:`Study` (chains of runs) out.

The schema is documented in docs/studies.md (and ``demos/studies/*.toml``). Everything is
validated before any run starts; every error is a :class:`ConfigError` (a ``ValueError``)
whose message starts with the dotted name of the offending field, e.g. ``schedule.deltas: ...``.
Run ids hash the kind's parameters, the seed and the (gamma, delta, mesh) of the run's level
and of all levels before it in its chain (it is warm-started from them); names, report
options and the backend do not enter, so they can change without invalidating stored results.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from femot._io import json_default
from femot.fem import check_coupling
from femot.fem.meshes import mesh_dim
from femot.fem.smoothing import RESOLUTION_RATIO, check_resolution, mesh_size
from femot.studies.mesh_spec import _FAMILIES, _FAMILY_ALIASES, MeshSpec, _mesh_entry
from femot.studies.registry import get_problem, problem_names
from femot.studies.toml_checks import ConfigError, _check_keys, _num, _num_list, _table

__all__ = ["ConfigError", "Study", "Chain", "Level", "load_config", "parse_config", "run_id", "canonical",
           "hashed_params"]

try:  # Python >= 3.11
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 needs the backport
    try:
        import tomli as _toml
    except ModuleNotFoundError:
        _toml = None


_TOP_SECTIONS = {"study", "schedule", "mesh", "report", "seeds"}


# ----------------------------------------------------------------------------- helpers


def canonical(obj) -> str:
    """Canonical JSON (sorted keys, floats as repr) used for hashing run parameters.

    Parameters
    ----------
    obj : object
        JSON-serializable data (numpy scalars and arrays and paths are converted); NaN and
        infinity are rejected.

    Returns
    -------
    str
        Compact JSON with sorted keys: equal data give equal text.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=json_default)


def run_id(params: dict) -> str:
    """Deterministic id of a run: a hash of its canonical parameters.

    Parameters
    ----------
    params : dict
        The parameters that define the run (see :func:`canonical`).

    Returns
    -------
    str
        The first 16 hexadecimal digits of the SHA-256 hash of ``canonical(params)``.
    """
    return hashlib.sha256(canonical(params).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- meshes


def _mesh_dim(spec: MeshSpec, where: str) -> int:
    try:
        return mesh_dim(spec.load())
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{where}: cannot load mesh {spec.name!r}: {exc}") from None


# ----------------------------------------------------------------------------- structure


@dataclass(frozen=True)
class Level:
    """One run of a chain: level index, (gamma, delta), the mesh and the run id."""

    index: int
    gamma: float
    delta: float
    ratio: float
    mesh: MeshSpec
    id: str
    h: float = math.nan              # mesh size (longest cell edge) of the level's mesh


@dataclass(frozen=True)
class Chain:
    """All levels of the schedule for one (mesh sweep entry, seed), run in order.

    Level n warm-starts from level n-1 (Part II (3.1): the levels approach the same
    limit, so the previous solution is a good initial guess).
    """

    index: int
    label: str
    seed: int
    levels: tuple


@dataclass
class Study:
    """A validated study: the kind (``problem``), its parameters, the schedule and the chains.

    >>> study = parse_config({
    ...     "study": {"problem": "transport", "seeds": [0, 1]},
    ...     "schedule": {"gammas": [1e-2, 1e-3], "deltas": [0.2, 0.15]},
    ...     "mesh": {"nodes_per_delta": 4.0},
    ...     "transport": {"mu1": {"type": "random_diracs", "n": 3, "interval": [0.3, 0.7]},
    ...                   "mu2": {"type": "diracs", "points": [0.45, 0.65]}}})
    >>> study.problem, study.d, len(study.chains), len(study.runs)
    ('transport', 2, 2, 4)
    >>> [f"{r:.3f}" for r in study.ratios]  # gamma_n / delta_n^d
    ['0.250', '0.044']
    """

    name: str
    problem: str
    params: dict
    gammas: list
    deltas: list
    d: int
    ratios: list
    seeds: list
    chains: list
    threads: int = 1
    resolution_ratio: float = 4.0
    mesh_mode: str = ""
    finest: MeshSpec | None = None
    metrics: list = field(default_factory=list)
    primary: str = ""
    description: str = ""
    source: str | None = None
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def runs(self) -> list:
        return [lv for ch in self.chains for lv in ch.levels]

    def summary(self) -> dict:
        return {"name": self.name, "problem": self.problem, "d": self.d, "gammas": self.gammas,
                "deltas": self.deltas, "ratios": self.ratios, "seeds": self.seeds, "params": self.params,
                "n_chains": len(self.chains), "n_runs": len(self.runs), "metrics": self.metrics,
                "primary": self.primary, "resolution_ratio": self.resolution_ratio, "mesh_mode": self.mesh_mode,
                "h": [[lv.h if math.isfinite(lv.h) else None for lv in ch.levels] for ch in self.chains]}


# ----------------------------------------------------------------------------- parsing


def load_config(path) -> Study:
    """Read and validate a study configuration file (TOML).

    Parameters
    ----------
    path : str or os.PathLike
        The TOML file; relative paths inside it (e.g. mesh files) are resolved against its
        directory.

    Returns
    -------
    Study
        :func:`parse_config` of the file's tables.

    Raises
    ------
    ConfigError
        (a ValueError) If the file is missing or is not valid TOML, or as :func:`parse_config`.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> text = '''
    ... [study]
    ... problem = "identification"
    ... [schedule]
    ... gammas = [1e-2, 1e-3]
    ... [identification]
    ... n = 6
    ... '''
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = Path(d) / "study.toml"
    ...     _ = path.write_text(text)
    ...     study = load_config(path)
    >>> study.name, study.params["n"], study.gammas
    ('identification', 6, [0.01, 0.001])
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config: file not found: {path}")
    if _toml is None:  # pragma: no cover
        raise ConfigError("config: reading TOML on Python < 3.11 needs the package tomli")
    try:
        with open(path, "rb") as fh:
            raw = _toml.load(fh)
    except _toml.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML: {exc}") from None
    return parse_config(raw, base_dir=path.parent, source=str(path))


def parse_config(raw: dict, *, base_dir=".", source: str | None = None) -> Study:
    """Validate a configuration given as a dict (the parsed TOML); see the module doc.

    Parameters
    ----------
    raw : dict
        The configuration tables (``study``, ``mesh``, ``schedule``, the problem's table, ...).
    base_dir : str or os.PathLike, optional
        Directory against which relative paths are resolved.  Default the current directory.
    source : str, optional
        Where the configuration came from (a file name), recorded in the study.

    Returns
    -------
    Study
        The validated study.

    Raises
    ------
    ConfigError
        (a ValueError) If a field is missing, unknown or invalid; the message names it.

    Examples
    --------
    A TOML text parsed (``tomllib``, or its backport ``tomli`` before Python 3.11), then validated:

    >>> try:
    ...     import tomllib
    ... except ModuleNotFoundError:
    ...     import tomli as tomllib
    >>> raw = tomllib.loads('''
    ... [study]
    ... problem = "transport"
    ... [schedule]
    ... n_levels = 3
    ... gamma0 = 1e-2
    ... factor = 0.1
    ... [mesh]
    ... nodes_per_delta = 4.0
    ... [transport]
    ... mu1 = { type = "diracs", points = [0.4, 0.6] }
    ... mu2 = { type = "diracs", points = [0.45, 0.65] }
    ... ''')
    >>> study = parse_config(raw)
    >>> [f"{g:.0e}" for g in study.gammas], [f"{d:.3f}" for d in study.deltas]
    (['1e-02', '1e-03', '1e-04'], ['0.215', '0.100', '0.046'])
    >>> try:
    ...     parse_config(dict(raw, mesh={"nodes_per_delta": -1.0}))
    ... except ConfigError as exc:
    ...     print(exc)
    mesh.nodes_per_delta: must be positive, got -1.0
    """
    if not isinstance(raw, dict):
        raise ConfigError("config: must be a table")
    base_dir = Path(base_dir)
    problem, name, desc, seeds, threads = _parse_study_section(raw)

    adapter = get_problem(problem)
    if adapter.uses_mesh:
        meshes, d_space = _parse_mesh(_table(raw, "mesh"), base_dir, n_levels_hint=_n_levels_hint(raw))
    else:
        if "mesh" in raw:
            raise ConfigError(f"mesh: the {problem} problem has no mesh ({adapter.mesh_note}); "
                              "remove [mesh]")
        meshes, d_space = ("fixed", [MeshSpec(name="none")]), adapter.space_dim
    d = adapter.coupling_dimension(d_space)
    gammas, deltas, ratios = _parse_schedule(_table(raw, "schedule"), d,
                                             uses_delta=adapter.uses_delta, problem=problem)
    n = len(gammas)
    # Per-level meshes (generated intervals and mesh.refine_with_delta follow delta); every
    # level must resolve its delta: h <= delta / mesh.resolution_ratio (Part II's T^delta).
    sch = _table(raw, "schedule")
    delta_field = ("schedule.deltas" if "deltas" in sch else
                   "schedule.gammas" if "gammas" in sch else "schedule.gamma0/factor") + \
        ("" if "deltas" in sch else " with delta = C gamma^(1/(d+s))")
    sizes: dict = {}
    hs = None
    ratio_res = 0.0
    if adapter.uses_mesh:
        ratio_res = _resolution_ratio(_table(raw, "mesh"))
        if meshes[0] == "coupled":
            sweeps = [_coupled_levels(meshes[1], deltas, ratio_res, sizes, delta_field)]
        else:
            sweeps = _expand_meshes(meshes, deltas, n)
        if adapter.uses_delta:
            hs = _check_levels_resolved(meshes, sweeps, gammas, deltas, ratio_res, sizes, delta_field)
    else:
        sweeps = _expand_meshes(meshes, deltas, n)
    psec = _table(raw, problem)
    try:
        params = adapter.validate(psec, where=problem, gammas=gammas, deltas=deltas, d=d, dim=d_space,
                                  meshes=[lv for sw in sweeps for lv in sw], base_dir=base_dir)
    except ConfigError:
        raise
    except ValueError as exc:  # a library check that fired on the problem data
        raise ConfigError(f"{problem}: {exc}") from None

    metrics, primary, params = _parse_report(_table(raw, "report"), adapter, problem, params)

    # The finest mesh of the study (smallest h): the total errors of problems with an exact
    # discrete reference are measured against the reference on it.
    finest = None
    if adapter.total_reference and hs is not None:
        _, i_fine, k_fine = min(((h, i, k) for i, row in enumerate(hs) for k, h in enumerate(row)))
        finest = sweeps[i_fine][k_fine]
    chains = _build_chains(problem, params, d, gammas, deltas, ratios, sweeps, seeds, hs, finest, meshes,
                           ratio_res)
    labels = [c.label for c in chains]
    if len(set(labels)) != len(labels):
        raise ConfigError("mesh.names: the sweep contains the same mesh twice")
    return Study(name=name.strip(), problem=problem, params=params, gammas=gammas, deltas=deltas, d=d,
                 ratios=ratios, seeds=list(seeds), chains=chains, threads=threads, resolution_ratio=ratio_res,
                 mesh_mode=meshes[0] if adapter.uses_mesh else "", finest=finest,
                 metrics=list(metrics),
                 primary=primary, description=desc, source=source, raw=raw)


def _parse_study_section(raw: dict):
    """``[study]`` and ``seeds``: ``(problem, name, description, seeds, threads)``."""
    st = _table(raw, "study")
    _check_keys(st, {"name", "problem", "seeds", "threads", "description"}, "study")
    PROBLEMS = problem_names()
    problem = st.get("problem")
    if problem is None:
        raise ConfigError(f"study.problem: missing; choose one of {', '.join(PROBLEMS)}")
    get_problem(problem)  # ConfigError naming study.problem if unknown or renamed
    name = st.get("name", problem)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"study.name: must be a nonempty string, got {name!r}")
    desc = st.get("description", "")
    if not isinstance(desc, str):
        raise ConfigError("study.description: must be a string")
    extra = sorted(set(raw) - _TOP_SECTIONS - {problem})
    if extra:
        other = [e for e in extra if e in PROBLEMS]
        if other:
            raise ConfigError(f"{other[0]}: section of another problem; study.problem is {problem!r}")
        raise ConfigError(f"{extra[0]}: unknown section; allowed: study, schedule, mesh, report, {problem}")
    seeds = raw.get("seeds", st.get("seeds", [0]))
    where = "seeds" if "seeds" in raw else "study.seeds"
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if (not isinstance(seeds, list) or not seeds or
            not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise ConfigError(f"{where}: must be a nonempty list of nonnegative integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: seeds must be distinct, got {seeds!r}")
    threads = _num(st, "threads", "study", default=1, integer=True, lo=1)
    return problem, name, desc, seeds, threads


def _parse_report(rep: dict, adapter, problem: str, params: dict):
    """``[report]``: ``(metrics, primary, params)``, the params trimmed to the metrics asked for."""
    _check_keys(rep, {"metrics", "primary"}, "report")
    metrics = rep.get("metrics", list(adapter.metrics))
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise ConfigError(f"report.metrics: must be a nonempty list of metric names, got {metrics!r}")
    for i, m in enumerate(metrics):
        if m not in adapter.all_metrics:
            raise ConfigError(f"report.metrics[{i}]: unknown metric {m!r} for problem {problem!r}; "
                              f"available: {', '.join(adapter.all_metrics)}")
    primary = rep.get("primary", adapter.primary if adapter.primary in metrics else metrics[0])
    if primary not in metrics:
        raise ConfigError(f"report.primary: {primary!r} is not one of report.metrics")
    params = adapter.with_metrics(params, metrics)  # e.g. skip a costly metric nobody asked for
    return metrics, primary, params


def hashed_params(params: dict) -> dict:
    """The problem parameters as they enter the run ids: resolved file paths left out.

    A mesh given by file in the parameters (e.g. ``control.transport_mesh``) is a table
    ``{"name", "refine", "path"}``; as for the study's own meshes (:class:`MeshSpec`), the
    name as written in the config enters the id, the resolved path does not, so moving the
    study directory keeps its ids.

    Parameters
    ----------
    params : dict
        The validated parameters of the problem.

    Returns
    -------
    dict
        A shallow copy without the ``path`` entries of such tables.
    """
    return {k: ({kk: vv for kk, vv in v.items() if kk != "path"}
                if isinstance(v, dict) and {"name", "refine", "path"} <= set(v) else v)
            for k, v in params.items()}


def _build_chains(problem, params, d, gammas, deltas, ratios, sweeps, seeds, hs, finest, meshes, ratio_res):
    """One chain of levels per (mesh sweep, seed), each level with its run id."""
    n = len(gammas)
    chains = []
    for mi, sweep in enumerate(sweeps):
        for seed in seeds:
            levels, prefix = [], []
            for k in range(n):
                spec = sweep[k]
                prefix.append({"gamma": gammas[k], "delta": deltas[k], "mesh": spec.key()})
                # The id covers everything the result depends on, including the levels
                # it was warm-started from.
                key = {"problem": problem, "params": hashed_params(params), "seed": seed, "d": d, "level": k,
                       "path": prefix}
                if finest is not None:
                    key["finest_reference"] = finest.key()
                rid = run_id(key)
                levels.append(Level(k, gammas[k], deltas[k], ratios[k], spec, rid,
                                    hs[mi][k] if hs is not None else math.nan))
            label = _chain_label(meshes, sweep, seeds, seed, ratio_res, problem)
            chains.append(Chain(len(chains), label, seed, tuple(levels)))
    return chains


def _chain_label(meshes, sweep, seeds, seed, ratio_res: float, problem: str) -> str:
    """Name of one chain in tables and plots: its mesh sweep (and seed when there are several)."""
    if meshes[0] == "generated":
        label = f"h=delta/{meshes[1][0]:g}"
    elif meshes[0] == "coupled":
        label = f"h<=delta/{ratio_res:g}"
    elif sweep[0].name == "none":
        label = "seed" if len(seeds) > 1 else problem
    elif len({repr(s.key()) for s in sweep}) == 1:
        label = sweep[0].label()
    else:
        label = f"{sweep[0].label()}..{sweep[-1].label()}"
    if len(seeds) > 1:
        label += f"{seed}" if label == "seed" else f"/seed{seed}"
    return label


def _n_levels_hint(raw) -> int | None:
    sch = raw.get("schedule", {})
    if isinstance(sch, dict):
        if isinstance(sch.get("gammas"), list):
            return len(sch["gammas"])
        if isinstance(sch.get("n_levels"), int):
            return sch["n_levels"]
    return None


def _parse_mesh(sec: dict, base_dir: Path, n_levels_hint):
    """Returns (kind, data) and the spatial dimension of the meshes."""
    _check_keys(sec, {"name", "names", "levels", "nodes_per_delta", "domain", "refine", "rule", "min_cells",
                      "refine_with_delta", "resolution_ratio", "max_refine"}, "mesh")
    if "refine_with_delta" in sec:
        return _parse_coupled_mesh(sec, base_dir)
    if "max_refine" in sec:
        raise ConfigError("mesh.max_refine: only used with mesh.refine_with_delta")
    kinds = [k for k in ("name", "names", "levels", "nodes_per_delta") if k in sec]
    if len(kinds) != 1:
        raise ConfigError("mesh: give exactly one of mesh.name, mesh.names, mesh.levels, mesh.nodes_per_delta"
                          + (f" (got {', '.join(kinds)})" if kinds else ""))
    kind = kinds[0]
    rule = sec.get("rule", "lumped")
    if rule != "lumped":
        raise ConfigError(f"mesh.rule: only 'lumped' (vertex) quadrature is supported by the studies, got {rule!r}")
    refine = sec.get("refine", 0)
    if kind == "nodes_per_delta":
        npd = _num(sec, "nodes_per_delta", "mesh", positive=True)
        dom = sec.get("domain", [0.0, 1.0])
        if (not isinstance(dom, list) or len(dom) != 2 or
                not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in dom) or dom[0] >= dom[1]):
            raise ConfigError(f"mesh.domain: must be an interval [a, b] with a < b, got {dom!r}")
        minc = _num(sec, "min_cells", "mesh", default=8, integer=True, lo=2)
        if "refine" in sec:
            raise ConfigError("mesh.refine: not used with mesh.nodes_per_delta")
        return ("generated", (float(npd), (float(dom[0]), float(dom[1])), minc)), 1
    if "domain" in sec or "min_cells" in sec:
        raise ConfigError("mesh.domain: only used with mesh.nodes_per_delta")
    if kind == "name":
        if not isinstance(refine, int) or isinstance(refine, bool) or refine < 0:
            raise ConfigError(f"mesh.refine: must be a nonnegative integer, got {refine!r}")
        spec = _mesh_entry(sec["name"], "mesh.name", base_dir, refine)
        return ("fixed", [spec]), _mesh_dim(spec, "mesh.name")
    values = sec[kind]
    if not isinstance(values, list) or not values:
        raise ConfigError(f"mesh.{kind}: must be a nonempty list of mesh names or paths")
    if isinstance(refine, list):
        if kind != "levels":
            raise ConfigError("mesh.refine: a list of refinements goes with mesh.levels")
        if len(refine) != len(values):
            raise ConfigError(f"mesh.refine: has {len(refine)} entries, mesh.levels has {len(values)}")
        refs = refine
    else:
        refs = [refine] * len(values)
    for i, r in enumerate(refs):
        if not isinstance(r, int) or isinstance(r, bool) or r < 0:
            raise ConfigError(f"mesh.refine{'[%d]' % i if isinstance(refine, list) else ''}: "
                              f"must be a nonnegative integer, got {r!r}")
    specs = [_mesh_entry(v, f"mesh.{kind}[{i}]", base_dir, r) for i, (v, r) in enumerate(zip(values, refs))]
    dims = {}
    for i, s in enumerate(specs):
        if s.key().__repr__() not in dims:
            dims[s.key().__repr__()] = (_mesh_dim(s, f"mesh.{kind}[{i}]"), i)
    ds = {v[0] for v in dims.values()}
    if len(ds) != 1:
        raise ConfigError(f"mesh.{kind}: all meshes must have the same dimension, got {sorted(ds)}")
    if kind == "levels" and n_levels_hint is not None and len(specs) != n_levels_hint:
        raise ConfigError(f"mesh.levels: has {len(specs)} meshes, the schedule has {n_levels_hint} levels")
    return ("sweep" if kind == "names" else "levels", specs), ds.pop()


def _resolution_ratio(sec: dict) -> float:
    """mesh.resolution_ratio R (default 4): every level needs h <= delta / R."""
    if "refine_with_delta" in sec:
        R = _num(sec, "refine_with_delta", "mesh", positive=True)
        if "resolution_ratio" in sec and _num(sec, "resolution_ratio", "mesh", positive=True) != R:
            raise ConfigError("mesh.resolution_ratio: mesh.refine_with_delta = R already sets h <= delta / R; "
                              "give one of them")
        return R
    return _num(sec, "resolution_ratio", "mesh", default=RESOLUTION_RATIO, positive=True)


def _parse_coupled_mesh(sec: dict, base_dir: Path):
    """mesh.refine_with_delta = R: at every level the coarsest mesh of a uniform refinement
    family with h <= delta_n / R."""
    for k in ("names", "levels", "nodes_per_delta", "domain", "min_cells"):
        if k in sec:
            raise ConfigError(f"mesh.{k}: not used with mesh.refine_with_delta (the levels' meshes are "
                              f"the refinements of mesh.name)")
    if "name" not in sec:
        raise ConfigError("mesh.name: missing; mesh.refine_with_delta refines mesh.name (e.g. \"unit_interval\" "
                          "or \"unit_square\", a stored mesh or a file) as delta decreases")
    name = sec["name"]
    refine = sec.get("refine", 0)
    if not isinstance(refine, int) or isinstance(refine, bool) or refine < 0:
        raise ConfigError(f"mesh.refine: must be a nonnegative integer (the coarsest refinement used), got {refine!r}")
    fam = _FAMILY_ALIASES.get(name) if isinstance(name, str) else None
    if fam is not None:
        ctor, hfun, lo, dim = _FAMILIES[fam]
        max_ref = _num(sec, "max_refine", "mesh", default=16 if dim == 1 else 8, integer=True, lo=lo)
        return ("coupled", ("family", fam, lo + refine, max_ref)), dim
    spec = _mesh_entry(name, "mesh.name", base_dir, refine)
    dim = _mesh_dim(spec, "mesh.name")
    max_ref = _num(sec, "max_refine", "mesh", default={1: 12, 2: 5}.get(dim, 3), integer=True, lo=refine)
    return ("coupled", ("refine", spec, refine, max_ref)), dim


def _spec_size(spec: MeshSpec, cache: dict) -> float:
    """Mesh size h (longest cell edge) of a level's mesh, cached by key."""
    k = repr(spec.key())
    if k not in cache:
        if spec.cells is not None:
            a, b = spec.domain or (0.0, 0.0)
            cache[k] = (b - a) / spec.cells
        elif spec.family is not None:
            cache[k] = _FAMILIES[spec.family][1](spec.level)
        else:
            cache[k] = mesh_size(spec.load())
    return cache[k]


def _coupled_levels(data, deltas, ratio, sizes, delta_field) -> list[MeshSpec]:
    """The coarsest refinement with h <= delta / ratio at every level."""
    kind, base, lo, hi = data
    out = []
    if kind == "refine":
        h0 = _spec_size(MeshSpec(name=base.name, path=base.path, refine=0), sizes)
    for n, de in enumerate(deltas):
        chosen = None
        for r in range(lo, hi + 1):
            if kind == "family":
                spec = MeshSpec(name=base, family=base, level=r)
            else:
                spec = MeshSpec(name=base.name, path=base.path, refine=r)
                sizes.setdefault(repr(spec.key()), h0 / 2 ** r)  # uniform refinement halves every edge
            if _spec_size(spec, sizes) <= de / ratio * (1 + 1e-12):
                chosen = spec
                break
        if chosen is None:
            top = MeshSpec(name=base, family=base, level=hi) if kind == "family" else \
                MeshSpec(name=base.name, path=base.path, refine=hi)
            raise ConfigError(f"mesh.refine_with_delta: level {n} ({delta_field}: delta = {de:.4g}) needs "
                              f"h <= delta / {ratio:g} = {de / ratio:.4g}, but the finest allowed refinement "
                              f"{top.label()} has h = {_spec_size(top, sizes):.4g}; raise mesh.max_refine "
                              f"(now {hi}) or stop the schedule earlier")
        out.append(chosen)
    return out


def _check_levels_resolved(meshes, sweeps, gammas, deltas, ratio, sizes, delta_field) -> list[list[float]]:
    """h <= delta_n / ratio on every level of every chain (femot.fem.smoothing.check_resolution);
    ConfigError naming the mesh field and the level. Returns h per chain and level."""
    kind = meshes[0]
    out = []
    for i, sweep in enumerate(sweeps):
        hs = []
        for n, spec in enumerate(sweep):
            h = _spec_size(spec, sizes)
            field_name = {"fixed": "mesh.name", "sweep": f"mesh.names[{i}]", "levels": f"mesh.levels[{n}]",
                          "generated": "mesh.nodes_per_delta", "coupled": "mesh.refine_with_delta"}[kind]
            try:
                check_resolution(h, deltas[n], ratio, what=f"level {n} (gamma = {gammas[n]:.3g}, {delta_field})")
            except ValueError as exc:
                raise ConfigError(f"{field_name}: mesh {spec.label()} at {exc}; give mesh.refine_with_delta = "
                                  f"{ratio:g} to refine the mesh with delta, or lower mesh.resolution_ratio "
                                  f"(now {ratio:g}) deliberately") from None
            hs.append(h)
        out.append(hs)
    return out


def _expand_meshes(meshes, deltas, n) -> list[list[MeshSpec]]:
    kind, data = meshes
    if kind == "fixed":
        return [[data[0]] * n]
    if kind == "sweep":
        return [[s] * n for s in data]
    if kind == "levels":
        return [list(data)]
    npd, dom, minc = data
    L = dom[1] - dom[0]
    return [[MeshSpec(domain=dom, cells=max(minc, int(math.ceil(L * npd / de - 1e-9)))) for de in deltas]]


def _parse_schedule(sec: dict, d: int, *, uses_delta: bool = True, problem: str = ""):
    _check_keys(sec, {"gammas", "deltas", "n_levels", "gamma0", "factor", "s", "C", "d"}, "schedule")
    if not uses_delta:
        for k in ("deltas", "s", "C", "d"):
            if k in sec:
                raise ConfigError(f"schedule.{k}: the {problem} problem has no smoothing; give only gammas "
                                  f"(schedule.gammas or schedule.n_levels, gamma0, factor)")
    if "d" in sec:
        dd = _num(sec, "d", "schedule", integer=True, lo=1)
        if dd != d:
            raise ConfigError(f"schedule.d: is {dd}, but the problem lives on a product space of dimension "
                              f"d = d1 + d2 = {d}")
    s = _num(sec, "s", "schedule", default=1.0, positive=True)
    C = _num(sec, "C", "schedule", default=1.0, positive=True)
    if "gammas" in sec:
        for k in ("n_levels", "gamma0", "factor"):
            if k in sec:
                raise ConfigError(f"schedule.{k}: give either schedule.gammas or "
                                  f"schedule.n_levels/gamma0/factor, not both")
        g = _num_list(sec, "gammas", "schedule")
    else:
        if "deltas" in sec:
            raise ConfigError("schedule.deltas: explicit deltas need explicit schedule.gammas")
        if "n_levels" not in sec:
            raise ConfigError("schedule.gammas: missing; give schedule.gammas or schedule.n_levels "
                              "(with gamma0, factor)")
        n = _num(sec, "n_levels", "schedule", integer=True, lo=2, hi=64)
        g0 = _num(sec, "gamma0", "schedule", positive=True)
        f = _num(sec, "factor", "schedule", positive=True)
        if f >= 1:
            raise ConfigError(f"schedule.factor: must lie in (0, 1) so that gamma decreases, got {f!r}")
        g = [g0 * f ** k for k in range(n)]
    if len(g) < 2:
        raise ConfigError("schedule.gammas: a study needs at least two levels")
    if not uses_delta:
        if any(b >= a for a, b in zip(g, g[1:])):
            raise ConfigError("schedule.gammas: must decrease strictly towards 0")
        return [float(v) for v in g], [0.0] * len(g), [0.0] * len(g)
    if "deltas" in sec:
        if "s" in sec or "C" in sec:
            raise ConfigError("schedule.s: s and C define deltas; do not combine them with schedule.deltas")
        de = _num_list(sec, "deltas", "schedule")
        if len(de) != len(g):
            raise ConfigError(f"schedule.deltas: has {len(de)} entries, schedule.gammas has {len(g)}")
        field_name = "schedule.deltas"
    else:
        de = [C * gk ** (1.0 / (d + s)) for gk in g]
        # name the keys the user gave (n_levels/gamma0/factor generate the gammas)
        field_name = "schedule.gammas" if "gammas" in sec else "schedule.n_levels/gamma0/factor (with s, C)"
    try:
        sch = check_coupling(g, de, d)
    except ValueError as exc:
        raise ConfigError(f"{field_name}: the schedule violates the coupling gamma_n, delta_n -> 0 with "
                          f"gamma_n/delta_n^d -> 0 (d = {d}, Part II (3.1)): {exc}") from None
    return [float(v) for v in sch.gammas], [float(v) for v in sch.deltas], [float(v) for v in sch.ratios]
