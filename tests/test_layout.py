"""The wiring between folders, checked by reading the source with ``ast``:

- no import cycle between modules (at any depth, also through imports inside functions);
- no module imports another package's ``_private`` name (or ``_private`` module);
- no non-CLI module imports a CLI module (``*_cli`` or ``ecoretrofit.cli``);
- every topic name is declared in exactly one non-test module (``schemas/topics.py``).

Relative imports are resolved; ``from pkg import name`` counts as an import of
``pkg.name`` when that is a module, else of ``pkg``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("ecoretrofit", "producers", "processors", "schemas", "sinks", "infra", "bench", "evaluation", "maintenance",
            "twin", "assistant", "gateway")


def is_cli(module: str) -> bool:
    return module == "ecoretrofit.cli" or module.rsplit(".", 1)[-1].endswith("_cli")


def package_of(module: str) -> str:
    """The package a module belongs to: its parent (a package's __init__ is its own)."""
    path = MODULES.get(module)
    if (path is not None and path.name == "__init__.py") or "." not in module:
        return module
    return module.rsplit(".", 1)[0]


def source_modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = source_modules()


def imports(module: str, path: Path) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in MODULES:
                    out.append((full, None, node.lineno))
                else:
                    out.append((base, alias.name, node.lineno))
    return out


def graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for target, _, _ in imports(module, path):
            # importing a.b.c runs a and a.b too, but those edges are the package
            # __init__s, which import nothing of their children here: keep the leaf
            if target in MODULES and target != module:
                g[module].add(target)
    return g


def find_cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return cycles


def test_the_checker_sees_what_it_must():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    assert is_cli("infra.localstack.stack_cli") and is_cli("ecoretrofit.cli") and not is_cli("ecoretrofit.client")
    assert "sinks.sink" in MODULES and "infra.localstack.registry" in MODULES
    targets = {m for m, _, _ in imports("infra.localstack.registry.server", MODULES["infra.localstack.registry.server"])}
    assert "infra.localstack.registry.core" in targets
    assert package_of("processors.detectors") == "processors.detectors" == package_of("processors.detectors.base")


def test_no_import_cycles():
    cycles = find_cycles(graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_module_imports_another_packages_private_names():
    bad = []
    for module, path in MODULES.items():
        for target, name, line in imports(module, path):
            private_module = any(part.startswith("_") and not part.startswith("__") for part in target.split("."))
            private_name = name is not None and name.startswith("_") and not name.startswith("__")
            if (private_module or private_name) and package_of(target) != package_of(module):
                bad.append(f"{path.relative_to(REPO)}:{line}: {target}{'.' + name if name else ''}")
    assert not bad, "imports of another package's private names:\n" + "\n".join(bad)


def test_no_cli_module_is_imported_by_non_cli_code():
    bad = []
    for module, path in MODULES.items():
        if is_cli(module):
            continue
        for target, _, line in imports(module, path):
            if target in MODULES and is_cli(target):
                bad.append(f"{path.relative_to(REPO)}:{line}: {target}")
    assert not bad, "non-CLI modules importing CLI modules:\n" + "\n".join(bad)


def test_every_cli_module_is_a_subcommand_and_follows_the_naming_pattern():
    from ecoretrofit.cli import COMMANDS

    registered = {module for module, _ in COMMANDS.values()}
    named = {m for m in MODULES if is_cli(m) and m != "ecoretrofit.cli"}
    assert registered == named, (
        f"CLI modules not registered in ecoretrofit.cli.COMMANDS: {sorted(named - registered)}; "
        f"registered modules not named <subcommand>_cli: {sorted(registered - named)}"
    )
    for name, (module, _) in COMMANDS.items():
        mod = __import__(module, fromlist=["run"])
        assert callable(getattr(mod, "add_arguments", None)) and callable(getattr(mod, "run", None)), module


@pytest.mark.parametrize("kind", ["telemetry", "anomalies", "alerts", "deadletter", "schemas"])
def test_each_topic_name_is_declared_in_exactly_one_module(kind):
    from schemas.topics import BY_KIND

    name = BY_KIND[kind].name
    holders = []
    examples = {f"examples.{p.stem}": p for p in sorted((REPO / "examples").glob("*.py"))}
    for module, path in {**MODULES, **examples}.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value == name:
                holders.append(module)
                break
    assert holders == ["schemas.topics"], f"{name!r} appears as a literal in {holders}"
