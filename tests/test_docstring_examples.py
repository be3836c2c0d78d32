"""Every public entry point documents itself with a runnable example.

The examples themselves run as doctests (``--doctest-modules`` in pyproject); this test checks that
each callable named in ``__all__`` of femot and of its subpackages has one.
"""
from __future__ import annotations

import importlib
import inspect

import pytest

PACKAGES = ["femot", "femot.core", "femot.optim", "femot.fem", "femot.problems", "femot.studies",
            "femot.demos", "femot.cli"]


def _public_callables():
    for pkg in PACKAGES:
        mod = importlib.import_module(pkg)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if callable(obj):
                yield pkg, name, obj


@pytest.mark.parametrize("pkg", PACKAGES)
def test_every_public_callable_has_an_example(pkg):
    missing = [name for p, name, obj in _public_callables() if p == pkg and ">>>" not in (inspect.getdoc(obj) or "")]
    assert not missing, f"{pkg}: public callables without a '>>>' example: {missing}"


def test_the_examples_are_collected_as_doctests():
    """The doctest flag is on for the default run, over the package itself."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    section = text.split("[tool.pytest.ini_options]", 1)[1].split("\n[", 1)[0]
    assert "--doctest-modules" in section and 'testpaths = ["tests", "femot"]' in section
