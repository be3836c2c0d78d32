"""Input checks shared by all of femot.

Every public entry point validates its arguments with these helpers so that bad
input fails early with a ``ValueError`` that names the offending argument.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "as_vector",
    "as_nonnegative_vector",
    "as_positive_weights",
    "as_finite_matrix",
    "check_positive_scalar",
    "check_nonnegative_scalar",
    "check_equal_mass",
    "mass_rtol",
    "check_strict_vectors",
    "check_qrot_data",
    "check_gamma_resolves_cost",
    "floor_acceptance_message",
    "check_dense_memory",
]


def as_vector(x, name: str, *, length: int | None = None) -> np.ndarray:
    """Return ``x`` as a finite 1D float array, flattening row/column vectors.

    Parameters
    ----------
    x : array_like
        The data; a 2D array with one row or one column is flattened.
    name : str
        Name of the argument, used in the error messages.
    length : int or None, optional
        Required number of entries; None (default) accepts any nonzero length.

    Returns
    -------
    numpy.ndarray
        The entries as a 1D ``float`` array.

    Raises
    ------
    ValueError
        If ``x`` is complex or not numeric, not a vector, empty, of the wrong length, or holds NaN/inf.
    """
    if np.iscomplexobj(x):  # a cast to float would drop the imaginary part with only a warning
        raise ValueError(f"{name} must be real, got complex values")
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric vector: {exc}") from None
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1D vector, got an array of shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} must not be empty")
    if length is not None and a.size != length:
        raise ValueError(f"{name} has length {a.size}, expected {length}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite entries")
    return a


def as_nonnegative_vector(x, name: str, *, length: int | None = None) -> np.ndarray:
    """:func:`as_vector` with no negative entry (a discrete measure or density); the ValueError names the
    first smallest entry."""
    a = as_vector(x, name, length=length)
    if np.any(a < 0):
        i = int(np.argmin(a))
        raise ValueError(f"{name} must be nonnegative; {name}[{i}] = {a[i]:.3g}")
    return a


def as_positive_weights(x, name: str, length: int) -> np.ndarray:
    """Quadrature weights of ``length`` entries: ones when ``x`` is None, else :func:`as_vector` with every entry
    ``> 0`` (the ValueError names the first smallest entry)."""
    if x is None:
        return np.ones(length)
    a = as_vector(x, name, length=length)
    if np.any(a <= 0):
        i = int(np.argmin(a))
        raise ValueError(f"{name} must be strictly positive; {name}[{i}] = {a[i]:.3g}")
    return a


def as_finite_matrix(c, name: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A finite 2D float array (C-contiguous) of the given shape.

    Parameters
    ----------
    c : array_like
        The matrix (e.g. a dense cost matrix).
    name : str
        Name of the argument, used in the error messages.
    shape : tuple of int or None, optional
        Required shape ``(n1, n2)``; None (default) accepts any 2D shape.

    Returns
    -------
    numpy.ndarray
        C-contiguous ``float`` array.

    Raises
    ------
    ValueError
        If ``c`` is not numeric, not 2D, of the wrong shape, or holds NaN/inf.
    """
    if np.iscomplexobj(c):
        raise ValueError(f"{name} must be real, got complex values")
    try:
        a = np.ascontiguousarray(c, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric matrix: {exc}") from None
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2D array, got shape {a.shape}")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"{name} has shape {a.shape}, expected {tuple(shape)}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite entries")
    return a


def check_positive_scalar(x, name: str) -> float:
    """``float(x)``, checked finite and ``> 0`` (e.g. a regularization ``gamma``); ValueError naming ``name``."""
    return _finite_scalar(x, name, strict=True)


def check_nonnegative_scalar(x, name: str) -> float:
    """``float(x)``, checked finite and ``>= 0`` (e.g. a tolerance); ValueError naming ``name``."""
    return _finite_scalar(x, name, strict=False)


def _finite_scalar(x, name: str, strict: bool) -> float:
    """``float(x)``, checked finite and ``> 0`` (``strict``) or ``>= 0``."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {x!r}") from None
    if not np.isfinite(v) or v < 0 or (strict and v == 0):
        raise ValueError(f"{name} must be a {'positive' if strict else 'nonnegative'} finite number, got {x!r}")
    return v


def mass_rtol(*inputs, base: float = 1e-9) -> float:
    """Relative tolerance of a mass comparison for data given in ``inputs``' dtypes.

    ``base`` for double precision (and for lists, integers, None).  A vector
    stored in a lower precision (float32, float16) carries a relative rounding
    of ``eps/2`` per entry, and normalizing it in that precision adds about
    ``log2(n) eps/2`` more to its mass, so two such vectors normalized to the
    same mass can differ by far more than 1e-9 (float32: ~1e-7).  The
    tolerance is then ``16 eps`` of the coarsest floating input (float32:
    1.9e-6), which still rejects any mass mismatch that is not rounding.

    Parameters
    ----------
    *inputs : object
        The data as the caller received it (arrays, lists, None); only the dtype of
        floating numpy arrays/scalars is used.
    base : float, optional
        Tolerance for double precision data (default ``1e-9``).

    Returns
    -------
    float
        ``max(base, 16 * eps)`` over the floating dtypes of ``inputs``.
    """
    rtol = float(base)
    for x in inputs:
        dt = getattr(x, "dtype", None)
        if dt is not None and np.issubdtype(dt, np.floating):
            rtol = max(rtol, 16.0 * float(np.finfo(dt).eps))
    return rtol


_EPS_HINT = " (use eps > 0 for unbalanced marginals)"


def check_equal_mass(m1, w1, m2, w2, *, names=("mu1", "mu2"), rtol: float = 1e-9,
                     hint: str = _EPS_HINT) -> np.ndarray:
    """Raise unless ``sum(w1*m1) == sum(w2*m2)`` up to ``rtol``; return ``m2`` balanced.

    The returned copy of ``m2`` is rescaled to the mass of ``m1`` exactly (a
    relative change of at most ``rtol``), so that the marginal equations are
    consistent in double precision.

    Parameters
    ----------
    m1, m2 : array_like
        Nodal values of the two marginals, shapes ``(n1,)`` and ``(n2,)``.
    w1, w2 : array_like
        Quadrature weights matching ``m1`` and ``m2``; the masses are ``w1 @ m1`` and ``w2 @ m2``.
    names : tuple of str, optional
        Names of the two marginals in the error message (default ``("mu1", "mu2")``).
    rtol : float, optional
        Relative tolerance of the comparison (default ``1e-9``; see :func:`mass_rtol`).
    hint : str, optional
        Text ending the error message; the default suggests ``eps > 0`` (callers without an
        ``eps`` parameter pass their own).

    Returns
    -------
    numpy.ndarray
        ``m2`` as a float array, rescaled by ``(w1 @ m1) / (w2 @ m2)`` when both masses are
        positive and differ.

    Raises
    ------
    ValueError
        If the relative difference of the two masses exceeds ``rtol``.
    """
    a = float(np.dot(w1, m1))
    b = float(np.dot(w2, m2))
    if abs(a - b) > rtol * max(abs(a), abs(b), 1e-300):
        raise ValueError(
            f"{names[0]} and {names[1]} must carry equal mass"
            f"{' when eps = 0' if hint == _EPS_HINT else ''}: "
            f"{a:.12g} != {b:.12g} (relative difference {abs(a - b) / max(abs(a), abs(b)):.2g} > {rtol:.2g})"
            f"{hint}"
        )
    m2 = np.asarray(m2, dtype=float)
    if a > 0 and b > 0 and a != b:
        m2 = m2 * (a / b)
    return m2


def check_strict_vectors(**vectors) -> None:
    """Refuse arguments that are not one-dimensional (no silent flattening of ``(n, 1)`` arrays).

    Parameters
    ----------
    **vectors : array_like
        The arguments, by name; None values are skipped.

    Raises
    ------
    ValueError
        Naming the first argument that is complex or not one-dimensional.
    """
    for name, x in vectors.items():
        if x is None:
            continue
        if np.iscomplexobj(x):
            raise ValueError(f"{name} must be real, got complex values")
        shape = np.shape(x)
        if len(shape) != 1:
            raise ValueError(f"{name} must be a 1D vector, got shape {shape}")


def check_gamma_resolves_cost(gamma: float, cmax: float, m1, m2, w1, w2) -> None:
    """Refuse a gamma so large that the cost vanishes in the rounding of the potentials.

    The regularized plan ``pi = (alpha + beta - c)_+ / gamma`` carries densities up
    to ``max(mu)``, so ``z = alpha + beta - c`` reaches ``gamma * max(mu) / W``
    (``W`` the smaller total weight).  When ``u`` times that exceeds ``max|c|``
    (``u`` the unit roundoff), ``c`` is lost when ``z`` is formed: the computed
    plan would not depend on the cost, and the dual's quadratic terms approach
    overflow.  The mirror image of the tiny-gamma precision limit (status 4 of
    ``solve_qrot``).

    Parameters
    ----------
    gamma : float
        Regularization parameter (> 0).
    cmax : float
        ``max |c_ij|`` (no check when 0: a zero cost is resolved by any gamma).
    m1, m2 : numpy.ndarray
        The nonnegative densities.
    w1, w2 : numpy.ndarray
        Their positive weights.

    Raises
    ------
    ValueError
        Naming gamma, the scale it produces and the largest admissible gamma.
    """
    mmax = max(float(np.max(m1, initial=0.0)), float(np.max(m2, initial=0.0)))
    W = min(float(np.sum(w1)), float(np.sum(w2)))
    if not (cmax > 0 and mmax > 0 and W > 0):
        return
    u = float(np.finfo(float).eps)
    zscale = gamma * mmax / W
    if not (u * zscale <= cmax):
        gmax = cmax * W / (u * mmax)
        raise ValueError(
            f"gamma = {gamma:.3g} is too large for double precision at this cost scale: plan entries need "
            f"z = gamma * max(mu) / W ~ {zscale:.3g}, and the cost (max |c| = {cmax:.3g}) vanishes in its rounding "
            f"(unit roundoff {u:.2g}); use gamma <= {gmax:.3g}")


def check_qrot_data(mu1, mu2, gamma: float, cmax: float, m1, m2, w1, w2) -> None:
    """The checks of ``solve_qrot`` beyond each argument's own: strict shapes and the range of gamma.

    Parameters
    ----------
    mu1, mu2 : array_like
        The marginals as given (must be one-dimensional and real).
    gamma : float
        Regularization parameter.
    cmax : float
        ``max |c_ij|``.
    m1, m2, w1, w2 : numpy.ndarray
        The validated densities and weights.

    Raises
    ------
    ValueError
        See :func:`check_strict_vectors` and :func:`check_gamma_resolves_cost`.
    """
    check_strict_vectors(mu1=mu1, mu2=mu2)
    check_gamma_resolves_cost(gamma, cmax, m1, m2, w1, w2)


def floor_acceptance_message(residual: float, tol: float, floor: float) -> str:
    """Message of a solve accepted at the rounding floor rather than at ``tol``.

    Parameters
    ----------
    residual, tol, floor : float
        The final residual, the requested tolerance and the rounding floor.

    Returns
    -------
    str
        ``"accepted at the double-precision floor: residual R > tol T, floor F"``.
    """
    return (f"accepted at the double-precision floor: residual {residual:.3g} > tol {tol:.3g}, "
            f"floor {floor:.3g}")


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import os

        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"  # (not reached)


def check_dense_memory(n1: int, n2: int, arrays: int, what: str, avoid: str, available: int | None = None) -> None:
    """Refuse, before allocating, a computation whose dense ``n1 x n2`` arrays cannot fit in memory.

    Parameters
    ----------
    n1, n2 : int
        Shape of the dense arrays.
    arrays : int
        How many float64 arrays of that shape the computation holds at once (at least).
    what : str
        The request, for the message (e.g. ``"--random 200000"``).
    avoid : str
        The option that avoids the allocation (e.g. a matrix-free cost, a smaller n).
    available : int or None, optional
        Available bytes; None (default) reads ``MemAvailable`` of ``/proc/meminfo``.

    Raises
    ------
    ValueError
        With the memory needed and available and the option that avoids it.
    """
    need = float(n1) * float(n2) * 8.0 * arrays
    avail = _available_memory() if available is None else available
    if avail is not None and need > avail:
        raise ValueError(f"{what} needs at least {_bytes(need)} of memory ({arrays} dense {n1} x {n2} float64 "
                         f"arrays) but {_bytes(avail)} are available; {avoid}")
