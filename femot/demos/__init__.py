"""Registry of femot's demos.

A demo is a module in this package that defines

* ``NAME`` -- the name used on the command line (``femot demo NAME``);
* ``SUMMARY`` -- one line for ``femot demo --list``;
* ``add_arguments(parser)`` -- optional extra ``argparse`` options (the module docstring
  explains them);
* ``run(args) -> dict`` -- does the work the module docstring describes and returns a
  JSON-able summary (``femot demo --json`` writes it).

``args`` always carries ``json`` (path or None), ``plot`` (directory or None),
``quiet`` (bool), ``seed`` (int) and ``quick`` (bool, a smaller run for tests).
Demos are discovered automatically, so adding one needs no edit here.
"""
from __future__ import annotations

import importlib
import pkgutil

__all__ = ["available_demos", "load_demo"]


def available_demos() -> dict:
    """Map demo name -> module, for every module here that defines ``NAME`` and ``run``.

    Examples
    --------
    >>> from femot.demos import available_demos
    >>> "ocp-1d" in available_demos()
    True
    """
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            found[mod.NAME] = mod
    return dict(sorted(found.items(), key=lambda kv: getattr(kv[1], "ORDER", 100)))


def load_demo(name: str):
    """The demo module named ``name``.

    Parameters
    ----------
    name : str
        A demo's ``NAME`` (see :func:`available_demos`).

    Returns
    -------
    module
        The demo module (with ``run`` and optionally ``add_arguments``).

    Raises
    ------
    ValueError
        If no demo has that name.

    Examples
    --------
    >>> from femot.demos import load_demo
    >>> load_demo("qrot-1d").NAME
    'qrot-1d'
    """
    demos = available_demos()
    if name not in demos:
        raise ValueError(f"unknown demo {name!r}; available: {', '.join(demos) or 'none'}")
    return demos[name]
