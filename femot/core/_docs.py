"""Docstring entries shared by the passes of the cost objects and of the k-d tree."""
from __future__ import annotations

from femot._docstrings import fill_doc

#: :func:`femot._docstrings.fill_doc` with the arguments the pair passes have in common.
pass_doc = fill_doc(
    potentials="""
alpha : numpy.ndarray, shape (n1,)
    Dual potential of the first marginal (the rows).
beta : numpy.ndarray, shape (n2,)
    Dual potential of the second marginal (the columns).
""",
    direction="""
dalpha : numpy.ndarray, shape (n1,)
    Search direction of ``alpha``.
dbeta : numpy.ndarray, shape (n2,)
    Search direction of ``beta``.
""",
    weights="""
w1 : numpy.ndarray, shape (n1,)
    Quadrature weights of the first marginal.
w2 : numpy.ndarray, shape (n2,)
    Quadrature weights of the second marginal.
""",
    max_count="""
max_count : int or None, optional
    Give up (return None) when more pairs than this qualify; None (default) means no limit.
""",
    rows="""
rows : numpy.ndarray of int or None, optional
    Restrict the count to these rows (serial search); None (default) counts every row.
""",
)
