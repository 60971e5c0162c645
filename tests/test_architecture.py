"""The shape of the source tree: layers that import only downward, no import cycles (type-level
ones included), torch-free declarations, flags only in the CLI, one registry entry per plug-in."""

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "triggerlab"
MODULES = sorted(SRC.rglob("*.py"))

# Lowest first. A module may import its own layer's modules and any lower layer's; modules of
# different packages in one layer do not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "files", "progress", "text", "seeds", "figures"),  # the ground
    ("catalogue",),  # torch-free declarations: metrics, triggers, defences, datasets, models
    ("config",),  # the experiment schema and YAML loading
    ("data", "triggers", "models"),  # datasets, trigger implementations, architectures
    ("attack",),  # poisoning, tasks, stealth
    ("train",),  # the training loop, checkpoints, augmentation, devices
    ("defenses",),
    ("run",),  # one run: context, stages, run directory, feature cache, shared training
    ("grid",),  # many runs: spec, plan, store, executors
    ("analysis",),  # results, statistics, tables, plots, report: read what runs wrote
    ("tools",),  # audit, explain, previews, user models
    ("cli",),  # the only place that knows flags
    ("__main__",),  # python -m triggerlab: the command line
]
DECLARATIONS = ("catalogue", "config")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


KNOWN = {module_name(p) for p in MODULES}


def imports(path: Path) -> set[str]:
    """Modules of this package that ``path`` imports, at run time or for type checking."""
    tree = ast.parse(path.read_text())
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], base]).rstrip(".")
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}
    return {n for n in names if n in KNOWN}


def layer_of(module: str) -> tuple[int, str]:
    """(layer index, top-level part) of a module; the package's own ``__init__`` is ground."""
    top = module.split(".")[1] if "." in module else ""
    for index, group in enumerate(LAYERS):
        if top in group:
            return index, top
    return 0, top


GRAPH = {module_name(p): imports(p) for p in MODULES}


def test_the_top_level_holds_the_ground_and_the_layer_packages():
    entries = {p.stem for p in SRC.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    expected = {"__init__", *(name for group in LAYERS for name in group)}
    assert entries == expected


def test_layers_import_only_downward():
    upward = []
    for module, deps in GRAPH.items():
        here, top = layer_of(module)
        for dep in deps:
            there, dep_top = layer_of(dep)
            sideways = there == here and dep_top != top and here != 0
            if there > here or sideways:
                upward.append(f"{module} -> {dep}")
    assert not upward, upward


def test_no_import_cycles_type_level_included():
    # A package's __init__ importing its own modules is how a package exposes them; a module
    # importing its parent package then reaches those modules, which is no cycle of ours.
    graph = {
        name: {d for d in deps if not (name.startswith(d + ".") or d == name)}
        for name, deps in GRAPH.items()
    }
    cycles: list[list[str]] = []
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


@pytest.mark.parametrize("package", DECLARATIONS)
def test_declarations_never_import_torch(package):
    """Not at the top, not inside a function, not through another module of the package."""
    heavy = re.compile(r"^\s*(import|from)\s+(torch|torchvision|timm|numpy|pandas|matplotlib)\b")
    offenders = [
        f"{p.relative_to(SRC)}:{n}"
        for p in (SRC / package).rglob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), start=1)
        if heavy.match(line)
    ]
    assert not offenders


def test_validating_a_config_and_listing_import_no_torch():
    probe = (
        "import sys\n"
        "import triggerlab.config, triggerlab.cli.listings\n"
        "from triggerlab.config import load_config\n"
        "load_config(None, ['trigger.kind=warp', 'defense.kind=nad', 'model.name=resnet18'])\n"
        "triggerlab.cli.listings.build_listings()\n"
        "print(' '.join(m for m in ('torch', 'numpy', 'pandas') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


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
    ("module", "registry"),
    [
        ("triggerlab.catalogue.triggers", "TRIGGER_KINDS"),
        ("triggerlab.catalogue.defenses", "DEFENSE_KINDS"),
    ],
)
def test_registries_are_derived_from_one_union_and_name_real_implementations(module, registry):
    """Adding a kind is one spec in the union: the name table follows it, and its
    implementation path names a function that exists."""
    from triggerlab.catalogue.implementation import implementation_of

    kinds = getattr(importlib.import_module(module), registry)
    assert kinds and all(spec.model_fields["kind"].default == name for name, spec in kinds.items())
    for spec in kinds.values():
        assert callable(implementation_of(spec.implementation)), spec.implementation


def test_catalogued_models_and_datasets_name_real_factories_with_their_options():
    import inspect

    from triggerlab.catalogue.datasets import DATASETS
    from triggerlab.catalogue.implementation import implementation_of
    from triggerlab.catalogue.models import MODELS

    fixed = {"in_channels", "image_size", "num_outputs", "root", "size"}
    for entries, path_of in ((MODELS, "factory"), (DATASETS, "loader")):
        for entry in entries.values():
            params = inspect.signature(implementation_of(getattr(entry, path_of))).parameters
            options = {
                n: p.default
                for n, p in params.items()
                if n not in fixed and p.kind != p.VAR_KEYWORD
            }
            assert options == entry.options, entry.name
