"""Imports point one way: a module imports only from its own layer or the layers below it, and
no two modules import each other, directly or around a loop (function-level imports count).
The layers, lowest first, are the data flow of docs/design/README.md."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "vitbench"

LAYERS = (
    ("vitbench.files", "vitbench.rules", "vitbench.offline", "vitbench.records",
     "vitbench.environment", "vitbench.protocols"),
    ("vitbench.models",),
    ("vitbench.checkpoints",),
    ("vitbench.data",),
    ("vitbench.tasks",),
    ("vitbench.evaluate", "vitbench.train"),
    ("vitbench.transfer", "vitbench.bench", "vitbench.inspection"),
    ("vitbench.leaderboards",),
    ("vitbench.commands", "vitbench.cli"),
)


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> dict[str, bool]:
    """vitbench modules imported by the file -> whether inside a function."""
    tree, found = ast.parse(path.read_text()), {}
    package = _module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    functions = [node for node in ast.walk(tree)
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    nested = {id(inner) for function in functions for inner in ast.walk(function)}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            module = _existing_module(name)  # a module, else the package it names a thing of
            if module and module not in ("vitbench", _module_name(path)):
                found[module] = found.get(module, True) and id(node) in nested
    return found


def _existing_module(name: str) -> str | None:
    """The longest prefix of a dotted name that is a vitbench module or package."""
    parts = name.split(".")
    while parts and parts[0] == "vitbench":
        path = PACKAGE.parent.joinpath(*parts)
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return None


def _layer(module: str) -> int:
    if module == "vitbench":  # the package's facade (`vitbench.load_model`): above everything
        return len(LAYERS)
    for index, layer in enumerate(LAYERS):
        if any(module == top or module.startswith(top + ".") for top in layer):
            return index
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it there")


GRAPH = {_module_name(path): _imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module):
    upward = [imported for imported in GRAPH[module] if _layer(imported) > _layer(module)]
    assert not upward, f"{module} imports from a higher layer: {upward}"


def test_no_import_cycles():
    visiting, done, cycles = [], set(), []

    def visit(module):
        if module in visiting:
            cycles.append(visiting[visiting.index(module):] + [module])
            return
        if module in done:
            return
        visiting.append(module)
        for imported in GRAPH.get(module, {}):
            if not (imported.startswith(module + ".") or module.startswith(imported + ".")):
                visit(imported)  # a package and its own modules are one unit
        visiting.pop()
        done.add(module)

    for module in sorted(GRAPH):
        visit(module)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_library_modules_import_vitbench_at_the_top():
    """Below the commands (which import lazily so that `vitbench --help` is instant), an import
    of vitbench's own code inside a function hides a dependency: at most these few, each for a
    reason given where it is."""
    inside = sorted(f"{module} -> {imported}" for module, imports in GRAPH.items()
                    if _layer(module) < len(LAYERS) - 1 and module != "vitbench"
                    for imported, in_function in imports.items() if in_function)
    assert inside == sorted(ALLOWED_INSIDE_FUNCTIONS), inside


# Model benchmarks and predictions run where TensorFlow is not installed (Keras on JAX): the
# input pipeline, which needs it, is imported where data is read.
ALLOWED_INSIDE_FUNCTIONS = [
    "vitbench.bench -> vitbench.data.device_data",
    "vitbench.bench -> vitbench.data.pipeline",
    "vitbench.bench -> vitbench.data.registry",
    "vitbench.bench -> vitbench.data.sources",
    "vitbench.evaluate.prediction -> vitbench.data.pipeline",
]
