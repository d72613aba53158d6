"""The package's layers (docs/design.md, "Layers"): every import of a vicious module goes to
its own layer or one below, read from the source with ``ast`` (imports inside functions
included; ``if TYPE_CHECKING:`` blocks, which never run, left out)."""

import ast
from pathlib import Path

import vicious

LAYERS = [
    ("vicious", "vicious.files", "vicious.pages", "vicious.figures", "vicious.seeding"),
    ("vicious.config",),
    ("vicious.data", "vicious.models", "vicious.metrics", "vicious.release"),
    ("vicious.attack",),
    ("vicious.runs",),
    ("vicious.defences",),
    ("vicious.studies",),
    ("vicious.api", "vicious.cli", "vicious.__main__"),
]
SOURCE = Path(vicious.__file__).parent


def _rank(module: str) -> int:
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (rank, len(prefix))
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and to docs/design.md)"
    return best[0]


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []  # types only: never imported at run time
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_imports_go_only_downward():
    upward = []
    for path in sorted(SOURCE.rglob("*.py")):
        parts = path.relative_to(SOURCE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for imported in _imports(ast.parse(path.read_text())):
            if imported.split(".")[0] == "vicious" and _rank(imported) > _rank(module):
                upward.append(f"{module} imports {imported}")
    assert not upward, "\n".join(upward)


def test_every_module_is_in_a_layer():
    for path in SOURCE.rglob("*.py"):
        parts = path.relative_to(SOURCE.parent).with_suffix("").parts
        _rank(".".join(parts))
