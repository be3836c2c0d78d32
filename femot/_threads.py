"""Holding BLAS to one thread, for results that do not depend on the machine.

A threaded BLAS splits its reductions (dot products, matrix-vector products) by its thread
count, so their rounding, and with it the path of an iterative method, would depend on
``OPENBLAS_NUM_THREADS`` and the like. The core's solves and the trust region run inside
:func:`blas_one_thread`; the vectors there are short enough that one thread costs nothing.
"""
from __future__ import annotations

import contextlib

__all__ = ["blas_one_thread"]

_controller: dict = {}


def blas_one_thread():
    """A context manager holding BLAS to one thread (threadpoolctl), or a null context when
    threadpoolctl cannot inspect the process (results may then vary with the thread count)."""
    if "ctl" not in _controller:
        try:
            from threadpoolctl import ThreadpoolController
            _controller["ctl"] = ThreadpoolController()
        except Exception:  # threadpoolctl missing or unable to inspect the process
            _controller["ctl"] = None
    ctl = _controller["ctl"]
    return contextlib.nullcontext() if ctl is None else ctl.limit(limits=1, user_api="blas")
