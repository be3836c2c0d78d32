"""Output files of the command-line tools and of the study store.

* :func:`check_writable` -- refuse an output path *before* any work is done (a directory
  given where a file is expected, a parent that cannot be created, a read-only or
  virtual file system), with a :class:`OutputPathError` naming the option;
* :func:`atomic_write`, :func:`atomic_write_text`, :func:`write_json` -- write to a
  temporary file in the target's directory, flush it to disk and move it into place
  with ``os.replace``, so a reader sees either the old or the complete new file. The
  result gets the ordinary permissions of a newly created file (``0o666`` minus the
  umask), not the ``0o600`` of a temporary file;
* :func:`to_json`, :func:`json_default` -- JSON of results holding numpy scalars and
  arrays and paths.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path

__all__ = ["OutputPathError", "check_writable", "atomic_write", "atomic_write_text", "write_json", "to_json",
           "json_default", "file_mode"]


class OutputPathError(ValueError):
    """An output path that cannot be written; the message starts with the option name."""


def json_default(o):
    """``default`` hook of :func:`json.dumps`: numpy scalars and arrays, paths.

    Parameters
    ----------
    o : object
        An object the ``json`` module cannot serialize by itself.

    Returns
    -------
    object
        ``o.item()`` for a numpy scalar, ``o.tolist()`` for an array, ``str(o)`` for a path.

    Raises
    ------
    TypeError
        For any other type (as :func:`json.dumps` expects).
    """
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def to_json(data, indent: int = 2) -> str:
    """Indented JSON text of ``data`` (see :func:`json_default`).

    Parameters
    ----------
    data : object
        JSON-serializable data, possibly holding numpy scalars/arrays and paths.
    indent : int, optional
        Indentation width (default 2).

    Returns
    -------
    str
        The JSON text.
    """
    return json.dumps(data, indent=indent, default=json_default)


_umask_lock = threading.Lock()


def _umask() -> int:
    try:  # Linux: read it without changing it
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        m = os.umask(0o022)
        os.umask(m)
    return m


def file_mode() -> int:
    """Permission bits of an ordinary new file: ``0o666 & ~umask``."""
    return 0o666 & ~_umask()


def _nearest_existing(p: Path) -> Path:
    q = p
    while not q.exists():
        if q.parent == q:
            break
        q = q.parent
    return q


def _probe(directory: Path, what: str, name: str, path) -> None:
    """Create and remove a file in ``directory`` (os.access says yes to root everywhere)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".femot-probe-", dir=directory)
    except OSError as exc:
        raise OutputPathError(f"{name}: cannot write {what} {path}: {exc.strerror or exc}") from None
    os.close(fd)
    try:
        os.unlink(tmp)
    except OSError:
        pass


def check_writable(path, name: str, *, directory: bool = False) -> Path:
    """Check that an output path can be written, without creating anything.

    ``path`` is a file, or a directory with ``directory=True``.

    Parameters
    ----------
    path : str or os.PathLike
        The output path (``~`` is expanded).
    name : str
        The option that gave the path (e.g. ``"--json"``); error messages start with it.
    directory : bool, optional
        True if ``path`` names a directory (default False: a file).

    Returns
    -------
    pathlib.Path
        ``path`` as a ``Path``, user-expanded.

    Raises
    ------
    OutputPathError
        (a ``ValueError``) if the path is empty, is a directory (or not one), a parent is a
        file, or the nearest existing directory does not accept a new file (permissions,
        read-only or virtual file system such as ``/proc``).
    """
    if path is None or not str(path).strip():
        raise OutputPathError(f"{name}: empty path")
    p = Path(os.fspath(path)).expanduser()
    what = "directory" if directory else "file"
    if directory:
        if p.exists() and not p.is_dir():
            raise OutputPathError(f"{name}: {path} exists and is not a directory")
    else:
        if p.is_dir():
            raise OutputPathError(f"{name}: {path} is a directory; give a file name")
        if str(path).endswith(("/", os.sep)):
            raise OutputPathError(f"{name}: {path} names a directory; give a file name")
    start = p if directory else p.absolute().parent
    base = _nearest_existing(start.absolute())
    if not base.is_dir():
        raise OutputPathError(f"{name}: cannot write {what} {path}: {base} is not a directory")
    _probe(base, what, name, path)
    return p


def atomic_write(path, write, binary: bool = False) -> Path:
    """Write ``path`` atomically through a temporary file in the same directory.

    ``write(fh)`` fills the temporary file, which is flushed to disk, given ordinary
    permissions (:func:`file_mode`) and renamed onto ``path``. Parent directories are
    created. The temporary file never survives an error.

    Parameters
    ----------
    path : str or os.PathLike
        The target file.
    write : callable
        ``write(fh)`` writes the content to the open file object ``fh``.
    binary : bool, optional
        Open the temporary file in binary mode (default False: text).

    Returns
    -------
    pathlib.Path
        The target path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), file_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    """Write the string ``text`` to ``path`` atomically (see :func:`atomic_write`).

    Parameters
    ----------
    path : str or os.PathLike
        The target file.
    text : str
        The content.

    Returns
    -------
    pathlib.Path
        The target path.
    """
    return atomic_write(path, lambda fh: fh.write(text))


def write_json(path, data) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (see :func:`to_json`).

    Parameters
    ----------
    path : str or os.PathLike
        The target file.
    data : object
        JSON-serializable data (numpy scalars/arrays and paths allowed).

    Returns
    -------
    pathlib.Path
        The target path.
    """
    text = to_json(data) + "\n"
    return atomic_write_text(path, text)
