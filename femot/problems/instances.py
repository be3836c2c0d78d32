"""Instances of the transportation identification problem: generator, loaders, writer.

An instance is a dict with the data of Part III §4 (problem (TI)):

* ``c_d`` (n1, n2) cost, ``mu2_d`` (n2,) known target marginal,
* ``mu1_d`` (n1,) observed source marginal, ``pi_d`` (n1, n2) observed plan,
* optional ``D`` (n1, n2) and ``D1`` (n1,) 0/1 observation masks (default: everything),
  ``mu1_0`` (n1,) starting point, and, for generated data, the truth
  ``mu1_true``, ``pi_true``.

Files: MATLAB ``.mat`` (read with ``scipy.io.loadmat``; versions 4-7.2) or NumPy
``.npz``.  Every variable may be dense or sparse, vectors as rows or columns.  A
``.mat`` file stores sparse matrices natively; in an ``.npz`` a sparse variable X is
stored as the group ``X__data, X__row, X__col, X__shape`` (COO triplets) or
``X__data, X__indices, X__indptr, X__shape`` (CSR; add ``X__format = 'csc'`` for CSC).
"""
from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

from femot.problems.identification import TransportIdentification, band_mask

__all__ = [
    "REQUIRED_VARIABLES",
    "OPTIONAL_VARIABLES",
    "identification_instance",
    "experiment2_observed_rows",
    "load_instance",
    "save_instance",
    "problem_from_instance",
]

REQUIRED_VARIABLES = ("c_d", "mu2_d", "mu1_d", "pi_d")
OPTIONAL_VARIABLES = ("D", "D1", "mu1_0", "mu1_true", "pi_true")
_VECTORS = {"mu2_d", "mu1_d", "D1", "mu1_0", "mu1_true"}


# --------------------------------------------------------------------------
# generator (Part III §4.2)
# --------------------------------------------------------------------------
def experiment2_observed_rows(n: int) -> np.ndarray:
    """D1 of Part III §4.2, experiment 2: rows {9, ..., 15} (counted from 1) for n = 25.

    For other n the same fraction of Omega_1 is used: rows round(9n/25), ...,
    round(15n/25) counted from 1.  Returns 0-based indices.
    """
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    lo = max(1, int(round(9 * n / 25)))
    hi = min(n, max(lo, int(round(15 * n / 25))))
    return np.arange(lo - 1, hi)


def identification_instance(n: int = 25, seed: int = 0, experiment: int = 1, *, occupancy: float = 0.5,
                            bandwidth: int = 3) -> dict:
    """A random instance generated as in Part III §4.2.

    ``n1 = n2 = n``, ``c_ij = |i - j|^2``, marginals ``mu1*``, ``mu2_d`` nonnegative,
    about ``occupancy`` occupied and summing to 1, and ``pi*`` an exact optimal plan
    from the LP (HiGHS).  Experiment 1: ``D = Omega``, ``D1 = Omega_1``,
    ``mu1_d = mu1*``, ``pi_d = pi*``.  Experiment 2: ``D1`` from
    :func:`experiment2_observed_rows`, ``D`` the band ``|i - j| <= bandwidth`` and the
    observations are the restrictions of the truth to them.
    """
    from femot.core.exact import exact_ot
    from femot.core.instances import hitchcock_instance

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
    """Build a :class:`TransportIdentification` from an instance dict."""
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


def load_instance(path) -> dict:
    """Read an instance from a ``.mat`` or ``.npz`` file (see the module docstring).

    Missing required variables raise ValueError naming them; shapes and values are
    checked when the problem is built (:func:`problem_from_instance`).
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
    missing = [k for k in REQUIRED_VARIABLES if k not in raw]
    if missing:
        raise ValueError(f"instance file {path!r} is missing the variable(s) {missing}; required: "
                         f"{list(REQUIRED_VARIABLES)}, optional: {list(OPTIONAL_VARIABLES)}; "
                         f"found: {sorted(raw)}")
    data = {"path": path}
    for k in REQUIRED_VARIABLES + OPTIONAL_VARIABLES:
        if k not in raw:
            data[k] = None
            continue
        data[k] = _as_vector(raw[k], k, path) if k in _VECTORS else _as_matrix(raw[k], k, path)
    return data


def save_instance(path, data: dict) -> None:
    """Write an instance to ``.npz`` (sparse variables as COO groups) or ``.mat``."""
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
        np.savez(path, **out)
