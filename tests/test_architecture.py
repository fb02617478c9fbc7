"""The package's layering: imports point one way, no cycles, no private names across modules.

Layers, lowest first (docs/architecture.md): config -> data -> training -> store -> sweeps
-> analyses -> integrations -> report -> cli. A module may import its own layer and the layers below;
``testing`` (tiny models for tests) may import config, data and training and nothing
imports it; the package root (the public API) may import anything and nothing imports it.
An import inside a function is allowed only with a comment saying why (an optional or
heavy dependency), on its line or the line above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "steadytune"
LAYERS = ["config", "data", "training", "store", "sweeps", "analyses", "integrations", "report", "cli"]
TESTING_MAY_IMPORT = {"config", "data", "training"}


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def layer(module: str) -> str | None:
    """``config`` ... ``cli``, ``testing``, or None for the package root modules."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS + ["testing"]) else None


def imports(path: Path, module: str, known: dict[str, Path]) -> list[tuple[str, int, bool, str]]:
    """``(imported module, line, inside a function, imported name)`` for the package's imports."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            pairs = [(a.name, "") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            pairs = [(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base, a.name) for a in node.names]
        else:
            continue
        for target, name in pairs:
            if target.split(".")[0] == "steadytune" and target != module:
                found.append((target, node.lineno, id(node) in inner, name))
    return found


def graph(root: Path = PACKAGE) -> dict[str, list[tuple[str, int, bool, str]]]:
    known = modules(root)
    return {m: imports(p, m, known) for m, p in known.items()}


def upward_imports(root: Path = PACKAGE) -> list[str]:
    return [f"{m}:{line} imports {t}" for m, found in graph(root).items() for t, line, _, _ in found if upward(m, t)]


def upward(module: str, target: str) -> bool:
    src, dst = layer(module), layer(target)
    if src is None:
        return False  # the root (public API) may import anything
    if dst is None:
        return not (module == "steadytune.__main__")  # nothing below the root imports the root
    if dst == "testing":
        return True
    if src == "testing":
        return dst not in TESTING_MAY_IMPORT
    return LAYERS.index(dst) > LAYERS.index(src)


def test_every_module_is_in_a_layer():
    loose = [m for m in modules() if layer(m) is None and m not in ("steadytune", "steadytune.__main__")]
    assert not loose, f"modules outside the layers: {loose}"


def test_no_upward_imports():
    bad = upward_imports()
    assert not bad, "upward imports (layers: " + " -> ".join(LAYERS) + "):\n" + "\n".join(bad)


def test_no_import_cycles():
    edges = {m: {t for t, _, _, _ in found if t in modules()} for m, found in graph().items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_no_private_names_across_modules():
    bad = [f"{m}:{line} imports {t}.{name}" for m, found in graph().items() for t, line, _, name in found
           if name.startswith("_") and not name.startswith("__")]
    assert not bad, "\n".join(bad)


def test_imports_inside_functions_say_why():
    bad = []
    for module, path in modules().items():
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    here = lines[node.lineno - 1 : node.end_lineno]
                    above = lines[node.lineno - 2] if node.lineno >= 2 else ""
                    if not any("#" in line for line in here) and not above.strip().startswith("#"):
                        bad.append(f"{module}:{node.lineno}: {here[0].strip()}")
    assert not bad, f"{len(bad)} imports inside functions without a comment saying why:\n" + "\n".join(sorted(set(bad)))


def test_the_layering_test_catches_an_upward_import(tmp_path):
    """Add an upward import to a copy of the package: the check reports it (and the rules hold)."""
    import shutil

    copy = tmp_path / "steadytune"
    shutil.copytree(PACKAGE, copy)
    assert upward_imports(copy) == upward_imports()
    glue = copy / "data" / "glue.py"
    glue.write_text(glue.read_text() + "\nfrom steadytune.training.models import load_config\n")
    assert [b for b in upward_imports(copy) if b not in upward_imports()] == [
        f"steadytune.data.glue:{len(glue.read_text().splitlines())} imports steadytune.training.models"]
    assert upward("steadytune.config.run", "steadytune.data.tasks")
    assert not upward("steadytune.sweeps.driver", "steadytune.store.study")
    assert upward("steadytune.store.study", "steadytune.sweeps.spec")
    assert upward("steadytune.training.models", "steadytune.testing.tiny")
    assert not upward("steadytune.testing.tiny", "steadytune.training.models")
    assert upward("steadytune.data.glue", "steadytune")  # the root is the public API, above everything


def test_the_public_api_is_importable_from_the_package_root():
    import steadytune

    for name, module in steadytune.PUBLIC.items():
        obj = getattr(steadytune, name)
        assert getattr(obj, "__module__", module) == module or not callable(obj), (name, obj)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        steadytune.nope  # noqa: B018
