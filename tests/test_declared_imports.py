"""Every third-party module the code imports is declared in pyproject.toml, and locked.

A module that only arrives as another package's dependency works until that package drops it;
a fresh `pip install mt-pipeline` then fails at import time. pipeline/ and dags/ may import what
[project] dependencies declares; tests/ also what the `test` and `dev` extras declare.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

from tests.conftest import REPO_ROOT

FIRST_PARTY = frozenset({"pipeline", "dags", "tests"})
RUNTIME_FOLDERS = ("pipeline", "dags")


def normalise(name: str) -> str:
    """PEP 503: `ruamel.yaml`, `Ruamel_Yaml` and `ruamel-yaml` are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The distribution a requirement names, without its extras, version range or marker."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, f"pyproject.toml: {requirement!r} names no distribution"
    return normalise(match.group(1))


@cache
def declared(*groups: str) -> frozenset[str]:
    """Distributions of [project] dependencies (group "") and of the named extras."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    requirements = [r for g in groups for r in (extras[g] if g else project["dependencies"])]
    return frozenset(requirement_name(r) for r in requirements)


def imported_modules(source: str, filename: str) -> set[str]:
    """Top-level names of every absolute import, function-level ones included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - FIRST_PARTY - set(sys.stdlib_module_names)


@cache
def imports_of(path: Path) -> frozenset[str]:
    # Cached: parsing the ~160 files is most of this module's time, and two tests read tests/.
    return frozenset(imported_modules(path.read_text(encoding="utf-8"), str(path)))


@cache
def module_distributions() -> dict[str, frozenset[str]]:
    return {m: frozenset(map(normalise, d)) for m, d in packages_distributions().items()}


def undeclared(root: Path, folders: tuple[str, ...], allowed: frozenset[str]) -> list[str]:
    """One line per (file, module) under root/folders whose distribution `allowed` lacks.

    A top-level name several distributions provide (airflow's providers, mlflow and
    mlflow-skinny) is declared when one of them is.
    """
    found = []
    for path in sorted(p for folder in folders for p in (root / folder).rglob("*.py")):
        where = path.relative_to(root)
        for module in sorted(imports_of(path)):
            distributions = module_distributions().get(module, frozenset())
            if not distributions & allowed:
                owner = ", ".join(sorted(distributions)) or "no installed distribution"
                found.append(f"{where}: {module} ({owner})")
    return found


def locked() -> set[str]:
    lines = (REPO_ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines()
    return {normalise(line.split("==")[0]) for line in lines if "==" in line}


def test_pipeline_and_dags_import_only_declared_dependencies() -> None:
    missing = undeclared(REPO_ROOT, RUNTIME_FOLDERS, declared(""))
    assert missing == [], "add to pyproject.toml [project] dependencies:\n" + "\n".join(missing)


def test_tests_import_only_declared_dependencies_and_extras() -> None:
    missing = undeclared(REPO_ROOT, ("tests",), declared("", "test", "dev"))
    assert missing == [], "add to pyproject.toml's `test` extra:\n" + "\n".join(missing)


def test_the_test_extra_holds_only_what_tests_import() -> None:
    """A stale entry installs what nothing uses; one pipeline/ needs belongs in dependencies."""
    modules = set().union(*(imports_of(p) for p in (REPO_ROOT / "tests").rglob("*.py")))
    imported = set().union(*(module_distributions().get(m, frozenset()) for m in modules))
    assert declared("test") - imported == set()
    assert declared("test") & declared("") == set()


def test_every_declared_distribution_is_locked() -> None:
    assert declared("", "test", "dev") - locked() == set()


def test_imports_are_read_from_the_syntax_tree() -> None:
    source = (
        "from __future__ import annotations\n"
        "import os.path, yaml\n"
        "from ruamel.yaml import YAML\n"
        "from . import sibling\n"
        "from pipeline.config import load_config\n"
        "def parse():\n"
        "    from hydra.errors import HydraException\n"
        "text = 'import requests'\n"
    )
    assert imported_modules(source, "example.py") == {"yaml", "ruamel", "hydra"}


def test_requirement_names_are_normalised_without_extras_or_markers() -> None:
    assert requirement_name("ruamel.yaml>=0.18") == "ruamel-yaml"
    assert requirement_name("apache-airflow[celery,postgres]>=3.3,<4") == "apache-airflow"
    assert requirement_name("tensorflow-cpu>=2.21; sys_platform == 'linux'") == "tensorflow-cpu"
    assert requirement_name("types-PyYAML") == "types-pyyaml"


def test_an_undeclared_import_is_named_with_its_file_and_distribution(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "stage.py").write_text(
        "import yaml\nimport requests\nimport no_such_module_anywhere\n", encoding="utf-8"
    )
    assert undeclared(tmp_path, ("pkg",), frozenset({"pyyaml"})) == [
        "pkg/stage.py: no_such_module_anywhere (no installed distribution)",
        "pkg/stage.py: requests (requests)",
    ]
