"""The layering rules, checked on the source: no module imports another module's private name,
and a layer imports only from the layers below it (DESIGN.md, "Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "ratekeeper"

# Lowest first. A module may import from its own layer and the ones listed before it.
LAYERS = [
    ("values", ["errors", "limits", "decision", "clock", "metrics", "events", "_drive"]),
    ("algorithms", ["algorithms"]),
    ("stores", ["stores", "_local_cache"]),
    (
        "limiter",
        ["_limiter_base", "_local_quota", "_async_limiter", "_sync_limiter", "limiter", "policies"],
    ),
    # The testing kit drives limiters and, in its pytest plugin, the default registry; nothing
    # below the integrations imports it.
    ("registry", ["registry", "config", "observability", "testing"]),
    (
        "integrations",
        [
            "integrations",
            "admin",
            "clients",
            "compat",
            "simulate",
            "loadtest",
            "cli",
            "__main__",
            "__init__",
        ],
    ),
]
STORES = [name for name, _ in LAYERS].index("stores")


def layer_of(module: str) -> int:
    """The index in LAYERS of ``ratekeeper.<first part>...``."""
    first = module.split(".")[1] if module.count(".") else "__init__"
    for index, (_, members) in enumerate(LAYERS):
        if first in members:
            return index
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def modules() -> list[tuple[str, ast.Module]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append((name, ast.parse(path.read_text(), str(path))))
    return found


def imports(tree: ast.Module) -> list[tuple[str, list[str], int]]:
    """(module, names, line) for every ``from ratekeeper... import names`` and ``import``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [alias.name for alias in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out.extend((alias.name, [], node.lineno) for alias in node.names)
    return [entry for entry in out if entry[0].split(".")[0] == "ratekeeper"]


def test_no_module_imports_another_modules_private_name() -> None:
    bad = [
        f"{name}:{line} imports {target}.{imported}"
        for name, tree in modules()
        for target, names, line in imports(tree)
        for imported in names
        if imported.startswith("_") and not imported.startswith("__") and target != name
    ]
    assert not bad, "\n".join(bad)


def test_layers_import_only_downwards() -> None:
    bad = []
    for name, tree in modules():
        if name == "ratekeeper":
            continue  # the package re-exports the public names of every layer
        own = layer_of(name)
        for target, _, line in imports(tree):
            if target != "ratekeeper" and layer_of(target) > own:
                bad.append(f"{name}:{line} ({LAYERS[own][0]}) imports {target}")
    assert not bad, "\n".join(bad)


def test_integrations_get_stores_from_the_registry() -> None:
    """No integration builds a store: none imports the stores layer (store classes,
    ``store_from_url``); the engine asks the registry (DESIGN.md, "Layers")."""
    bad = [
        f"{name}:{line} imports {target}"
        for name, tree in modules()
        if name.startswith("ratekeeper.integrations")
        for target, _, line in imports(tree)
        if layer_of(target) == STORES
    ]
    assert not bad, "\n".join(bad)
