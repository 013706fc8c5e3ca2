"""The package's shape: no import circle, modules of one concept (at most 600 lines), TRL's and transformers' private
names reached only through `dmpo_trl._trl_compat`, and imports inside functions only where they are deliberate."""

import ast
from pathlib import Path

import pytest


PACKAGE = Path(__file__).resolve().parents[2] / "dmpo_trl"
MAX_LINES = 600
# Private names of TRL, transformers and datasets the code touches: reached only through _trl_compat (a subclass may
# still define or `super()`-call the hooks it overrides).
PRIVATE_NAMES = {
    "_metrics",
    "_tp_size",
    "_total_train_tokens",
    "_precompute_ref_logps",
    "_prepare_dataset",
    "_tokenize",
    "_fingerprint",
    "_attn_implementation",
    "_prepare_inputs",
    "_can_record_outputs",
    "_get_dataloader",
    "_precompute_model_hash",
}
THIRD_PARTY = ("trl", "transformers", "peft", "accelerate", "datasets")
# Imports that stay inside functions, each for a reason: optional or slow-to-import packages, and the command line's
# torch-free start (its help is answered without importing torch).
DEFERRED = {
    ("dmpo_trl.cli", "dmpo_trl.cli.stored_help"),  # a fresh module under `python -m dmpo_trl.cli.stored_help`
    ("dmpo_trl.cli", "dmpo_trl.distributed"),  # torch: imported only once a command has loaded it
    ("dmpo_trl.cli.stored_help", "dmpo_trl.cli.arguments"),  # torch and TRL: only when the stored help is stale
}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = modules()


def imported(name: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The dmpo_trl modules an import statement in module `name` loads (parent packages included)."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = name.split(".") if MODULES[name].name == "__init__.py" else name.split(".")[:-1]
        if node.level:
            base = base[: len(base) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES else module for alias in node.names]
    out = set()
    for target in targets:
        parts = target.split(".")
        for k in range(2, len(parts) + 1):
            candidate = ".".join(parts[:k])
            if candidate in MODULES and candidate != name and not name.startswith(candidate + "."):
                out.add(candidate)
    return sorted(out)


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    deferred = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        for block in tree.body:  # `if TYPE_CHECKING:` and `try:` at module level count as the module's own imports
            if isinstance(block, (ast.If, ast.Try)):
                top |= {id(node) for node in ast.walk(block)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "module", None) != "__future__":
                for target in imported(name, node):
                    edges[name].add(target)
                    if id(node) not in top:
                        deferred.append((name, target, node.lineno))
    return edges, deferred


def test_no_import_circle():
    edges, _ = import_graph()
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges[module]):
            if target == "dmpo_trl":  # the package's lazy public names
                continue
            if state.get(target) == 1:
                pytest.fail("import circle: " + " -> ".join([*path[path.index(target) :], target]))
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in MODULES:
        if module not in state:
            visit(module, [module])


def test_intra_package_imports_inside_functions_are_only_the_deliberate_ones():
    _, deferred = import_graph()
    unexpected = [
        f"{name}:{line} imports {target}" for name, target, line in deferred if (name, target) not in DEFERRED
    ]
    assert {(name, target) for name, target, _ in deferred} >= DEFERRED  # each deliberate exception is still there
    assert not unexpected, unexpected


def test_modules_are_at_most_600_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_private_trl_names_live_in_trl_compat():
    found = []
    for name, path in MODULES.items():
        if name == "dmpo_trl._trl_compat":
            continue
        tree = ast.parse(path.read_text())
        overridden = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in THIRD_PARTY:
                private = [a.name for a in node.names if a.name.startswith("_")]
                private += [part for part in (node.module or "").split(".") if part.startswith("_")]
                found += [f"{name}:{node.lineno} imports {p} from {node.module}" for p in private]
            elif isinstance(node, ast.Attribute) and node.attr in PRIVATE_NAMES:
                is_super = isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "super"
                own_hook = getattr(node.value, "id", "") == "self" and node.attr in overridden  # a hook it overrides
                if not (is_super or own_hook):
                    found.append(f"{name}:{node.lineno} uses .{node.attr}")
    assert not found, found
