"""The import graph of femot: acyclic, layered, no private names across packages, no facade.

Every module of the package is parsed with :mod:`ast`; both module-level and
function-local imports count (a function-local import is still a dependency, it only
runs later). The layers, lowest first::

    _validation, _io, _docstrings, _threads  <-  core, optim  <-  fem  <-  problems  <-  studies  <-  demos  <-  cli

A module may import from its own layer's package and from lower layers only. ``core``
(the lower-level solver) and ``optim`` (the upper-level simplex solvers) are independent
of each other: both are on the same layer and neither imports the other.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "femot"

LAYERS = {
    "_validation": 0, "_io": 0, "_docstrings": 0, "_threads": 0,
    "core": 1, "optim": 1,
    "fem": 2,
    "problems": 3,
    "studies": 4,
    "demos": 5,
    "cli": 6,
}
# Top-level helper modules whose public names every layer may use.
SHARED = {"femot._validation", "femot._io", "femot._docstrings", "femot._threads"}

# Known violations, as (check, "importer -> imported name"), each with the reason (none today);
# the test fails when an entry is no longer needed.
ALLOWED: set[tuple[str, str]] = set()


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join(parts)] = (path, is_pkg)
    return mods


MODULES = _modules()


def _imports(name: str):
    """Yield (target module, imported name or None, line) for every femot import of ``name``."""
    path, is_pkg = MODULES[name]
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "femot":
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "femot":
                continue
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                if sub in MODULES:  # ``from femot.core import kernels`` imports a module
                    yield sub, None, node.lineno
                else:
                    yield mod, alias.name, node.lineno


EDGES = {name: list(_imports(name)) for name in MODULES}


def _layer(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


def _package(mod: str) -> str:
    """``femot.core.qrot`` -> ``femot.core``; top-level modules are their own package."""
    parts = mod.split(".")
    return ".".join(parts[:2])


def _violations(kind: str) -> list[tuple[str, str]]:
    out = []
    for src, edges in EDGES.items():
        for tgt, name, _line in edges:
            where = f"{src} -> {tgt}" + (f".{name}" if name else "")
            if kind == "facade" and tgt == "femot" and src != "femot":
                out.append((src, where))
            elif kind == "layers" and src != "femot" and tgt != "femot":
                ls, lt = _layer(src), _layer(tgt)
                if ls in LAYERS and lt in LAYERS and ls != lt:
                    if LAYERS[lt] >= LAYERS[ls]:
                        out.append((src, where))
            elif kind == "private" and _package(src) != _package(tgt) and tgt not in SHARED - {src}:
                hidden = [p for p in tgt.split(".")[2:] if p.startswith("_") and p != "__init__"]
                if (name and name.startswith("_")) or hidden:
                    out.append((src, where))
            elif kind == "private" and tgt in SHARED and name and name.startswith("_"):
                out.append((src, where))
    return out


def _check(kind: str) -> None:
    found = {w for _, w in _violations(kind)}
    bad = sorted(w for w in found if (kind, w) not in ALLOWED)
    assert not bad, f"{kind} violations:\n  " + "\n  ".join(bad)
    stale = sorted(w for k, w in ALLOWED if k == kind and w not in found)
    assert not stale, f"allow-list entries no longer needed ({kind}): {stale}"


def test_every_module_is_in_a_layer():
    unknown = sorted({_layer(m) for m in MODULES if m != "femot"} - set(LAYERS))
    assert not unknown, f"modules outside the declared layers: {unknown}"


def test_no_upward_imports():
    _check("layers")


def test_no_private_names_across_packages():
    _check("private")


def test_no_facade_import_inside_the_package():
    _check("facade")


def test_no_import_cycles():
    graph = {m: sorted({t for t, _, _ in EDGES[m] if t in MODULES and t != m}) for m in MODULES}
    # Tarjan's strongly connected components; any component with two or more modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("kind", ["layers", "private", "facade"])
def test_the_checker_sees_a_planted_violation(kind, monkeypatch):
    """The checks can fail: plant one violation of each kind and watch it being reported."""
    planted = {
        "layers": ("femot.core.qrot", ("femot.problems.control", None, 1)),
        "private": ("femot.demos.ocp_2d", ("femot.fem.meshes", "_hidden", 1)),
        "facade": ("femot.fem.poisson", ("femot", "solve_qrot", 1)),
    }[kind]
    src, edge = planted
    edges = dict(EDGES)
    edges[src] = EDGES[src] + [edge]
    monkeypatch.setitem(globals(), "EDGES", edges)
    assert any(s == src for s, _ in _violations(kind))


MAX_FUNCTION_LINES = 120
# Functions allowed to be longer, each with the reason; the test fails when one is short again.
LONG_ALLOWED: set[str] = set()


def _is_numba_kernel(node) -> bool:
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name in ("njit", "jit", "vectorize", "guvectorize"):
            return True
    return False


def test_no_function_longer_than_120_lines():
    long = {}
    for name, (path, _) in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _is_numba_kernel(node):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{name}.{node.name}"] = length
    too_long = {k: v for k, v in long.items() if k not in LONG_ALLOWED}
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"
    stale = sorted(LONG_ALLOWED - set(long))
    assert not stale, f"no longer long, remove from LONG_ALLOWED: {stale}"


MAX_MODULE_LINES = 800
# Modules allowed to be longer, each with the reason; the test fails when one is short again.
LARGE_ALLOWED: dict[str, str] = {
    "femot.core.kernels": "numba kernels: one compiled family per pass over the plan, kept together so "
                          "that the chunking rule that makes results thread-count independent has one home",
}


def test_no_module_longer_than_800_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, (path, _) in MODULES.items()}
    large = {k: v for k, v in sizes.items() if v > MAX_MODULE_LINES and k not in LARGE_ALLOWED}
    assert not large, f"modules over {MAX_MODULE_LINES} lines: {large}"
    stale = sorted(k for k in LARGE_ALLOWED if sizes.get(k, 0) <= MAX_MODULE_LINES)
    assert not stale, f"no longer large, remove from LARGE_ALLOWED: {stale}"


# Function-local imports of femot modules, each breaking a documented cycle or deferring a heavy
# import on purpose: "module.function -> target" with the reason.
LOCAL_IMPORTS_ALLOWED: dict[str, str] = {}
# Packages whose functions import the numerical packages when they run, with the reason.
LOCAL_IMPORT_PACKAGES = {
    "femot.cli": "`femot --help`, argument errors and `femot demo --list` answer without loading numba, "
                 "scipy.sparse and scikit-fem (about half the start-up time)",
    "femot.demos": "as femot.cli: `femot demo --list` imports every demo module to read its NAME and SUMMARY",
}


def _local_femot_imports(name: str) -> set[str]:
    path, _ = MODULES[name]
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == "femot"):
                found.add(f"{name}.{fn.name} -> {'.' * node.level}{node.module or ''}")
            elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "femot" for a in node.names):
                found.add(f"{name}.{fn.name} -> {node.names[0].name}")
    return found


def test_no_function_local_imports_of_femot():
    """Dependencies are visible at the top of a module; exceptions are listed with their reason."""
    found = set().union(*(_local_femot_imports(m) for m in MODULES if _package(m) not in LOCAL_IMPORT_PACKAGES))
    bad = sorted(found - set(LOCAL_IMPORTS_ALLOWED))
    assert not bad, "function-local femot imports (move to the top or document in LOCAL_IMPORTS_ALLOWED):\n  " + \
        "\n  ".join(bad)
    stale = sorted(set(LOCAL_IMPORTS_ALLOWED) - found)
    assert not stale, f"no longer present, remove from LOCAL_IMPORTS_ALLOWED: {stale}"
