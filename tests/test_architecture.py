"""The shape of the source tree: small modules, short functions, no import cycles, flags only
in the CLI, one registry line per plug-in."""

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "triggerlab"
MODULES = sorted(SRC.rglob("*.py"))
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60
# Functions that are declarative tables (one literal), not logic.
TABLES = {"build_summary"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> set[str]:
    """Modules of this package that ``path`` imports at run time (TYPE_CHECKING excluded)."""
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {id(n) for child in node.body for n in ast.walk(child)}
    names: set[str] = set()
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("triggerlab")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], base]
                )
            if base.startswith("triggerlab"):
                names.add(base)
                names |= {f"{base}.{a.name}" for a in node.names}
    known = {module_name(p) for p in MODULES}
    return {n for n in names if n in known}


def test_no_module_is_over_the_size_limit():
    long = {
        str(p.relative_to(SRC)): n
        for p in MODULES
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_over_the_length_limit():
    long = {}
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and node.name not in TABLES:
                    long[f"{path.relative_to(SRC)}:{node.name}"] = length
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_import_cycles():
    graph = {module_name(p): runtime_imports(p) for p in MODULES}
    # A package's __init__ importing its own modules is how a package exposes them; a module
    # importing its parent package then reaches those modules, which is no cycle of ours.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not (name.startswith(d + ".") or d == name)}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, f"import cycles: {cycles[:5]}"


FLAG = re.compile(r"""["'][^"'\n]*(?<![\w-])--[a-z][a-z-]+""")


def test_library_modules_name_no_cli_flags():
    offenders = {}
    for path in MODULES:
        if path.parent.name == "cli":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#")[0]
            # A whole command shown to a user (``triggerlab grid ... --out``) is documentation.
            if FLAG.search(code) and "git" not in code and "triggerlab " not in code:
                offenders[f"{path.relative_to(SRC)}:{number}"] = line.strip()
    assert not offenders, offenders


@pytest.mark.parametrize(
    ("registry", "module", "base"),
    [
        ("triggerlab.triggers", "TRIGGER_KINDS", "SpecBase"),
        ("triggerlab.defenses", "DEFENSE_KINDS", "DefenseSpec"),
    ],
)
def test_registries_are_derived_from_one_union(registry, module, base):
    """Adding a kind is one module and one line in the union: the name table follows it."""
    import importlib

    package = importlib.import_module(registry)
    kinds = getattr(package, module)
    assert kinds and all(spec.model_fields["kind"].default == name for name, spec in kinds.items())
