"""Lines shared by the demos and the commands: command-line options, output and figures.

* :func:`add_output_options` -- ``--json``, ``--plot``, ``--quiet`` (and optionally
  ``--seed``, ``--quick``); :func:`check_output_paths` refuses unwritable ones before any
  work, :func:`write_summary` writes the JSON summary (``-``: standard output) and
  :func:`printer` prints unless ``--quiet``;
* :func:`add_coupling_options` -- ``--beta``, ``--coupling-C``, ``--coupling-s`` of the
  demos that run a coupled (gamma, delta) schedule;
* :func:`add_control_stopping_options` -- the stopping rules of the control demos
  (``--rtol`` for the plan formulation, ``--fw-rtol`` for the value formulation,
  ``--max-iter``);
* :func:`figure_folder` and :func:`save_figure` -- matplotlib without a display, figures
  written into one folder and their paths collected.
"""
from __future__ import annotations

import os

from femot._io import check_writable, to_json, write_json

__all__ = ["add_output_options", "check_output_paths", "write_summary", "printer", "add_coupling_options",
           "add_control_stopping_options", "figure_folder", "save_figure"]


def add_output_options(p, *, seed: bool = False, quick: bool = False) -> None:
    """Add ``--json OUT.json``, ``--plot DIR`` and ``--quiet`` (and ``--seed``, ``--quick``) to ``p``.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The parser to extend.
    seed : bool, optional
        Also add ``--seed`` (int, default 0).  Default False.
    quick : bool, optional
        Also add the flag ``--quick`` (a smaller run).  Default False.
    """
    p.add_argument("--json", metavar="OUT.json", default=None,
                   help="write the summary as JSON to OUT.json ('-': to standard output)")
    p.add_argument("--plot", metavar="DIR", default=None, help="write figures into DIR")
    if seed:
        p.add_argument("--seed", type=int, default=0, help="seed of every random instance (default 0)")
    if quick:
        p.add_argument("--quick", action="store_true", help="a smaller run (used by the tests)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")


def check_output_paths(args, *files: str) -> None:
    """Refuse unwritable ``--json`` and ``--plot`` paths, and the file options ``files``, before any work.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options of :func:`add_output_options`; ``--json -`` (standard output) is not a path.
    *files : str
        Further options naming an output file (e.g. ``"--save"``), checked after ``--json``.

    Raises
    ------
    femot._io.OutputPathError
        Naming the option, if a path cannot be written.

    Examples
    --------
    >>> import argparse, os, tempfile
    >>> from femot.demos.common import check_output_paths
    >>> with tempfile.TemporaryDirectory() as d:
    ...     args = argparse.Namespace(json="-", plot=os.path.join(d, "figures"), save=os.path.join(d, "r.npz"))
    ...     check_output_paths(args, "--save")
    >>> print("ok")
    ok
    """
    names = (["--json"] if getattr(args, "json", None) != "-" else []) + list(files)
    for name in names:
        path = getattr(args, name.lstrip("-").replace("-", "_"), None)
        if path:
            check_writable(path, name)
    if getattr(args, "plot", None):
        check_writable(args.plot, "--plot", directory=True)


def write_summary(path, summary: dict) -> None:
    """Write ``summary`` as JSON to the file ``path``, or print it for ``path == "-"``.

    Parameters
    ----------
    path : str or os.PathLike
        The ``--json`` option's value.
    summary : dict
        JSON-serializable data (numpy scalars and arrays allowed).

    Examples
    --------
    >>> from femot.demos.common import write_summary
    >>> write_summary("-", {"success": True})
    {
      "success": true
    }
    """
    if str(path) == "-":
        print(to_json(summary))
    else:
        write_json(path, summary)


def _silent(*args, **kwargs) -> None:
    pass


def printer(quiet: bool):
    """``print``, or a function that prints nothing if ``quiet`` (the ``say`` of demos and commands).

    Parameters
    ----------
    quiet : bool
        The ``--quiet`` option.

    Returns
    -------
    callable
        Takes the arguments of ``print``.

    Examples
    --------
    >>> from femot.demos.common import printer
    >>> printer(False)("shown")
    shown
    >>> printer(True)("not shown")
    """
    return _silent if quiet else print


def add_coupling_options(p, *, C: float, s: float) -> None:
    """Add the cost exponent ``--beta`` and the coupling ``delta = C gamma^(1/(d+s))`` (Part II (3.1)) to ``p``.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The parser to extend; the options are stored as ``beta``, ``C`` and ``s``.
    C : float
        Default of ``--coupling-C``, the constant of the coupling.
    s : float
        Default of ``--coupling-s``, the positive exponent shift of the coupling.
    """
    p.add_argument("--beta", type=float, default=2.0, help="cost exponent, c = |x - y|^beta (default 2)")
    p.add_argument("--coupling-C", dest="C", type=float, default=C, help=f"delta = C gamma^(1/(d+s)) (default {C:g})")
    p.add_argument("--coupling-s", dest="s", type=float, default=s, help=f"s > 0 in the coupling (default {s:g})")


def add_control_stopping_options(p, *, per_level: bool = False) -> None:
    """Add the control problems' stopping options ``--rtol``, ``--fw-rtol`` and ``--max-iter`` to ``p``.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The parser to extend.
    per_level : bool, optional
        Say in the help of ``--max-iter`` that the limit applies per level.  Default False.
    """
    p.add_argument("--rtol", type=float, default=1e-5,
                   help="plan: stop when theta_R, or the certificate psi of the quadratic cuts, "
                        "<= rtol * theta_R(uniform) (default 1e-5)")
    p.add_argument("--fw-rtol", type=float, default=1e-8,
                   help="value: stop when the Frank-Wolfe gap <= fw_rtol * |f| (default 1e-8)")
    p.add_argument("--max-iter", type=int, default=200,
                   help=f"trust-region iterations{' per level' if per_level else ''} (default 200)")


def figure_folder(folder):
    """Create ``folder`` and return ``matplotlib.pyplot`` set up for files (no display needed).

    Parameters
    ----------
    folder : str or os.PathLike
        Output folder of the figures (created with its parents).

    Returns
    -------
    module
        ``matplotlib.pyplot`` with the non-interactive Agg backend.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(folder, exist_ok=True)
    return plt


def save_figure(fig, folder, name: str, paths: list | None = None, dpi: int = 130) -> str:
    """Write ``fig`` to ``folder/name``, close it, append the path to ``paths`` and return it.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    folder : str or os.PathLike
        Existing output folder.
    name : str
        File name; its suffix selects the format (e.g. ``.png``).
    paths : list, optional
        A list collecting the written paths.
    dpi : int, optional
        Resolution.  Default 130.

    Returns
    -------
    str
        The path written.
    """
    import matplotlib.pyplot as plt

    path = os.path.join(folder, name)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    if paths is not None:
        paths.append(path)
    return path
