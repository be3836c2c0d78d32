"""Command-line interface: ``femot demo``, ``femot identify``, ``femot study``, ``femot warmup``.

One module per command (:mod:`femot.cli.demo`, :mod:`femot.cli.identify`,
:mod:`femot.cli.study`, :mod:`femot.cli.warmup`), each with one function
``cmd_NAME(argv) -> int`` that takes the arguments after the command's name and returns
the exit status (0 success, 2 invalid arguments or output paths; the others its docstring
names). :func:`main` is the console entry point ``femot`` and ``python -m femot.cli``. The
command modules are imported only when their command runs, so ``femot demo`` does not pay
for the study machinery.
"""
from __future__ import annotations

import sys

__all__ = ["main", "COMMANDS"]

# command -> (module, function, one-line help)
COMMANDS = {
    "demo": ("femot.cli.demo", "cmd_demo", "run demos (femot demo --list)"),
    "identify": ("femot.cli.identify", "cmd_identify", "solve a transportation identification problem"),
    "study": ("femot.cli.study", "cmd_study", "run a gamma, delta -> 0 convergence study"),
    "warmup": ("femot.cli.warmup", "cmd_warmup", "compile the numerical kernels now (once per installation)"),
}


def _command(name: str):
    import importlib

    mod_name, func, _ = COMMANDS[name]
    return getattr(importlib.import_module(mod_name), func)


def _version_line() -> str:
    """``femot X.Y.Z (python, numpy, scipy, numba, scikit-fem versions)`` for bug reports."""
    import platform
    from importlib import metadata

    parts = [f"python {platform.python_version()}"]
    for dist in ("numpy", "scipy", "numba", "scikit-fem"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist} missing")
    return f"femot {metadata.version('femot')} ({', '.join(parts)})"


def main(argv=None) -> int:
    """Run ``femot COMMAND ...``; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        The command line without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        The command's exit status; 2 for a missing or unknown command, 130 on interrupt.

    Examples
    --------
    >>> from femot.cli import main
    >>> main(["--version"])  # doctest: +ELLIPSIS
    femot ... (python ..., numpy ..., scipy ..., numba ..., scikit-fem ...)
    0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = ("usage: femot {" + ",".join(COMMANDS) + "} ...\n\n"
             + "".join(f"  {name:9s} {help_}\n" for name, (_, _, help_) in COMMANDS.items())
             + "\n`femot COMMAND --help` describes the options of a command; `femot --version` prints the versions.")
    if not argv:
        print(usage, file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    if argv[0] in ("-V", "--version"):
        print(_version_line())
        return 0
    cmd = argv[0]
    if cmd not in COMMANDS:
        print(f"femot: unknown command {cmd!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    if cmd in ("demo", "identify", "study") and not {"-h", "--help", "--list"} & set(argv[1:]):
        from femot.cli.warmup import kernels_compiled

        if not kernels_compiled():
            print("femot: the numerical kernels are compiled on this first run (once per installation, about one "
                  "to two minutes, not counted in the reported solve times of later runs); `femot warmup` does "
                  "it ahead of time", file=sys.stderr)
    try:
        return int(_command(cmd)(argv[1:]) or 0)
    except KeyboardInterrupt:
        print(f"femot {cmd}: interrupted", file=sys.stderr)
        return 130
