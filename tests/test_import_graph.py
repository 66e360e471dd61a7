"""The import graph of `pipeline`: no cycles, and no import up the layers.

Read from the syntax tree, never by importing: every `import` and `from ... import` counts,
module-level, function-level and under `if TYPE_CHECKING:` alike (a cycle that only type
checking closes is still two modules that cannot be understood one without the other).
Relative imports are resolved; a package's `__init__.py` counts as the package itself.

Upward imports:
- a module importing a package that contains it (`pipeline/data/clean.py` importing
  `pipeline.data`, anything importing `pipeline`): the package's `__init__` is the layer above;
- anything outside `pipeline/orchestration/` importing `pipeline.orchestration`, the layer that
  drives the stages (Airflow tasks, remote runs); and anything in `pipeline/` importing `dags`.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tests.conftest import REPO_ROOT

ORCHESTRATION = "pipeline.orchestration"
DAGS = "dags"

Graph = Mapping[str, frozenset[str]]


@dataclass(frozen=True, order=True)
class Import:
    """One imported name: the module that imports it, the line, what it names."""

    module: str  # the importing module
    line: int
    target: str  # `from a import b`: a.b where that is a module, else a; `import a.b`: a.b


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module under root/package (`__init__` = package)."""
    names = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def resolve_from(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a `from` import reads from (relative ones against `module`)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def imports_in(module: str, path: Path, modules: Mapping[str, Path]) -> list[Import]:
    """Every import in the file of `module`, each target as specific as the statement says.

    `from pipeline.data import clean` targets the module `pipeline.data.clean`;
    `from pipeline.registry import main` targets the package `pipeline.registry`.
    """
    found: list[Import] = []
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = resolve_from(node, module, is_package)
            named = (f"{source}.{alias.name}" for alias in node.names)
            targets = [name if name in modules else source for name in named]
        else:
            continue
        found.extend(Import(module, node.lineno, target) for target in targets)
    return found


@cache
def pipeline_imports(root: Path = REPO_ROOT) -> tuple[Import, ...]:
    modules = module_names(root, "pipeline")
    return tuple(
        sorted(i for name, path in modules.items() for i in imports_in(name, path, modules))
    )


def import_graph(imports: Iterable[Import], modules: Iterable[str]) -> dict[str, frozenset[str]]:
    """Module -> the modules of the same package it imports."""
    known = set(modules)
    edges: dict[str, set[str]] = {name: set() for name in known}
    for found in imports:
        if found.target in known:
            edges[found.module].add(found.target)
    return {name: frozenset(targets) for name, targets in edges.items()}


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's components with more than one module, or one module that imports itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while (member := stack.pop()) != node:
                component.append(member)
            component.append(node)
            if len(component) > 1 or node in graph[node]:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def shortest_path(start: str, goal: str, graph: Graph, component: frozenset[str]) -> list[str]:
    """The shortest chain start -> ... -> goal through modules of `component` (breadth first)."""
    parents = {start: start}
    queue = deque([start])
    while queue and goal not in parents:
        node = queue.popleft()
        for nxt in sorted(graph[node] & component):
            if nxt not in parents:
                parents[nxt] = node
                queue.append(nxt)
    if goal not in parents:
        raise AssertionError(f"no path {start} -> {goal} within {sorted(component)}")
    chain = [goal]
    while chain[-1] != start:
        chain.append(parents[chain[-1]])
    return chain[::-1]


def cycles(graph: Graph) -> list[str]:
    """Each cycle as "a -> b -> a", starting at its smallest module.

    One shortest cycle per import that closes one, so every import to cut shows up in a chain.
    """
    chains = set()
    for component in map(frozenset, strongly_connected(graph)):
        for module in component:
            for target in graph[module] & component:
                chain = [module, *shortest_path(target, module, graph, component)][:-1]
                first = chain.index(min(chain))
                rotated = chain[first:] + chain[:first]
                chains.add(" -> ".join([*rotated, rotated[0]]))
    return sorted(chains)


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def upward(found: Import) -> str | None:
    """Why this import goes up the layers, or None."""
    module, target = found.module, found.target
    if module.startswith(target + "."):
        return f"{target} is a package that contains {module}"
    if within(target, ORCHESTRATION) and not within(module, ORCHESTRATION):
        return "only pipeline/orchestration/ may import the orchestration layer"
    if within(target, DAGS):
        return "pipeline/ may not import the Airflow DAG files"
    return None


def upward_imports(imports: Iterable[Import], root: Path = REPO_ROOT) -> list[str]:
    modules = module_names(root, "pipeline")
    return [
        f"{modules[i.module].relative_to(root)}:{i.line}: imports {i.target}: {reason}"
        for i in imports
        if (reason := upward(i))
    ]


def test_pipeline_has_no_import_cycles() -> None:
    modules = module_names(REPO_ROOT, "pipeline")
    found = cycles(import_graph(pipeline_imports(), modules))
    assert found == [], "import cycles in pipeline/:\n" + "\n".join(found)


def test_pipeline_has_no_upward_imports() -> None:
    found = upward_imports(pipeline_imports())
    assert found == [], "upward imports in pipeline/:\n" + "\n".join(found)


# --- the graph reader itself, on a tiny package -------------------------------------------------


def write_package(root: Path, files: Mapping[str, str]) -> None:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")


TINY_PIPELINE = {
    "pipeline/__init__.py": "",
    "pipeline/text.py": "import unicodedata\n",
    "pipeline/data/__init__.py": "from pipeline.data.clean import main\n",
    "pipeline/data/clean.py": (
        "from pipeline import text\n"
        "from . import pair_frames\n"
        "def main():\n"
        "    from .validate_raw import run\n"
    ),
    "pipeline/data/validate_raw.py": "from .pair_frames import frame\nimport pipeline.data\n",
    "pipeline/data/pair_frames.py": "from ..data.clean import normalize_text\nimport dags.mt\n",
    "pipeline/orchestration/__init__.py": "",
    "pipeline/orchestration/tasks.py": "from pipeline.orchestration import retries\n",
    "pipeline/tokenize.py": "from pipeline.orchestration.tasks import run\n",
}


def test_imports_are_resolved_relative_and_function_level_included(tmp_path: Path) -> None:
    write_package(tmp_path, TINY_PIPELINE)
    modules = module_names(tmp_path, "pipeline")
    graph = import_graph(pipeline_imports(tmp_path), modules)
    assert graph["pipeline.data.clean"] == {
        "pipeline.text",
        "pipeline.data.pair_frames",
        "pipeline.data.validate_raw",
    }
    assert graph["pipeline.data.pair_frames"] == {"pipeline.data.clean"}
    assert graph["pipeline.data"] == {"pipeline.data.clean"}
    assert graph["pipeline.orchestration.tasks"] == {"pipeline.orchestration"}


def test_each_cycle_is_named_as_a_chain(tmp_path: Path) -> None:
    write_package(tmp_path, TINY_PIPELINE)
    graph = import_graph(pipeline_imports(tmp_path), module_names(tmp_path, "pipeline"))
    assert cycles(graph) == [
        "pipeline.data -> pipeline.data.clean -> pipeline.data.validate_raw -> pipeline.data",
        "pipeline.data.clean -> pipeline.data.pair_frames -> pipeline.data.clean",
        "pipeline.data.clean -> pipeline.data.validate_raw -> pipeline.data.pair_frames"
        " -> pipeline.data.clean",
    ]


def test_upward_imports_are_named_with_file_line_and_rule(tmp_path: Path) -> None:
    write_package(tmp_path, TINY_PIPELINE)
    assert upward_imports(pipeline_imports(tmp_path), tmp_path) == [
        "pipeline/data/pair_frames.py:2: imports dags.mt: "
        "pipeline/ may not import the Airflow DAG files",
        "pipeline/data/validate_raw.py:2: imports pipeline.data: "
        "pipeline.data is a package that contains pipeline.data.validate_raw",
        "pipeline/orchestration/tasks.py:1: imports pipeline.orchestration: "
        "pipeline.orchestration is a package that contains pipeline.orchestration.tasks",
        "pipeline/tokenize.py:1: imports pipeline.orchestration.tasks: "
        "only pipeline/orchestration/ may import the orchestration layer",
    ]
