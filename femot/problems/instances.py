"""Instances of the transportation identification problem (Part III, Section 4): generator, loaders, writers.

An instance is a dict (``c_d``, ``mu2_d``, ``mu1_d``, ``pi_d``, optional masks ``D``, ``D1``,
start ``mu1_0`` and truth ``mu1_true``, ``pi_true``) read from and written to ``.mat`` or ``.npz``;
docs/problems.md (section 5a) describes the files, also those of the authors' MATLAB code.
"""
from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

from femot._docstrings import cite
from femot.core import exact_ot
from femot.core.instances import hitchcock_instance
from femot.problems.identification import TransportIdentification, band_mask

__all__ = [
    "REQUIRED_VARIABLES",
    "OPTIONAL_VARIABLES",
    "identification_instance",
    "experiment2_observed_rows",
    "load_instance",
    "save_instance",
    "problem_from_instance",
    "instance_options",
    "save_result",
]

REQUIRED_VARIABLES = ("c_d", "mu2_d", "mu1_d", "pi_d")
OPTIONAL_VARIABLES = ("D", "D1", "mu1_0", "mu1_true", "pi_true")
_VECTORS = {"mu2_d", "mu1_d", "D1", "mu1_0", "mu1_true", "mu1_star"}
#: Names used by the reference MATLAB implementation for the true marginal and plan;
#: they stand in for the observations (and give the truth) when those are absent.
REFERENCE_ALIASES = {"mu1_d": "mu1_star", "pi_d": "pi_star"}
_TRUTH_OF = {"mu1_star": "mu1_true", "pi_star": "pi_true"}
#: Solver settings a file may carry (reference MATLAB names).
SETTING_VARIABLES = ("delta_0", "H_0")


# --------------------------------------------------------------------------
# generator (Part III §4.2)
# --------------------------------------------------------------------------
@cite("III")
def experiment2_observed_rows(n: int) -> np.ndarray:
    """D1 of Part III §4.2, experiment 2: rows {9, ..., 15} (counted from 1) for n = 25.

    For other n the same fraction of Omega_1 is used: rows round(9n/25), ...,
    round(15n/25) counted from 1.

    Parameters
    ----------
    n : int
        Number of source points ``n1`` (at least 2).

    Returns
    -------
    ndarray of int
        The 0-based indices of the observed rows, consecutive and nonempty.

    Raises
    ------
    ValueError
        If ``n < 2``.
    """
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    lo = max(1, int(round(9 * n / 25)))
    hi = min(n, max(lo, int(round(15 * n / 25))))
    return np.arange(lo - 1, hi)


@cite("III")
def identification_instance(n: int = 25, seed: int = 0, experiment: int = 1, *, occupancy: float = 0.5,
                            bandwidth: int = 3) -> dict:
    """A random instance generated as in Part III §4.2.

    ``n1 = n2 = n``, ``c_ij = |i - j|^2``, marginals ``mu1*``, ``mu2_d`` nonnegative,
    about ``occupancy`` occupied and summing to 1, and ``pi*`` an exact optimal plan
    from the LP (HiGHS).  Experiment 1: ``D = Omega``, ``D1 = Omega_1``,
    ``mu1_d = mu1*``, ``pi_d = pi*``.  Experiment 2: ``D1`` from
    :func:`experiment2_observed_rows`, ``D`` the band ``|i - j| <= bandwidth`` and the
    observations are the restrictions of the truth to them.

    Parameters
    ----------
    n : int, optional
        Number of points ``n1 = n2`` (at least 2).  Default 25, as in the paper.
    seed : int, optional
        Seed of the random marginals.  Default 0.
    experiment : {1, 2}, optional
        1: everything observed; 2: partial observation.  Default 1.
    occupancy : float, optional
        Approximate fraction of nonzero entries of each marginal.  Default 0.5.
    bandwidth : int, optional
        Half width of the observed band ``D`` in experiment 2 (ignored in experiment 1).
        Default 3.

    Returns
    -------
    dict
        Instance with ``c_d``, ``mu2_d``, ``mu1_d``, ``pi_d`` (sparse), ``D`` and ``D1``
        (None in experiment 1, boolean arrays in experiment 2), the truth ``mu1_true``,
        ``pi_true`` and the generator's ``seed``, ``n``, ``experiment``.

    Raises
    ------
    ValueError
        If ``experiment`` is not 1 or 2, or ``n < 2``.
    RuntimeError
        If the exact transport LP fails.

    Examples
    --------
    >>> data = identification_instance(5, seed=0)
    >>> print(data["c_d"].shape, f"{data['mu1_true'].sum():.4f}")
    (5, 5) 1.0000
    """
    if experiment not in (1, 2):
        raise ValueError(f"experiment must be 1 or 2, got {experiment!r}")
    c, mu1, mu2 = hitchcock_instance(int(n), seed=seed, occupancy=occupancy)
    ex = exact_ot(c, mu1, mu2)
    if not ex.success:
        raise RuntimeError(f"exact transport LP failed: {ex.message}")
    pi = sp.csr_matrix(ex.plan)
    data = {"c_d": c, "mu2_d": mu2, "mu1_true": mu1, "pi_true": pi, "seed": seed, "n": int(n),
            "experiment": experiment}
    if experiment == 1:
        data.update(mu1_d=mu1.copy(), pi_d=pi.copy(), D=None, D1=None)
    else:
        D1 = np.zeros(n, dtype=bool)
        D1[experiment2_observed_rows(n)] = True
        D = band_mask(n, n, bandwidth)
        P = pi.tocoo()
        keep = D[P.row, P.col]
        data.update(mu1_d=np.where(D1, mu1, 0.0), D1=D1, D=D,
                    pi_d=sp.csr_matrix((P.data[keep], (P.row[keep], P.col[keep])), shape=pi.shape))
    return data


def problem_from_instance(data: dict, gamma=1e-4, eps=None, lam=1.0, **kwargs) -> TransportIdentification:
    """Build a :class:`TransportIdentification` from an instance dict.

    Parameters
    ----------
    data : dict
        Instance as returned by :func:`identification_instance` or :func:`load_instance`;
        must hold every key of :data:`REQUIRED_VARIABLES` (not None); ``D`` and ``D1`` are
        used when present.
    gamma : float, optional
        Quadratic regularization of the lower level (> 0).  Default 1e-4.
    eps : float, optional
        Dual regularization (> 0); default ``gamma``.
    lam : float, optional
        Weight (>= 0) of the marginal term of the upper-level objective.  Default 1.
    **kwargs
        Further keyword arguments of :class:`TransportIdentification`.

    Returns
    -------
    TransportIdentification

    Raises
    ------
    ValueError
        If a required variable is missing (or the problem data are inconsistent, raised by
        :class:`TransportIdentification`).

    Examples
    --------
    >>> problem = problem_from_instance(identification_instance(5, seed=0), gamma=1e-2)
    >>> print(problem.n, problem.gamma, problem.eps)
    5 0.01 0.01
    """
    missing = [k for k in REQUIRED_VARIABLES if data.get(k) is None]
    if missing:
        raise ValueError(f"instance is missing the variable(s) {missing} (required: {list(REQUIRED_VARIABLES)})")
    return TransportIdentification(data["c_d"], data["mu2_d"], data["pi_d"], data["mu1_d"], D=data.get("D"),
                                   D1=data.get("D1"), lam=lam, gamma=gamma, eps=eps, **kwargs)


# --------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------
def _as_vector(x, name, path):
    if sp.issparse(x):
        x = x.toarray()
    a = np.asarray(x)
    if a.dtype == object:
        raise ValueError(f"{path}: variable {name!r} is not numeric")
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    elif a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise ValueError(f"{path}: variable {name!r} must be a vector (row or column), got shape {a.shape}")
    return a.astype(float) if a.dtype != bool else a


def _as_matrix(x, name, path):
    if sp.issparse(x):
        return sp.csr_matrix(x, dtype=float)
    a = np.asarray(x)
    if a.dtype == object:
        raise ValueError(f"{path}: variable {name!r} is not numeric")
    if a.ndim != 2:
        raise ValueError(f"{path}: variable {name!r} must be a 2D array, got shape {a.shape}")
    return a.astype(float) if a.dtype != bool else a


def _npz_variables(path):
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any reader error becomes a clear ValueError
        raise ValueError(f"{path}: cannot read as .npz: {exc}") from None
    with z:
        keys = list(z.keys())
        raw = {k: z[k] for k in keys}
    out = {}
    groups = {}
    for k, v in raw.items():
        if "__" in k:
            base, part = k.split("__", 1)
            groups.setdefault(base, {})[part] = v
        else:
            out[k] = v
    for base, g in groups.items():
        if base in out:
            raise ValueError(f"{path}: variable {base!r} is stored both dense and sparse")
        if "shape" not in g or "data" not in g:
            raise ValueError(f"{path}: sparse variable {base!r} needs {base}__data and {base}__shape "
                             f"(got {sorted(g)})")
        shape = tuple(int(s) for s in np.asarray(g["shape"]).reshape(-1))
        if len(shape) != 2:
            raise ValueError(f"{path}: {base}__shape must have two entries, got {shape}")
        try:
            if "row" in g and "col" in g:
                out[base] = sp.coo_matrix((g["data"], (g["row"], g["col"])), shape=shape).tocsr()
            elif "indices" in g and "indptr" in g:
                fmt = str(np.asarray(g.get("format", "csr")).reshape(-1)[0]) if "format" in g else "csr"
                cls = {"csr": sp.csr_matrix, "csc": sp.csc_matrix}.get(fmt)
                if cls is None:
                    raise ValueError(f"{base}__format must be 'csr' or 'csc', got {fmt!r}")
                out[base] = cls((g["data"], g["indices"], g["indptr"]), shape=shape).tocsr()
            else:
                raise ValueError(f"needs either {base}__row/{base}__col or {base}__indices/{base}__indptr")
        except ValueError as exc:
            raise ValueError(f"{path}: sparse variable {base!r}: {exc}") from None
    return out


def _mat_variables(path):
    from scipy.io import loadmat

    try:
        m = loadmat(path)
    except NotImplementedError:
        raise ValueError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; save with "
                         "save(..., '-v7')") from None
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path}: cannot read as a MATLAB .mat file: {exc}") from None
    return {k: v for k, v in m.items() if not k.startswith("__")}


def _max_difference(a, b, mask):
    """max |a - b| over ``mask`` (None = everywhere) without densifying sparse plans."""
    if a.shape != b.shape:
        return np.inf
    if a.ndim == 1:
        d = np.abs(a - b)
        if mask is not None:
            d = np.where(mask, d, 0.0)
        return float(d.max(initial=0.0))
    diff = sp.csr_matrix(a) - sp.csr_matrix(b)
    if mask is not None:
        diff = sp.csr_matrix(diff.multiply(sp.csr_matrix(mask)))
    return float(np.abs(diff.data).max(initial=0.0))


def _scale(*arrays):
    out = 0.0
    for a in arrays:
        v = a.data if sp.issparse(a) else np.asarray(a)
        out = max(out, float(np.abs(v).max(initial=0.0)))
    return out


def _settings(raw, n1, path, notes):
    """Trust-region options implied by the file's delta_0 and H_0 (reference MATLAB names)."""
    opts = {}
    if "delta_0" in raw:
        v = raw["delta_0"]
        a = np.asarray(v.toarray() if sp.issparse(v) else v)
        if a.dtype == object or a.size != 1 or not np.isfinite(float(a.reshape(-1)[0])) \
                or not float(a.reshape(-1)[0]) > 0:
            raise ValueError(f"{path}: variable 'delta_0' (the initial trust-region radius) must be a positive "
                             f"finite scalar, got {a.reshape(-1)[:3]!r} of shape {a.shape}")
        opts["Delta0"] = float(a.reshape(-1)[0])
    if "H_0" in raw:
        H = _as_matrix(raw["H_0"], "H_0", path)
        H = np.asarray(H.toarray() if sp.issparse(H) else H, dtype=float)
        if H.shape != (n1, n1):
            raise ValueError(f"{path}: variable 'H_0' (the initial BFGS matrix) must be {n1} x {n1}, "
                             f"got shape {H.shape}")
        c = float(H[0, 0])
        if np.isfinite(c) and c > 0 and np.array_equal(H, c * np.eye(n1)):
            opts["H0"] = c
        else:
            notes.append("H_0 is not a positive multiple of the identity: ignored (femot's BFGS model starts "
                         "from H0 * I, option H0)")
    return opts


def load_instance(path) -> dict:
    """Read an instance from a ``.mat`` or ``.npz`` file (see the module docstring).

    Reads femot's own variable names and those of the reference MATLAB code
    (``mu1_star``, ``pi_star``, ``mu1_0``, ``delta_0``, ``H_0``; module docstring).

    Parameters
    ----------
    path : str or os.PathLike
        An existing file with suffix ``.mat`` (MATLAB versions 4-7.2) or ``.npz``.

    Returns
    -------
    dict with the fields of :data:`REQUIRED_VARIABLES` and :data:`OPTIONAL_VARIABLES`
    (None when absent) and

    * ``path``;
    * ``names_used``: field -> the file variable it was read from, e.g.
      ``{"mu1_d": "mu1_star", ...}`` (also ``"Delta0": "delta_0"``, ``"H0": "H_0"``);
    * ``tr_options``: trust-region options implied by the file (``Delta0`` from
      ``delta_0``, ``H0`` from ``H_0``); see :func:`instance_options`;
    * ``unused``: file variables not read; ``notes``: remarks on what was read.

    Raises
    ------
    ValueError
        If a required variable (or its alias) is missing, if ``mu1_d`` and
        ``mu1_star`` (or ``pi_d`` and ``pi_star``, ``mu1_true`` and ``mu1_star``, ...)
        are both present with different values, or if a variable has the wrong kind.
        Shapes and values of the problem data are checked when the problem is built
        (:func:`problem_from_instance`).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> data = identification_instance(5, seed=0)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     save_instance(os.path.join(tmp, "five.npz"), data)
    ...     back = load_instance(os.path.join(tmp, "five.npz"))
    >>> bool(np.array_equal(back["c_d"], data["c_d"]))
    True
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"instance file {path!r} does not exist")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".mat":
        raw = _mat_variables(path)
    elif ext == ".npz":
        raw = _npz_variables(path)
    else:
        raise ValueError(f"instance file {path!r}: unknown extension {ext!r} (use .mat or .npz)")
    missing = [k for k in REQUIRED_VARIABLES if k not in raw and REFERENCE_ALIASES.get(k) not in raw]
    if missing:
        wanted = [f"{k} (or {REFERENCE_ALIASES[k]})" if k in REFERENCE_ALIASES else k for k in missing]
        raise ValueError(f"instance file {path!r} is missing the variable(s) {', '.join(wanted)}; required: "
                         f"{list(REQUIRED_VARIABLES)}, optional: {list(OPTIONAL_VARIABLES)}; "
                         f"found: {sorted(raw)}")
    conv = {}
    for k in REQUIRED_VARIABLES + OPTIONAL_VARIABLES + tuple(REFERENCE_ALIASES.values()):
        if k in raw:
            conv[k] = _as_vector(raw[k], k, path) if k in _VECTORS else _as_matrix(raw[k], k, path)
    names: dict[str, str] = {k: k for k in REQUIRED_VARIABLES + OPTIONAL_VARIABLES if k in conv}
    D = conv.get("D")
    masks = {"mu1_d": None if conv.get("D1") is None else np.asarray(conv["D1"]) != 0,
             "pi_d": None if D is None else (D.toarray() if sp.issparse(D) else np.asarray(D)) != 0}
    for field, alias in REFERENCE_ALIASES.items():
        if alias not in conv:
            continue
        truth = _TRUTH_OF[alias]
        if field in conv:
            # both present: they must agree where observed; then *_d observes, *_star is the truth
            a, b = conv[field], conv[alias]
            where = "where observed (on " + ("D1" if field == "mu1_d" else "D") + ")"
            if masks[field] is not None and getattr(masks[field], "shape", None) != a.shape:
                masks[field] = None  # the mask's shape is checked when the problem is built
            if _max_difference(a, b, masks[field]) > 1e-12 * max(_scale(a, b), 1e-300):
                raise ValueError(f"{path}: ambiguous file: both {field!r} and {alias!r} are present and differ "
                                 f"{where} (shapes {a.shape}, {b.shape}); remove one of them")
        else:
            conv[field] = conv[alias]
            names[field] = alias
        if truth in conv:
            if _max_difference(conv[truth], conv[alias], None) > 1e-12 * max(_scale(conv[truth], conv[alias]),
                                                                           1e-300):
                raise ValueError(f"{path}: ambiguous file: both {truth!r} and {alias!r} are present and differ; "
                                 "remove one of them")
        else:
            conv[truth] = conv[alias]
            names[truth] = alias
    notes: list[str] = []
    tr = _settings(raw, int(conv["c_d"].shape[0]), path, notes)
    if "Delta0" in tr:
        names["Delta0"] = "delta_0"
    if "H0" in tr:
        names["H0"] = "H_0"
    data = {"path": path}
    for k in REQUIRED_VARIABLES + OPTIONAL_VARIABLES:
        data[k] = conv.get(k)
    read = set(names.values()) | set(SETTING_VARIABLES)
    unused = sorted(k for k in raw if k not in read)
    if unused:
        notes.append(f"not used: {', '.join(unused)}")
    order = REQUIRED_VARIABLES + OPTIONAL_VARIABLES + ("Delta0", "H0")
    data.update(names_used={k: names[k] for k in order if k in names}, tr_options=tr, unused=unused, notes=notes)
    return data


def instance_options(data: dict, options=None) -> dict:
    """Trust-region options for an instance: the file's settings, overridden by ``options``.

    ``data["tr_options"]`` (from :func:`load_instance`: ``Delta0`` from the file's
    ``delta_0``, ``H0`` from ``H_0``) is the base; every key of ``options`` wins.

    Parameters
    ----------
    data : dict
        Instance dict; its ``tr_options`` entry (absent or None: no file settings) is used.
    options : dict, optional
        Options of :func:`femot.optim.minimize_simplex` given by the user; they override
        the file's settings.

    Returns
    -------
    dict
        The merged options (a new dict; neither input is modified).
    """
    out = dict(data.get("tr_options") or {})
    if options:
        out.update(options)
    return out


def save_instance(path, data: dict) -> None:
    """Write an instance to ``.npz`` (sparse variables as COO groups) or ``.mat``.

    Only the variables of :data:`REQUIRED_VARIABLES` and :data:`OPTIONAL_VARIABLES` that
    are not None are written; :func:`load_instance` reads the file back.  Missing parent
    directories are created.

    Parameters
    ----------
    path : str or os.PathLike
        Target file; the suffix (``.npz`` or ``.mat``) selects the format.
    data : dict
        Instance dict holding at least the required variables.

    Raises
    ------
    ValueError
        If the suffix is neither ``.npz`` nor ``.mat``, or a required variable is missing.

    Examples
    --------
    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     save_instance(os.path.join(tmp, "five.mat"), identification_instance(5, seed=0))
    ...     print(sorted(os.listdir(tmp)))
    ['five.mat']
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npz", ".mat"):
        raise ValueError(f"instance file {path!r}: unknown extension {ext!r} (use .mat or .npz)")
    missing = [k for k in REQUIRED_VARIABLES if data.get(k) is None]
    if missing:
        raise ValueError(f"instance is missing the variable(s) {missing}")
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    out = {}
    for k in REQUIRED_VARIABLES + OPTIONAL_VARIABLES:
        v = data.get(k)
        if v is None:
            continue
        if ext == ".mat":
            out[k] = sp.csc_matrix(v) if sp.issparse(v) else np.asarray(v, dtype=float)
        elif sp.issparse(v):
            c = sp.coo_matrix(v)
            out.update({f"{k}__data": c.data, f"{k}__row": c.row, f"{k}__col": c.col,
                        f"{k}__shape": np.array(c.shape)})
        else:
            out[k] = np.asarray(v)
    if ext == ".mat":
        from scipy.io import savemat

        savemat(path, out)
    else:
        arrays: dict = out
        np.savez(path, **arrays)


# --------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------
#: Numeric and text columns of the iteration history (see SimplexTRResult.history).
_HISTORY_NUMERIC = ("k", "f", "theta", "psi", "Delta", "rho", "step_norm", "pred", "cauchy", "nfev", "accepted")
_HISTORY_TEXT = ("model", "step")


def _history_columns(history):
    """The per-iteration records as columns: floats (NaN where a record has None) and strings."""
    cols = {}
    for k in _HISTORY_NUMERIC:
        cols[k] = np.array([np.nan if h.get(k) is None else float(h[k]) for h in history], dtype=float)
    for k in _HISTORY_TEXT:
        cols[k] = [("" if h.get(k) is None else str(h[k])) for h in history]
    return cols


def save_result(path, result) -> str:
    """Write an identification result for MATLAB (``.mat``) or NumPy (any other suffix).

    ``.mat`` (``scipy.io.savemat``, MATLAB 5 format, readable by ``load`` in MATLAB and
    ``scipy.io.loadmat``) holds

    * ``mu1`` (n1 x 1), ``alpha`` (n1 x 1), ``beta`` (n2 x 1), ``pi`` (n1 x n2 sparse),
    * scalars ``J``, ``gamma``, ``epsilon``, ``lambda``, ``nit``, ``nfev``,
      ``stationarity``, ``status``, ``success`` (logical), text ``message``,
      ``stationarity_measure``,
    * ``history``: a struct of per-iteration columns ``k, f, theta, psi, Delta, rho,
      step_norm, pred, cauchy, nfev, accepted`` (double, NaN where not defined) and
      ``model, step`` (cell arrays of text); the last row is the stationarity at the
      returned point.

    Any other suffix writes ``numpy.savez`` (``.npz`` appended unless present) with the
    same variables, except ``pi`` dense, the history as ``history_<column>`` arrays,
    and ``eps``, ``lam`` instead of ``epsilon``, ``lambda``.  Missing parent directories
    are created.

    Parameters
    ----------
    path : str or os.PathLike
        Target file; ``.mat`` selects the MATLAB format.
    result : IdentificationResult
        Result of :meth:`femot.problems.TransportIdentification.solve`.

    Returns
    -------
    str
        The path written (with ``.npz`` appended where needed).
    """

    path = os.fspath(path)
    r = result
    hist = _history_columns(r.get("history") or [])
    meta = {"J": float(r.J), "gamma": float(r.gamma), "nit": int(r.nit), "nfev": int(r.nfev),
            "stationarity": float(r.stationarity), "status": int(r.status), "success": bool(r.success),
            "message": str(r.message), "stationarity_measure": str(r.stationarity_measure)}
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    if os.path.splitext(path)[1].lower() == ".mat":
        from scipy.io import savemat

        col = {k: v.reshape(-1, 1) for k, v in hist.items() if k in _HISTORY_NUMERIC}
        for k in _HISTORY_TEXT:
            cell = np.empty((len(hist[k]), 1), dtype=object)
            cell[:, 0] = hist[k]
            col[k] = cell
        out = {"mu1": np.asarray(r.mu1, dtype=float).reshape(-1, 1), "pi": sp.csc_matrix(r.plan, dtype=float),
               "alpha": np.asarray(r.alpha, dtype=float).reshape(-1, 1),
               "beta": np.asarray(r.beta, dtype=float).reshape(-1, 1),
               "epsilon": float(r.eps), "lambda": float(r.lam), "history": col, **meta}
        for k in ("nit", "nfev", "status"):  # MATLAB's default numeric class
            out[k] = float(out[k])
        savemat(path, out, do_compression=True)
        return path
    out = {"mu1": np.asarray(r.mu1, dtype=float), "pi": sp.csr_matrix(r.plan).toarray(),
           "alpha": np.asarray(r.alpha, dtype=float), "beta": np.asarray(r.beta, dtype=float),
           "eps": float(r.eps), "lam": float(r.lam), **meta}
    out.update({f"history_{k}": np.asarray(v) for k, v in hist.items()})
    if not path.endswith(".npz"):
        path = path + ".npz"
    np.savez(path, **out)
    return path
