"""docs/environment.md names every `MT_*` variable the project uses, and only those.

"Used" means written in the code and configuration a deployment runs: pipeline/ and dags/
(Python), docker/ (compose.yaml, .env.example, the Dockerfiles, the shell scripts), the
Makefile and benchmarks/ (Python, shell). tests/ does not count: a variable only a test reads
is documented where that test is.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import REPO_ROOT

TABLE = REPO_ROOT / "docs" / "environment.md"
# A whole word, ending in a letter or digit: `f"MT_TEST_{x}"` holds a prefix, not a name.
NAME = re.compile(r"(?<![A-Za-z0-9_])MT_[A-Z0-9_]*[A-Z0-9](?![A-Za-z0-9_{])")
ROW = re.compile(r"^\| `(MT_[A-Z0-9_]+)` \|")
SCANNED = {
    "pipeline": ("**/*.py",),
    "dags": ("**/*.py",),
    "docker": ("compose.yaml", ".env.example", "*Dockerfile", "*.sh"),
    "benchmarks": ("**/*.py", "**/*.sh"),
    ".": ("Makefile",),
}


def scanned_files(root: Path) -> list[Path]:
    files: set[Path] = set()
    for folder, patterns in SCANNED.items():
        for pattern in patterns:
            files.update(path for path in (root / folder).glob(pattern) if path.is_file())
    return sorted(files)


def used_names(root: Path) -> dict[str, list[str]]:
    """Each MT_* name -> the files (relative to `root`) that use it."""
    used: dict[str, list[str]] = {}
    for path in scanned_files(root):
        for name in sorted(set(NAME.findall(path.read_text(encoding="utf-8")))):
            used.setdefault(name, []).append(path.relative_to(root).as_posix())
    return used


def documented_names(table: Path) -> list[str]:
    return [m.group(1) for line in table.read_text("utf-8").splitlines() if (m := ROW.match(line))]


def test_the_scan_finds_names_in_every_kind_of_place(tmp_path: Path) -> None:
    (tmp_path / "pipeline" / "sub").mkdir(parents=True)
    (tmp_path / "pipeline" / "sub" / "a.py").write_text('X = "MT_ONE"\nY = f"MT_TEST_{z}"\n')
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "compose.yaml").write_text("image: x:${MT_TWO:-1}\n")
    (tmp_path / "docker" / "README.md").write_text("MT_NOT_SCANNED\n")
    (tmp_path / "Makefile").write_text("run:\n\tFORMAT_X=1 MT_THREE=2 mt\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text('"MT_TESTS_ONLY"\n')
    assert used_names(tmp_path) == {
        "MT_ONE": ["pipeline/sub/a.py"],
        "MT_THREE": ["Makefile"],
        "MT_TWO": ["docker/compose.yaml"],
    }


def test_every_row_has_a_reader_a_default_and_a_meaning() -> None:
    rows = [line for line in TABLE.read_text("utf-8").splitlines() if ROW.match(line)]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        assert len(cells) == 4 and all(cells), f"docs/environment.md: malformed row: {row}"


def test_the_table_names_exactly_the_variables_in_use() -> None:
    documented = documented_names(TABLE)
    duplicates = sorted({name for name in documented if documented.count(name) > 1})
    assert not duplicates, f"docs/environment.md names these twice: {duplicates}"
    used = used_names(REPO_ROOT)
    missing = sorted(set(used) - set(documented))
    stale = sorted(set(documented) - set(used))
    assert not missing and not stale, (
        "docs/environment.md is out of date.\n"
        + "".join(f"  missing: {name} (used in {', '.join(used[name])})\n" for name in missing)
        + "".join(f"  stale: {name} (used nowhere any more: delete its row)\n" for name in stale)
    )
