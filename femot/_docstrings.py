"""Docstring pieces written once: the papers femot implements, and shared parameter entries.

Docstrings cite equations as "Part I/II/III (x.y)" and "Lorenz, Manns, Meyer 2021".  The
full citations are kept here once: :func:`cite` appends a numpydoc ``References``
section naming the chosen papers to a function's or class's docstring, so every public
object cites its sources without the same lines being repeated in every module.
:func:`fill_doc` puts shared numpydoc entries (e.g. the parameters that several
problems' methods have in common) at ``%(name)s`` markers of a docstring.
"""
from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import TypeVar

__all__ = ["PAPERS", "references", "cite", "fill_doc"]

#: Full citations, keyed as the docstrings name the papers.
PAPERS = {
    "I": 'S. Hillbrecht, C. Meyer, "Bilevel optimization of the Kantorovich problem and its quadratic '
         'regularization, Part I: existence results", arXiv:2206.13220.',
    "II": 'S. Hillbrecht, P. Manns, C. Meyer, "Bilevel optimization of the Kantorovich problem and its '
          'quadratic regularization, Part II: convergence analysis", arXiv:2211.07287.',
    "III": 'S. Hillbrecht, "Bilevel optimization of the Kantorovich problem and its quadratic '
           'regularization, Part III: the finite-dimensional case", arXiv:2406.08992.',
    "LMM": 'D. A. Lorenz, P. Manns, C. Meyer, "Quadratically regularized optimal transport", '
           'Appl. Math. Optim. 83(3), 2021.',
}

_T = TypeVar("_T")


def references(*keys: str, indent: str = "") -> str:
    """A numpydoc ``References`` section citing the papers ``keys`` (of :data:`PAPERS`), in order.

    Parameters
    ----------
    *keys : str
        Keys of :data:`PAPERS`; none means all of them.
    indent : str, optional
        Prefix of every line (the indentation of the docstring it goes into).
    """
    unknown = [k for k in keys if k not in PAPERS]
    if unknown:
        raise ValueError(f"keys: unknown papers {unknown}; known: {sorted(PAPERS)}")
    lines = ["References", "----------"]
    for i, key in enumerate(keys or tuple(PAPERS), 1):
        lines += textwrap.wrap(f".. [{i}] {PAPERS[key]}", width=88 - len(indent), subsequent_indent="   ",
                               break_on_hyphens=False)
    return "\n".join(indent + line for line in lines)


def _indent(doc: str) -> str:
    """The common indentation of a docstring's lines after the first."""
    body = [line for line in doc.splitlines()[1:] if line.strip()]
    if not body:
        return ""
    width = min(len(line) - len(line.lstrip()) for line in body)
    return body[0][:width]


def cite(*keys: str) -> Callable[[_T], _T]:
    """Decorator: append :func:`references` ``(*keys)`` to the object's docstring.

    Parameters
    ----------
    *keys : str
        Keys of :data:`PAPERS`; none means all of them.
    """
    def decorate(obj: _T) -> _T:
        doc = (obj.__doc__ or "").rstrip()
        indent = _indent(doc) or "    "
        obj.__doc__ = f"{doc}\n\n{references(*keys, indent=indent)}\n"
        return obj

    return decorate


def fill_doc(**pieces: str) -> Callable[[_T], _T]:
    """Decorator: replace each line ``%(name)s`` of the docstring by ``pieces[name]``.

    The piece is written without indentation (numpydoc entries as at the left margin) and
    is indented like the marker line.

    Parameters
    ----------
    **pieces : str
        The docstring pieces by name.
    """
    def decorate(obj: _T) -> _T:
        lines = []
        for line in (obj.__doc__ or "").split("\n"):
            key = line.strip()
            if key.startswith("%(") and key.endswith(")s"):
                if key[2:-2] not in pieces:
                    raise ValueError(f"{getattr(obj, '__qualname__', obj)}: no docstring piece {key[2:-2]!r}")
                indent = line[:len(line) - len(line.lstrip())]
                lines += [indent + p if p else p for p in textwrap.dedent(pieces[key[2:-2]]).strip("\n").split("\n")]
            else:
                lines.append(line)
        obj.__doc__ = "\n".join(lines)
        return obj

    return decorate
