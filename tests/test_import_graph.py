"""The import graph points one way (docs/CONTRIBUTING.md): ground floor → data → models →
train / interpret / eval → runs → widgets / cli → exercises; no module imports a higher layer, and
no import circle exists, counting imports inside functions too."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "xraygpt_lab"

#: Layer of each top-level part of the package (a part may import its own layer or lower ones).
LAYERS = {
    "errors": 0, "atomic": 0, "device": 0, "paths": 0, "run_folder": 0,
    "config": 1, "recipe": 1, "data": 1,
    "models": 2,
    "train": 3, "interpret": 3, "eval": 3,
    "runs": 4,
    "widgets": 5, "cli": 5,
    "exercises": 6, "__main__": 6,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(path: Path, name: str | None = None) -> set[str]:
    """Modules of the package that ``path`` (module ``name``) imports, at module level or inside functions."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "xraygpt_lab":
                for alias in node.names:  # `from pkg import module` names a module
                    found.add(f"{target}.{alias.name}" if is_module(f"{target}.{alias.name}") else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "xraygpt_lab")
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def part(module: str) -> str:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else ""


def test_every_part_of_the_package_has_a_layer():
    parts = {part(m) for m in graph()} - {""}
    assert parts <= set(LAYERS), f"give these a layer in LAYERS: {sorted(parts - set(LAYERS))}"


def test_no_module_imports_a_higher_layer():
    upward = [f"{a} -> {b}" for a, targets in graph().items() if part(a)  # the package root re-exports
              for b in targets if part(b) and LAYERS[part(b)] > LAYERS[part(a)]]
    assert not upward, "imports against the layer order:\n" + "\n".join(sorted(upward))


def test_no_import_circle():
    edges = graph()
    circles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_checker_sees_an_import_inside_a_function_and_an_upward_one(tmp_path):
    """The checks can fail: a relative import inside a function, pointing up, is found."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from ...widgets import chat\n")
    found = imports_of(source, "xraygpt_lab.data.text.m")
    assert found == {"xraygpt_lab.widgets.chat"}
    assert LAYERS[part("xraygpt_lab.widgets.chat")] > LAYERS[part("xraygpt_lab.data.text.m")]
