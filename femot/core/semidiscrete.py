"""Exact semi-discrete optimal transport in 2D: a density on a polygon or triangle mesh against Diracs.

``W_2^2`` from the concave dual over Laguerre (power) cells clipped to the domain, maximized by the
damped Newton method of Kitagawa, Merigot and Thibert (J. Eur. Math. Soc. 21 (2019)); the method
is described in docs/core.md, section 5.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import OptimizeResult
from scipy.sparse.linalg import splu
from scipy.spatial import ConvexHull, cKDTree

from femot._validation import as_nonnegative_vector, as_vector

__all__ = ["SemiDiscreteDomain", "LaguerreCells", "laguerre_cells", "semidiscrete_dual", "semidiscrete_ot"]

# Dunavant's 6-point rule, exact for polynomials of degree 4 on a triangle (barycentric, weights sum to 1)
_QA, _QB = 0.445948490915965, 0.091576213509771
_QBARY = np.array([[1 - 2 * _QA, _QA, _QA], [_QA, 1 - 2 * _QA, _QA], [_QA, _QA, 1 - 2 * _QA],
                   [1 - 2 * _QB, _QB, _QB], [_QB, 1 - 2 * _QB, _QB], [_QB, _QB, 1 - 2 * _QB]])
_QW = np.array([0.223381589678011] * 3 + [0.109951743655322] * 3)


def _points2(x, name):
    a = np.asarray(x, dtype=float)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name} must have shape (n, 2), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite entries")
    return a


@dataclass
class SemiDiscreteDomain:
    """A domain ``D`` in the plane with a nonnegative piecewise linear density, as convex pieces.

    Build it with :meth:`polygon` (a convex polygon, constant density) or :meth:`triangles`
    (a triangle mesh with a P0 or P1 density; any, also non-convex, polygonal domain).

    Attributes
    ----------
    pieces : ndarray (npieces, k, 2)
        Counter-clockwise vertices of the convex pieces (all with ``k`` vertices).
    normals, offsets : ndarray (npieces, k, 2), (npieces, k)
        Outward half-planes ``normals . x <= offsets`` of each piece.
    coef : ndarray (npieces, 3)
        Density ``c0 + c1 x1 + c2 x2`` on each piece.
    mass : float
        ``rho(D)``.
    lo, hi : ndarray (2,)
        Bounding box of ``D``.
    """

    pieces: np.ndarray
    normals: np.ndarray
    offsets: np.ndarray
    coef: np.ndarray
    mass: float
    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def _from_pieces(cls, P, coef):
        nxt = np.roll(P, -1, axis=1)
        d = nxt - P
        normals = np.stack([d[..., 1], -d[..., 0]], axis=-1)
        offsets = np.einsum("pkd,pkd->pk", normals, P)
        # mass: density at the centroid times the area is exact for a linear density on a triangle;
        # polygons are split in a fan
        mass = 0.0
        for j in range(1, P.shape[1] - 1):
            a, b, c = P[:, 0], P[:, j], P[:, j + 1]
            area = 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))
            cen = (a + b + c) / 3
            mass += float(np.sum(area * (coef[:, 0] + coef[:, 1] * cen[:, 0] + coef[:, 2] * cen[:, 1])))
        flat = P.reshape(-1, 2)
        return cls(P, normals, offsets, coef, mass, flat.min(axis=0), flat.max(axis=0))

    @classmethod
    def polygon(cls, vertices, density: float = 1.0) -> SemiDiscreteDomain:
        """A convex polygon with constant density (Lebesgue measure for ``density = 1``).

        Parameters
        ----------
        vertices : array_like (k, 2)
            Vertices in order (either orientation), k >= 3.
        density : float
            Positive constant density.

        Raises
        ------
        ValueError
            If ``vertices`` is not a convex polygon with nonzero area or ``density`` is not positive.
        """
        V = _points2(vertices, "vertices")
        if V.shape[0] < 3:
            raise ValueError("vertices must have at least 3 rows")
        if not (np.isfinite(density) and density > 0):
            raise ValueError(f"density must be positive, got {density!r}")
        d = np.roll(V, -1, axis=0) - V
        cross = d[:, 0] * np.roll(d, -1, axis=0)[:, 1] - d[:, 1] * np.roll(d, -1, axis=0)[:, 0]
        if np.all(cross <= 0):
            V, cross = V[::-1].copy(), -cross
        if not np.all(cross >= 0) or cross.max() <= 0:
            raise ValueError("vertices must be a convex polygon with nonzero area")
        return cls._from_pieces(V[None], np.array([[float(density), 0.0, 0.0]]))

    @classmethod
    def triangles(cls, points, triangles, density=None, kind: str = "P1") -> SemiDiscreteDomain:
        """A triangle mesh with density 1, a P0 density (one value per triangle) or a P1 density.

        Parameters
        ----------
        points : array_like (np, 2)
            Vertex coordinates.
        triangles : array_like of int (nt, 3)
            Vertex indices of the triangles (either orientation).
        density : array_like or None
            None (density 1), nodal values (length np, ``kind="P1"``) or one value per triangle
            (length nt, ``kind="P0"``); nonnegative.
        kind : {"P1", "P0"}

        Raises
        ------
        ValueError
            If an argument has the wrong shape, an index is out of range, a triangle is degenerate or
            the density is negative.
        """
        X = _points2(points, "points")
        T = np.asarray(triangles)
        if T.ndim != 2 or T.shape[1] != 3 or not np.issubdtype(T.dtype, np.integer):
            raise ValueError(f"triangles must be an integer array of shape (nt, 3), got {T.shape}")
        if T.size == 0 or T.min() < 0 or T.max() >= X.shape[0]:
            raise ValueError("triangles must index rows of points")
        P = X[T]
        d1, d2 = P[:, 1] - P[:, 0], P[:, 2] - P[:, 0]
        det = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
        if np.any(det == 0):
            raise ValueError("triangles contains degenerate triangles")
        flip = det < 0
        P[flip] = P[flip][:, ::-1]
        nt = T.shape[0]
        coef = np.zeros((nt, 3))
        if density is None:
            coef[:, 0] = 1.0
        elif kind == "P0":
            coef[:, 0] = as_nonnegative_vector(density, "density", length=nt)
        elif kind == "P1":
            f = as_nonnegative_vector(density, "density", length=X.shape[0])[T]
            f[flip] = f[flip][:, ::-1]
            # c0 + c.x interpolating the three nodal values
            A = np.concatenate([np.ones((nt, 3, 1)), P], axis=2)
            coef = np.linalg.solve(A, f[..., None])[..., 0]
        else:
            raise ValueError(f"kind must be 'P0' or 'P1', got {kind!r}")
        return cls._from_pieces(P, coef)

    def blended(self, t: float) -> SemiDiscreteDomain:
        """The density ``(1 - t) rho + t rho(D) / |D|`` (same mass; ``t = 1``: uniform)."""
        P = self.pieces
        nxt = np.roll(P, -1, axis=1)
        area = 0.5 * float(np.sum(P[..., 0] * nxt[..., 1] - nxt[..., 0] * P[..., 1]))
        coef = (1 - t) * self.coef
        coef[:, 0] += t * self.mass / area
        return SemiDiscreteDomain(P, self.normals, self.offsets, coef, self.mass, self.lo, self.hi)

    def density(self, x) -> np.ndarray:
        """The density at points ``x`` (n, 2); 0 outside ``D`` (on shared edges: one of the pieces' values)."""
        x = _points2(x, "x")
        out = np.zeros(x.shape[0])
        inside = np.all(np.einsum("pkd,nd->npk", self.normals, x) <= self.offsets[None] + 1e-14, axis=2)
        n_idx, p_idx = np.nonzero(inside)
        c = self.coef[p_idx]
        out[n_idx] = c[:, 0] + c[:, 1] * x[n_idx, 0] + c[:, 2] * x[n_idx, 1]
        return out


@dataclass
class LaguerreCells:
    """The Laguerre cells of weighted sites clipped to a :class:`SemiDiscreteDomain`.

    Attributes
    ----------
    masses : ndarray (n,)
        ``rho(L_i)``.
    moments : ndarray (n,)
        ``int_{L_i} |x - a_i|^2 rho(x) dx``.
    laplacian : scipy.sparse.csr_matrix (n, n)
        ``d masses / d psi``: off-diagonal ``-rho-length(L_i cap L_j) / (2 |a_i - a_j|)``, diagonal
        minus the row sum of the off-diagonal (positive semidefinite).
    polygons : list of ndarray
        Counter-clockwise vertices of the pieces ``L_i cap piece`` (only with ``polygons=True``).
    owners : ndarray of int
        The site of each polygon.
    """

    masses: np.ndarray
    moments: np.ndarray
    laplacian: sp.csr_matrix | None
    polygons: list
    owners: np.ndarray


def _power_cells(sites, psi, lo, hi):
    """Counter-clockwise vertices and edge labels of the (bounded) power cells, grouped by vertex count.

    Yields ``(ids, X, lab, cnt)``: site indices, padded vertices ``X[k, j]``, the neighbour across the
    edge from vertex j to j+1 (-1: none) and vertex counts.
    """
    n = sites.shape[0]
    box_lo = np.minimum(lo, sites.min(axis=0))
    box_hi = np.maximum(hi, sites.max(axis=0))
    centre, diam = 0.5 * (box_lo + box_hi), float(np.linalg.norm(box_hi - box_lo)) + 1.0
    # far sites: |x - f| > diam >= |x - a_k| for x in the box, and psi_f = max psi, so their cells miss it
    far = centre + 4.0 * diam * np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    A = np.vstack([sites, far])
    w = np.concatenate([psi, np.full(4, psi.max())])
    z = np.einsum("nd,nd->n", A - centre, A - centre) - w  # lifting about the centre (better conditioned)
    hull = ConvexHull(np.column_stack([A - centre, z]), qhull_options="Qt")
    lower = hull.equations[:, 2] < 0
    F = hull.simplices[lower]
    Pa, Pb, Pc = A[F[:, 0]], A[F[:, 1]], A[F[:, 2]]
    det = (Pb[:, 0] - Pa[:, 0]) * (Pc[:, 1] - Pa[:, 1]) - (Pb[:, 1] - Pa[:, 1]) * (Pc[:, 0] - Pa[:, 0])
    keep = det != 0
    F, Pa, Pb, Pc, det = F[keep], Pa[keep], Pb[keep], Pc[keep], det[keep]
    flip = det < 0
    F[flip] = F[flip][:, [0, 2, 1]]
    Pb, Pc = A[F[:, 1]], A[F[:, 2]]
    det = np.abs(det)
    # power centre: equal power distance to the three sites, relative to Pa (2x2 solve by Cramer's rule)
    u, v = Pb - Pa, Pc - Pa
    hu = np.einsum("nd,nd->n", u, u) - w[F[:, 1]] + w[F[:, 0]]
    hv = np.einsum("nd,nd->n", v, v) - w[F[:, 2]] + w[F[:, 0]]
    cx = (hu * v[:, 1] - hv * u[:, 1]) / (2 * det)
    cy = (u[:, 0] * hv - v[:, 0] * hu) / (2 * det)
    C = Pa + np.column_stack([cx, cy])
    # incidences (site, triangle); the cell's vertices follow the triangles around the site
    nf = F.shape[0]
    site = F.ravel()
    tri = np.repeat(np.arange(nf), 3)
    label = F[:, [2, 0, 1]].ravel()  # for (i, p, q) counter-clockwise, the next triangle shares edge (i, q)
    real = site < n
    site, tri, label = site[real], tri[real], label[real]
    label = np.where(label < n, label, -1)
    cen = (Pa + Pb + Pc)[tri] / 3 - A[site]
    ang = np.arctan2(cen[:, 1], cen[:, 0])
    order = np.lexsort((ang, site))
    site, tri, label = site[order], tri[order], label[order]
    cnt = np.bincount(site, minlength=n)
    start = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    pos = np.arange(site.size) - start[site]
    bounds = [3, 8, 16, 32, 64]
    for k in range(len(bounds) + 1):
        lo_c = bounds[k - 1] + 1 if k else 3
        hi_c = bounds[k] if k < len(bounds) else int(cnt.max(initial=0))
        ids = np.flatnonzero((cnt >= lo_c) & (cnt <= hi_c))
        if ids.size == 0:
            continue
        V = int(cnt[ids].max())
        rank = np.full(n, -1)
        rank[ids] = np.arange(ids.size)
        sel = rank[site] >= 0
        X = np.zeros((ids.size, V, 2))
        lab = np.full((ids.size, V), -1, dtype=np.int64)
        X[rank[site[sel]], pos[sel]] = C[tri[sel]]
        lab[rank[site[sel]], pos[sel]] = label[sel]
        yield ids, X, lab, cnt[ids]


def _clip(X, lab, cnt, nrm, off):
    """Sutherland-Hodgman: clip padded convex polygons by one half-plane ``nrm . x <= off`` each.

    New edges along the clipping line get label -1; the others keep their label.
    """
    N, V, _ = X.shape
    j = np.arange(V)[None, :]
    valid = j < cnt[:, None]
    nxt = np.where(j + 1 < cnt[:, None], j + 1, 0)
    s = X[..., 0] * nrm[:, 0, None] + X[..., 1] * nrm[:, 1, None] - off[:, None]
    sn = np.take_along_axis(s, nxt, axis=1)
    Xn = np.take_along_axis(X, nxt[..., None], axis=1)
    ins, insn = s <= 0, sn <= 0
    cross = valid & (ins != insn)
    den = np.where(cross, s - sn, 1.0)
    t = np.where(cross, s / den, 0.0)
    P = X + t[..., None] * (Xn - X)
    Y = np.empty((N, 2 * V, 2))
    Y[:, 0::2], Y[:, 1::2] = X, P
    L = np.empty((N, 2 * V), dtype=np.int64)
    L[:, 0::2], L[:, 1::2] = lab, np.where(ins, -1, lab)  # leaving: along the clip line; entering: old edge
    M = np.empty((N, 2 * V), dtype=bool)
    M[:, 0::2], M[:, 1::2] = valid & ins, cross
    newcnt = M.sum(axis=1)
    order = np.argsort(~M, axis=1, kind="stable")
    W = max(int(newcnt.max(initial=0)), 1)
    order = order[:, :W]
    return np.take_along_axis(Y, order[..., None], axis=1), np.take_along_axis(L, order, axis=1), newcnt


def _integrate(X, cnt, a, coef):
    """Mass and ``int |x - a|^2 rho`` over padded convex polygons (fan triangulation, exact rule)."""
    N, V, _ = X.shape
    mass = np.zeros(N)
    mom = np.zeros(N)
    Z = X - a[:, None, :]
    base = coef[:, 0] + coef[:, 1] * a[:, 0] + coef[:, 2] * a[:, 1]  # density at a + z is base + c . z
    for j in range(1, V - 1):
        ok = j + 1 < cnt
        if not ok.any():
            break
        p, q, r = Z[:, 0], Z[:, j], Z[:, j + 1]
        area = 0.5 * ((q[:, 0] - p[:, 0]) * (r[:, 1] - p[:, 1]) - (q[:, 1] - p[:, 1]) * (r[:, 0] - p[:, 0]))
        area = np.where(ok, area, 0.0)
        for wq, (b0, b1, b2) in zip(_QW, _QBARY):
            zq = b0 * p + b1 * q + b2 * r
            dens = base + coef[:, 1] * zq[:, 0] + coef[:, 2] * zq[:, 1]
            wa = wq * area * dens
            mass += wa
            mom += wa * (zq[:, 0] ** 2 + zq[:, 1] ** 2)
    return mass, mom


def laguerre_cells(domain: SemiDiscreteDomain, sites, psi, *, hessian: bool = True,
                   polygons: bool = False) -> LaguerreCells:
    """The Laguerre cells of ``sites`` with weights ``psi`` clipped to ``domain``: masses, moments, Hessian.

    Parameters
    ----------
    domain : SemiDiscreteDomain
        The domain with its density.
    sites : array_like (n, 2)
        The points ``a_i`` (distinct).
    psi : array_like (n,)
        The weights (cell ``i`` is where ``|x - a_i|^2 - psi_i`` is smallest).
    hessian : bool
        Assemble :attr:`LaguerreCells.laplacian`.
    polygons : bool
        Keep the clipped polygons (for plots).

    Returns
    -------
    LaguerreCells

    Raises
    ------
    ValueError
        If ``sites`` or ``psi`` is malformed.
    """
    if not isinstance(domain, SemiDiscreteDomain):
        raise ValueError(f"domain must be a SemiDiscreteDomain, got {type(domain).__name__}")
    a = _points2(sites, "sites")
    n = a.shape[0]
    if n == 0:
        raise ValueError("sites must hold at least one point")
    psi = as_vector(psi, "psi", length=n)
    masses, moments = np.zeros(n), np.zeros(n)
    rows, cols, vals = [], [], []
    polys: list = []
    owners = []
    npieces, k = domain.normals.shape[:2]
    single = npieces == 1
    if not single:
        pcen = domain.pieces.mean(axis=1)
        prad = float(np.max(np.linalg.norm(domain.pieces - pcen[:, None, :], axis=2)))
        tree = cKDTree(pcen)
        box_n = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
        box_o = np.array([-domain.lo[0], domain.hi[0], -domain.lo[1], domain.hi[1]])
    for ids, X, lab, cnt in _power_cells(a, psi, domain.lo, domain.hi):
        if single:
            pair_site, piece = ids, np.zeros(ids.size, dtype=np.int64)
        else:
            for h in range(4):  # the domain's box first: the cells near the hull reach the far sites
                X, lab, cnt = _clip(X, lab, cnt, np.broadcast_to(box_n[h], (X.shape[0], 2)),
                                    np.full(X.shape[0], box_o[h]))
            nonempty = cnt >= 3
            ids, X, lab, cnt = ids[nonempty], X[nonempty], lab[nonempty], cnt[nonempty]
            if ids.size == 0:
                continue
            j = np.arange(X.shape[1])[None, :] < cnt[:, None]
            Xm = np.where(j[..., None], X, np.nan)
            c_lo, c_hi = np.nanmin(Xm, axis=1), np.nanmax(Xm, axis=1)
            near = tree.query_ball_point(0.5 * (c_lo + c_hi), 0.5 * np.linalg.norm(c_hi - c_lo, axis=1) + prad)
            lens = np.fromiter((len(x) for x in near), dtype=np.int64, count=len(near))
            which = np.repeat(np.arange(ids.size), lens)
            piece = np.fromiter((p for x in near for p in x), dtype=np.int64, count=int(lens.sum()))
            pair_site, X, lab, cnt = ids[which], X[which], lab[which], cnt[which]
        for h in range(k):
            X, lab, cnt = _clip(X, lab, cnt, domain.normals[piece, h], domain.offsets[piece, h])
        ok = cnt >= 3
        pair_site, piece, X, lab, cnt = pair_site[ok], piece[ok], X[ok], lab[ok], cnt[ok]
        if pair_site.size == 0:
            continue
        coef = domain.coef[piece]
        m, mo = _integrate(X, cnt, a[pair_site], coef)
        masses += np.bincount(pair_site, m, minlength=n)
        moments += np.bincount(pair_site, mo, minlength=n)
        if hessian:
            V = X.shape[1]
            j = np.arange(V)[None, :]
            nxt = np.where(j + 1 < cnt[:, None], j + 1, 0)
            Xn = np.take_along_axis(X, nxt[..., None], axis=1)
            edge = (lab >= 0) & (j < cnt[:, None])
            r_, c_ = np.nonzero(edge)
            p0, p1 = X[r_, c_], Xn[r_, c_]
            cf = coef[r_]
            mid_rho = cf[:, 0] + cf[:, 1] * 0.5 * (p0[:, 0] + p1[:, 0]) + cf[:, 2] * 0.5 * (p0[:, 1] + p1[:, 1])
            i_, j_ = pair_site[r_], lab[r_, c_]
            val = np.linalg.norm(p1 - p0, axis=1) * mid_rho / (2 * np.linalg.norm(a[i_] - a[j_], axis=1))
            rows.append(i_)
            cols.append(j_)
            vals.append(val)
        if polygons:
            polys.extend(X[r, : cnt[r]].copy() for r in range(X.shape[0]))
            owners.append(pair_site)
    L = None
    if hessian:
        r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        v = np.concatenate(vals) if vals else np.zeros(0)
        off = sp.coo_matrix((v, (r, c)), shape=(n, n)).tocsr()
        off = 0.5 * (off + off.T)  # each edge is seen from both of its cells
        L = (sp.diags(np.asarray(off.sum(axis=1)).ravel()) - off).tocsr()
    own = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)
    return LaguerreCells(masses, moments, L, polys, own)


def semidiscrete_dual(domain: SemiDiscreteDomain, sites, masses, psi):
    """The concave dual ``g(psi)``, its gradient ``u - rho(L(psi))`` and Hessian ``-laplacian``.

    ``g(psi) = sum_i u_i psi_i + int_D min_i (|x - a_i|^2 - psi_i) rho dx <= W_2^2(rho, u)`` for every
    ``psi`` (weak duality), with equality at the maximizer.

    Parameters
    ----------
    domain : SemiDiscreteDomain
    sites : array_like (n, 2)
    masses : array_like (n,)
        The discrete measure ``u``.
    psi : array_like (n,)

    Returns
    -------
    value : float
    gradient : ndarray (n,)
    hessian : scipy.sparse.csr_matrix (n, n)
    """
    cells = laguerre_cells(domain, sites, psi)
    u = as_vector(masses, "masses", length=cells.masses.size)
    psi = np.asarray(psi, dtype=float)
    value = float(u @ psi + np.sum(cells.moments - psi * cells.masses))
    assert cells.laplacian is not None
    return value, u - cells.masses, -cells.laplacian


def _grounded_solve(L, r):
    """Solve ``L d = r`` for a graph Laplacian with ``sum r = 0``: ``d_0 = 0`` fixes the constant."""
    d = np.zeros(r.size)
    if r.size > 1:
        d[1:] = splu(L[1:, 1:].tocsc(), permc_spec="MMD_AT_PLUS_A").solve(r[1:])
    return d


def _kmt(domain, a, u, psi, cells, tol, max_iter, hist):
    """Damped Newton of Kitagawa-Merigot-Thibert from weights whose cells all have positive mass."""
    total = domain.mass
    m = cells.masses
    floor = 0.5 * min(m.min(), u.min())
    status, message = 1, "iteration limit reached"
    nit = 0
    for nit in range(max_iter + 1):
        r = u - m
        res = float(np.abs(r).max()) / total
        hist.append(res)
        if res <= tol:
            status, message = 0, "cell masses match the targets to tol"
            break
        if nit == max_iter:
            break
        assert cells.laplacian is not None
        d = _grounded_solve(cells.laplacian, r)
        t, nr = 1.0, np.linalg.norm(r)
        while t >= 1e-12:
            trial = laguerre_cells(domain, a, psi + t * d)
            if trial.masses.min() >= floor and np.linalg.norm(u - trial.masses) <= (1 - t / 2) * nr:
                break
            t *= 0.5
        if t < 1e-12:
            status, message = 3, "the damped Newton step became too small"
            break
        psi, cells, m = psi + t * d, trial, trial.masses
    return psi, cells, status, message, nit


def semidiscrete_ot(domain: SemiDiscreteDomain, sites, masses, *, psi0=None, tol: float = 1e-10,
                    max_iter: int = 100) -> OptimizeResult:
    """Exact ``W_2^2`` between the density of ``domain`` and ``sum_i masses_i delta_{sites_i}``.

    Damped Newton method of Kitagawa-Merigot-Thibert on the dual weights ``psi`` (the step is halved
    until every cell keeps at least half the smallest initial mass and the residual falls by the factor
    ``1 - t/2``).  Certified stop: ``max_i |rho(L_i) - masses_i| <= tol * rho(D)``.

    Parameters
    ----------
    domain : SemiDiscreteDomain
        The first measure (density on a polygon or triangle mesh).
    sites : array_like (n, 2)
        Distinct support points of the second measure.
    masses : array_like (n,)
        Nonnegative masses, summing to ``domain.mass`` (relative tolerance 1e-9).
    psi0 : array_like (n,), optional
        Starting weights (default 0, the Voronoi diagram); every cell with positive target mass must
        have positive mass at the start.
    tol : float
        Relative tolerance on the cell masses.
    max_iter : int
        Maximal number of Newton steps.

    Returns
    -------
    scipy.optimize.OptimizeResult
        ``fun`` (``sum_i int_{L_i} |x - a_i|^2 rho``, the exact ``W_2^2`` to the measure with the
        computed cell masses), ``dual`` (``g(psi) <= W_2^2(rho, u)``, the certified lower bound),
        ``psi`` (the weights; gradient of ``W_2^2`` in ``masses`` up to a constant; NaN at sites of
        zero mass, where every value below a threshold is a subgradient, and at sites whose mass is below
        ``tol * rho(D) / (10 n)``, which get empty cells), ``cell_masses``,
        ``residual`` (the relative mass error), ``nit``, ``success``, ``status`` (0 converged,
        1 iteration limit, 2 a starting cell is empty, 3 the step became too small), ``message``.

    Raises
    ------
    ValueError
        If an argument is malformed or the masses do not sum to ``domain.mass``.
    """
    a = _points2(sites, "sites")
    n = a.shape[0]
    u_all = as_nonnegative_vector(masses, "masses", length=n)
    if abs(u_all.sum() - domain.mass) > 1e-9 * domain.mass:
        raise ValueError(f"masses must sum to the domain's mass {domain.mass:.12g}, got {u_all.sum():.12g}")
    if not (tol > 0):
        raise ValueError(f"tol must be positive, got {tol!r}")
    # targets below tol |rho| / (10 n) (rounding-level masses of an upper-level solver) are left with empty
    # cells: together they move at most tol |rho| / 10, within the certified tolerance, and a cell driven
    # to a mass of 1e-17 would only stall the Newton method
    sup = u_all > 0.1 * tol * domain.mass / n
    a_s, u = a[sup], u_all[sup] * (domain.mass / u_all[sup].sum())
    psi = np.zeros(u.size) if psi0 is None else as_vector(psi0, "psi0", length=n)[sup].copy()
    total = domain.mass
    hist: list[float] = []
    cells = laguerre_cells(domain, a_s, psi)
    status, message, nit = 2, "a cell with positive target mass is empty at the start: give psi0", 0
    if cells.masses.min() <= 0:
        # a density vanishing on parts of D: continuation from the uniform density on D, whose cells
        # of sites in D are nonempty, through blends (1 - t) rho + t |rho| / |D|
        for t in (1.0, 0.1, 0.01, 1e-3, 1e-4):
            blend = domain.blended(t)
            cells = laguerre_cells(blend, a_s, psi)
            if cells.masses.min() <= 0:
                continue
            psi, cells, st, _, k = _kmt(blend, a_s, u, psi, cells, max(tol, 1e-12), max_iter, [])
            nit += k
            if st != 0:
                break
            cells = laguerre_cells(domain, a_s, psi)
            if cells.masses.min() > 0:
                break
    if cells.masses.min() > 0:
        psi, cells, status, message, k = _kmt(domain, a_s, u, psi, cells, tol, max_iter, hist)
        nit += k
    m = cells.masses
    psi_all = np.full(n, np.nan)
    psi_all[sup] = psi
    cm = np.zeros(n)
    cm[sup] = m
    mom = float(cells.moments.sum())
    dual = float(u @ psi + np.sum(cells.moments - psi * m))
    res = float(np.abs(u_all - cm).max()) / total  # against the targets as given
    if status == 0 and res > tol:
        status, message = 1, "cell masses match the targets only to the relative residual"
    return OptimizeResult(fun=mom, dual=dual, psi=psi_all, cell_masses=cm, residual=res, nit=nit,
                          success=status == 0, status=status, message=message, history=hist)
