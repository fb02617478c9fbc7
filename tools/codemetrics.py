"""Size and import-structure numbers of the steadytune package (for the architecture issue).

    python tools/codemetrics.py [SRC_DIR]

Prints: modules, lines, function lengths (median / p90 / max, with the longest five),
the largest classes by method count, imports inside functions, imports of another
module's private name, and import cycles between modules (module-level imports only).
"""

from __future__ import annotations

import ast
import statistics
import sys
from pathlib import Path


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(name: str, node: ast.ImportFrom, package: str) -> str:
    if node.level == 0:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def analyse(root: Path) -> dict:
    modules = {module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    lines = funcs = 0
    lengths: list[tuple[int, str]] = []
    classes: list[tuple[int, str]] = []
    inner_imports = private = 0
    private_list: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in modules}
    every: dict[str, set[str]] = {m: set() for m in modules}  # function-level imports too
    for mod, path in modules.items():
        text = path.read_text()
        lines += len(text.splitlines())
        tree = ast.parse(text)
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lengths.append((node.end_lineno - node.lineno + 1, f"{mod}.{node.name}"))
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        inner_imports += 1
            if isinstance(node, ast.ClassDef):
                methods = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
                classes.append((len(methods), f"{mod}.{node.name}"))
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                every[mod] |= _targets(node, mod, package, modules)
            if isinstance(node, ast.ImportFrom):
                target = resolve(mod, node, package)
                if target.startswith("steadytune"):
                    for alias in node.names:
                        if alias.name.startswith("_") and f"{target}.{alias.name}" not in modules:
                            private += 1
                            private_list.append(f"{mod} <- {target}.{alias.name}")
        for node in tree.body:  # module-level imports: the ones that can form cycles at import time
            stmts = [node] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            if isinstance(node, ast.If):  # e.g. `if TYPE_CHECKING:` is not a runtime import
                continue
            for stmt in stmts:
                graph[mod] |= _targets(stmt, mod, package, modules)
    funcs = len(lengths)
    return {"modules": len(modules), "lines": lines, "functions": funcs, "lengths": sorted(lengths),
            "classes": sorted(classes), "inner_imports": inner_imports, "private": private_list,
            "cycles": cycles(graph), "all_cycles": cycles(every)}


def _targets(stmt: ast.Import | ast.ImportFrom, mod: str, package: str, modules: dict) -> set[str]:
    """The package's modules an import statement loads (``from a import b``: a, and a.b if a module)."""
    if isinstance(stmt, ast.Import):
        names = [a.name for a in stmt.names]
    else:
        base = resolve(mod, stmt, package)
        names = [base] + [f"{base}.{a.name}" for a in stmt.names]
    return {t for t in names if t in modules and t != mod}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "src" / "steadytune")
    m = analyse(root)
    n = [length for length, _ in m["lengths"]]
    p90 = sorted(n)[int(0.9 * (len(n) - 1))]
    print(f"modules={m['modules']} lines={m['lines']} functions={m['functions']}")
    print(f"function lines: median={statistics.median(n):g} p90={p90} max={max(n)}")
    print("longest:", ", ".join(f"{name} ({length})" for length, name in m["lengths"][-5:][::-1]))
    print("most methods:", ", ".join(f"{name} ({k})" for k, name in m["classes"][-3:][::-1]))
    print(f"imports inside functions={m['inner_imports']} private cross-module imports={len(m['private'])}")
    for item in m["private"]:
        print("  private:", item)
    print(f"import cycles: at import time={len(m['cycles'])}, counting imports inside functions="
          f"{len(m['all_cycles'])}")
    for comp in m["cycles"] + m["all_cycles"]:
        print("  cycle:", " <-> ".join(comp))


if __name__ == "__main__":
    main()
