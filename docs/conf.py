"""Sphinx configuration of femot's documentation site (``make docs``).

The Markdown pages of this folder are read by MyST; the API reference is generated from the
packages' ``__all__`` (one page per public object, numpydoc docstrings); the gallery runs the
scripts of ``examples/`` at build time.
"""
from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("MPLBACKEND", "Agg")

import femot  # noqa: E402

project = "femot"
author = "the femot developers"
copyright = "the femot developers"
release = version = femot.__version__

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax shipped with the site: formulas render without a network
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.json", "auto_examples/*.md5"]

myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

autosummary_generate = True
autodoc_typehints = "none"
autodoc_default_options = {"members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

intersphinx_mapping: dict = {}  # no network at build time: references stay local

html_theme = "pydata_sphinx_theme"
html_title = f"femot {release}"
html_theme_options = {"navigation_depth": 2, "show_toc_level": 2}

sphinx_gallery_conf = {
    "examples_dirs": str(HERE.parent / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "abort_on_example_error": True,
    "show_memory": False,
    "reset_modules": ("matplotlib",),
}

# The API reference: one section per package, one page per name of its __all__, so that the
# reference follows the code (``__all__`` is the one list of what is public).
API_PACKAGES = [
    ("femot", "top level: the core solver and the exact references"),
    ("femot.core", "the finite-dimensional core"),
    ("femot.optim", "optimization over the simplex (Part III, Algorithm 4.1)"),
    ("femot.fem", "meshes, quadrature, measures, smoothing, PDE operators"),
    ("femot.problems", "upper-level problems"),
    ("femot.studies", "convergence studies"),
]


def _write_api_page() -> None:
    lines = ["API reference", "=============", "",
             "Every public name of femot, by package (the ``__all__`` of each package).", ""]
    seen: set[str] = set()
    for pkg, title in API_PACKAGES:
        mod = importlib.import_module(pkg)
        names = [n for n in getattr(mod, "__all__", []) if not n.startswith("__")]
        heading = f"``{pkg}``: {title}"
        lines += [heading, "-" * len(heading), "", f".. currentmodule:: {pkg}", "",
                  ".. autosummary::", "   :toctree: generated", ""]
        for n in names:
            obj = getattr(mod, n)
            home = f"{getattr(obj, '__module__', pkg)}.{getattr(obj, '__qualname__', n)}"
            if home in seen:  # re-exported higher up: documented once, where it is first listed
                continue
            seen.add(home)
            lines.append(f"   {n}")
        lines.append("")
    text = "\n".join(lines)
    target = HERE / "api.rst"
    if not target.exists() or target.read_text() != text:
        target.write_text(text)


_write_api_page()


# femot's docstrings write norms and absolute values as plain text (|x - y|, |mu1|), which reST
# would read as substitution references; outside literals and literal blocks the bars are escaped.
_LITERAL = re.compile(r"(``.+?``|:math:`[^`]*`)")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _escape_bars(app, what, name, obj, options, lines) -> None:
    block = None  # indentation of the paragraph that opened a literal block (``::``)
    for i, line in enumerate(lines):
        if block is not None and line.strip() and _indent(line) <= block:
            block = None
        if block is None:
            parts = _LITERAL.split(line)
            lines[i] = "".join(p if k % 2 else p.replace("|", "\\|") for k, p in enumerate(parts))
            if line.rstrip().endswith("::"):
                block = _indent(line)


def setup(app):
    app.connect("autodoc-process-docstring", _escape_bars)
