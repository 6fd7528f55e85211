"""The layering of docs/ARCHITECTURE.md, enforced on every import under tftmon/.

The rules are read from the doc's tables (layers, exceptions, modules), never restated here, so the page
and the code cannot drift: a module the tables do not place, a row naming a module that does not exist,
an import that reaches up or sideways, an exception no longer used, all fail with the importing module,
the imported one and the rule. Imports are found with `ast` anywhere in a module: inside functions and
`if TYPE_CHECKING:` blocks too, and `importlib.import_module("...")` with a literal name.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "tftmon"
DOC = ROOT / "docs" / "ARCHITECTURE.md"
DOC_NAME = "docs/ARCHITECTURE.md"
CLI = "tftmon.cli"

LAYER_HEADER = ("layer", "modules", "may import", "never imports")
EXCEPTION_HEADER = ("importer", "imports", "why")
MODULE_HEADER = ("module", "owns")


# ---------------------------------------------------------------------------------------------
# The doc
# ---------------------------------------------------------------------------------------------


def markdown_tables(text: str) -> dict[tuple[str, ...], list[list[str]]]:
    """Every pipe table in `text`, keyed by its lower-cased header; rows as lists of raw cells."""
    tables: dict[tuple[str, ...], list[list[str]]] = {}
    block: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.lstrip().startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if len(block) >= 2 and all(set(cell) <= set("-: ") for cell in block[1]):
            tables[tuple(cell.lower() for cell in block[0])] = block[2:]
        block = []
    return tables


def code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def entry_module(entry: str) -> str:
    """A doc entry (a path under tftmon/: `io.py`, `data/`, `data/simulate/fleet.py`) as a module name."""
    path = entry.removesuffix("/").removesuffix(".py")
    parts = [p for p in path.split("/") if p and p != "__init__"]
    return ".".join(["tftmon", *parts])


def is_module_entry(token: str) -> bool:
    return token.endswith((".py", "/"))


@dataclass(frozen=True)
class Layer:
    name: str
    rank: int
    members: tuple[str, ...]  # module names; a package member covers its submodules
    may: tuple[str, ...]  # layer names and module names
    never: frozenset[str]
    may_text: str

    @property
    def rule(self) -> str:
        if not self.may:
            return f"layer `{self.name}` imports nothing of ours"
        return f"layer `{self.name}` may import only {self.may_text}"

    def holds(self, module: str) -> bool:
        return any(covers(member, module) for member in self.members)


def covers(member: str, module: str) -> bool:
    """A doc entry names the module itself or, for a package other than the root, one of its submodules."""
    return module == member or (member != "tftmon" and module.startswith(member + "."))


@dataclass(frozen=True)
class Architecture:
    layers: tuple[Layer, ...]
    exceptions: frozenset[tuple[str, str]]
    documented: tuple[str, ...]  # the module table's rows, as module names

    def layer(self, name: str) -> Layer | None:
        return next((layer for layer in self.layers if layer.name == name), None)

    def layers_of(self, module: str) -> list[Layer]:
        return [layer for layer in self.layers if layer.holds(module)]

    def allowed(self, layer: Layer, target: str) -> bool:
        for token in layer.may:
            if token in {other.name for other in self.layers}:
                if any(other.name == token and other.holds(target) for other in self.layers):
                    return True
            elif covers(token, target):
                return True
        return False


def read_architecture(text: str) -> Architecture:
    tables = markdown_tables(text)
    for header in (LAYER_HEADER, EXCEPTION_HEADER, MODULE_HEADER):
        assert header in tables, f"{DOC_NAME} lost its table with the header | {' | '.join(header)} |"
    layers = []
    for rank, (name_cell, modules_cell, may_cell, never_cell) in enumerate(tables[LAYER_HEADER]):
        (name,) = code_spans(name_cell) or [name_cell]
        may = tuple(entry_module(t) if is_module_entry(t) else t for t in code_spans(may_cell))
        layers.append(
            Layer(
                name=name,
                rank=rank,
                members=tuple(entry_module(t) for t in code_spans(modules_cell)),
                may=may,
                never=frozenset(code_spans(never_cell)),
                may_text=", ".join(code_spans(may_cell)),
            )
        )
    exceptions = set()
    for importer, imported, _why in tables[EXCEPTION_HEADER]:
        for a in code_spans(importer):
            for b in code_spans(imported):
                exceptions.add((entry_module(a), entry_module(b)))
    documented = tuple(entry_module(t) for row in tables[MODULE_HEADER] for t in code_spans(row[0])[:1])
    return Architecture(tuple(layers), frozenset(exceptions), documented)


# ---------------------------------------------------------------------------------------------
# The code
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    target: str  # a tftmon module, or a third-party top-level package
    line: int


@dataclass
class Module:
    name: str
    path: Path
    ours: list[Import] = field(default_factory=list)
    third_party: list[Import] = field(default_factory=list)


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(tree: ast.AST, name: str, is_package: bool) -> Iterator[tuple[str, tuple[str, ...], int]]:
    """(module, names imported from it, line) for every import statement anywhere in the tree."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, (), node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name if is_package else name.rpartition(".")[0]
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            yield base, tuple(alias.name for alias in node.names), node.lineno
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value, (), node.lineno


def resolve(target: str, names: Iterable[str], known: set[str]) -> list[str]:
    """The tftmon modules an import loads: `from tftmon.ops import registry` is tftmon.ops.registry."""
    found = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
    if found:
        return found
    parts = target.split(".")
    while parts and ".".join(parts) not in known:
        parts.pop()
    return [".".join(parts) or target]


def parse_module(path: Path, known: set[str], root: Path = PACKAGE) -> Module:
    name = module_name(path, root)
    module = Module(name, path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for target, names, line in imported_names(tree, name, path.name == "__init__.py"):
        top = target.split(".")[0]
        if top == root.name:
            module.ours += [Import(t, line) for t in resolve(target, names, known) if t != name]
        elif top:
            module.third_party.append(Import(top, line))
    return module


def parse_package(root: Path = PACKAGE) -> dict[str, Module]:
    paths = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    known = {module_name(p, root) for p in paths}
    return {m.name: m for m in (parse_module(p, known, root) for p in paths)}


# ---------------------------------------------------------------------------------------------
# The rules
# ---------------------------------------------------------------------------------------------


def where(module: Module, line: int) -> str:
    return f"{module.path.relative_to(ROOT) if module.path.is_relative_to(ROOT) else module.path}:{line}"


def import_violations(arch: Architecture, modules: dict[str, Module]) -> list[str]:
    """Every import of ours that a rule of the doc forbids, one readable line each."""
    problems = []
    for module in modules.values():
        (layer,) = arch.layers_of(module.name) or [None]
        for imp in module.ours:
            if imp.target == CLI or imp.target.startswith(CLI + "."):
                problems.append(
                    f"{where(module, imp.line)}: {module.name} imports {imp.target}: nothing imports tftmon.cli "
                    "(it is the entry point)"
                )
                continue
            if layer is None or (module.name, imp.target) in arch.exceptions:
                continue
            if arch.allowed(layer, imp.target):
                continue
            (theirs,) = arch.layers_of(imp.target) or [None]
            if theirs is None:
                whose = "no layer"
            elif layer.name in theirs.may:
                whose = f"layer `{theirs.name}`, above it"
            else:
                whose = f"layer `{theirs.name}`"
            problems.append(
                f"{where(module, imp.line)}: {module.name} imports {imp.target} ({whose}): {layer.rule} ({DOC_NAME})"
            )
    return problems


def never_import_violations(arch: Architecture, modules: dict[str, Module]) -> list[str]:
    """A layer's `never imports` packages, checked through everything it may import, transitively."""
    problems = []
    for layer in arch.layers:
        if not layer.never:
            continue
        start = {m for m in modules if layer.holds(m) or arch.allowed(layer, m)}
        via: dict[str, str] = {m: m for m in start}
        todo = sorted(start)
        while todo:
            current = todo.pop()
            for imp in modules[current].ours:
                if imp.target in modules and imp.target not in via:
                    via[imp.target] = via[current]
                    todo.append(imp.target)
        for name in sorted(via):
            module = modules[name]
            for imp in module.third_party:
                if imp.target in layer.never:
                    reached = "" if layer.holds(name) else f", and layer `{layer.name}` may import {via[name]}"
                    problems.append(
                        f"{where(module, imp.line)}: {name} imports {imp.target}: layer `{layer.name}` never imports "
                        f"{imp.target}, not even transitively{reached} ({DOC_NAME})"
                    )
    return problems


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def arch() -> Architecture:
    return read_architecture(DOC.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return parse_package()


def test_the_layer_table_only_points_down(arch: Architecture) -> None:
    names = [layer.name for layer in arch.layers]
    assert len(set(names)) == len(names), f"a layer is listed twice in {DOC_NAME}: {names}"
    problems = []
    for layer in arch.layers:
        for token in layer.may:
            target = arch.layer(token)
            owners = (
                [target] if target else [other for other in arch.layers if any(covers(token, m) for m in other.members)]
            )
            if not owners:
                problems.append(f"layer `{layer.name}` may import `{token}`, which is no layer or module of the table")
            for owner in owners:
                if owner.rank > layer.rank:
                    problems.append(f"layer `{layer.name}` may import `{token}` of layer `{owner.name}` above it")
        if CLI in layer.may or "cli" in layer.may:
            problems.append(f"layer `{layer.name}` may import cli, but nothing imports tftmon.cli")
    contract = arch.layer("contract")
    assert contract is not None and not contract.may, "the contract layer imports nothing of ours"
    assert not problems, "\n".join(problems)


def test_every_module_is_placed_and_documented(arch: Architecture, modules: dict[str, Module]) -> None:
    problems = []
    for name, module in sorted(modules.items()):
        placed = arch.layers_of(name)
        if len(placed) != 1:
            problems.append(f"{name} is in {len(placed)} layers of {DOC_NAME}'s layer table, not one")
        # A package's __init__ may be covered by the layer table (`data/`); every other module needs a row.
        entries = arch.documented + (
            tuple(m for layer in arch.layers for m in layer.members) if module.path.name == "__init__.py" else ()
        )
        if name not in entries:
            problems.append(f"{name} ({module.path.relative_to(ROOT)}) is missing from {DOC_NAME}'s module table")
    for name in arch.documented:
        if name not in modules:
            problems.append(f"{DOC_NAME}'s module table lists {name}, which does not exist")
    for importer, imported in sorted(arch.exceptions):
        for name in (importer, imported):
            if name not in modules:
                problems.append(f"{DOC_NAME}'s exceptions name {name}, which does not exist")
    assert len(set(arch.documented)) == len(arch.documented), f"a module is listed twice in {DOC_NAME}"
    assert not problems, "\n".join(problems)


def test_imports_follow_the_layers(arch: Architecture, modules: dict[str, Module]) -> None:
    problems = import_violations(arch, modules)
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_contract_imports_nothing_of_ours(arch: Architecture, modules: dict[str, Module]) -> None:
    contract = arch.layer("contract")
    assert contract is not None
    problems = [
        f"{where(m, imp.line)}: {m.name} imports {imp.target}: the contract imports nothing of ours"
        for m in modules.values()
        if contract.holds(m.name)
        for imp in m.ours
    ]
    assert not problems, "\n".join(problems)


def test_nothing_imports_the_cli(modules: dict[str, Module]) -> None:
    problems = [
        f"{where(m, imp.line)}: {m.name} imports {imp.target}: nothing imports tftmon.cli"
        for m in modules.values()
        for imp in m.ours
        if imp.target == CLI
    ]
    assert not problems, "\n".join(problems)


def test_every_exception_is_still_used(arch: Architecture, modules: dict[str, Module]) -> None:
    stale = [
        f"{DOC_NAME} lists the exception {importer} -> {imported}, but {importer} no longer imports it: drop the row"
        for importer, imported in sorted(arch.exceptions)
        if importer in modules and imported not in {imp.target for imp in modules[importer].ours}
    ]
    assert not stale, "\n".join(stale)


def test_never_imports_hold_transitively(arch: Architecture, modules: dict[str, Module]) -> None:
    assert any(layer.never for layer in arch.layers), f"{DOC_NAME} lost the dashboard's `never imports`"
    problems = never_import_violations(arch, modules)
    assert not problems, "\n".join(problems)


# The checker itself, on a throw-away package: it must see what it claims to see.

FAKE_DOC = """
| layer | modules | may import | never imports |
|---|---|---|---|
| `contract` | `__init__.py`, `contract.py` | nothing of ours | |
| `ground` | `risk.py` | `contract`, `ground` | |
| `model` | `model/` | `contract`, `ground`, `model` | |
| `serve` | `serve/` | `contract`, `ground`, `model`, `serve` | |
| `ops` | `ops/` | `contract`, `ground`, `model`, `ops` | |
| `cli` | `cli.py` | `contract`, `ground`, `model`, `serve`, `ops` | |
| `dashboard` | `dashboard/` | `contract.py`, `risk.py`, `dashboard` | `torch`, `mlflow` |

| importer | imports | why |
|---|---|---|
| `serve/edge.py` | `ops/registry.py` | allowed |

| module | owns |
|---|---|
| `contract.py` | facts |
"""


def fake_package(tmp_path: Path, files: dict[str, str]) -> dict[str, Module]:
    root = tmp_path / "tftmon"
    for rel, source in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(source)
    return parse_package(root)


def test_the_checker_sees_nested_type_checking_and_relative_imports(tmp_path: Path) -> None:
    modules = fake_package(
        tmp_path,
        {
            "contract.py": "import typing\nif typing.TYPE_CHECKING:\n    from tftmon.model import net\n",
            "risk.py": "def f():\n    from . import contract\n    import importlib\n"
            "    importlib.import_module('torch')\n",
            "model/net.py": "from ..ops.registry import x\nfrom .other import y\n",
            "model/other.py": "",
            "ops/registry.py": "",
            "serve/edge.py": "from tftmon.ops import registry\n",
            "serve/other.py": "from tftmon.ops import registry\nfrom tftmon import cli\n",
            "cli.py": "",
            "dashboard/app.py": "import torch.nn\nfrom tftmon import risk\nfrom tftmon.model import net\n",
        },
    )
    assert [i.target for i in modules["tftmon.contract"].ours] == ["tftmon.model.net"]
    assert [i.target for i in modules["tftmon.risk"].ours] == ["tftmon.contract"]
    assert [i.target for i in modules["tftmon.model.net"].ours] == ["tftmon.ops.registry", "tftmon.model.other"]
    arch = read_architecture(FAKE_DOC)
    problems = "\n".join(import_violations(arch, modules))
    assert (
        "tftmon.contract imports tftmon.model.net (layer `model`, above it): layer `contract` imports nothing of ours"
        in problems
    )
    assert (
        "tftmon.model.net imports tftmon.ops.registry (layer `ops`, above it): layer `model` may import only"
        in problems
    )
    assert "tftmon.serve.other imports tftmon.ops.registry (layer `ops`): layer `serve` may import only" in problems
    assert "tftmon.serve.other imports tftmon.cli: nothing imports tftmon.cli" in problems
    assert "tftmon.dashboard.app imports tftmon.model.net" in problems
    assert "tftmon.serve.edge" not in problems  # the listed exception
    assert "tftmon.risk imports" not in problems  # same layer and below
    never = "\n".join(never_import_violations(arch, modules))
    assert "tftmon.dashboard.app imports torch: layer `dashboard` never imports torch" in never
    assert "tftmon.risk imports torch: layer `dashboard` never imports torch, not even transitively" in never
