"""What a run's workspace costs (pipeline/workspaces.py): seconds to make it and disk it adds.

On a project that has run `make repro` (its DVC cache holds the real corpus, tokenizer and
model), three ways to give a run a workspace of its own at HEAD with every DVC output in place:
- `worktree, links` (what runs use): `git worktree add` + the project's cache with
  `reflink,hardlink,copy`, then `dvc checkout`;
- `worktree, copies` (the baseline): the same with `cache.type copy`, DVC's default;
- `clone, links`: `git clone --local` (objects hardlinked) + the same cache links.
`dvc exp run --temp` is not among them: its workspace lives for one `exp run`, while a run
is one Airflow task per stage.

"added MiB" counts the bytes only the workspace holds (files not linked to anything else).
Prints a table; writes benchmarks/results/run_workspace.json.

    .venv/bin/python benchmarks/run_workspace.py --project /tmp/mt-fresh-clone-x/main
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.workspaces import (  # noqa: E402
    Workspace,
    committed_params,
    head_commit,
    open_workspace,
    remove_workspace,
)

RESULTS = REPO / "benchmarks" / "results" / "run_workspace.json"
MiB = 2**20
NAMES = {"reflink,hardlink,copy": "bench-links", "copy": "bench-copies"}


def added_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` that nothing outside it shares (hardlink count 1)."""
    total = 0
    for path in folder.rglob("*"):
        info = path.lstat()
        if path.is_file() and not path.is_symlink() and info.st_nlink == 1:
            total += info.st_size
    return total


def dvc_checkout(folder: Path) -> None:
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    subprocess.run(["dvc", "checkout", "--quiet"], cwd=folder, env=env, check=True)


def set_cache(folder: Path, project: Path, links: str) -> None:
    from dvc.config import Config

    with Config(str(folder / ".dvc")).edit("local") as local:
        local["cache"]["dir"] = str(project / ".dvc" / "cache")
        local["cache"]["type"] = links


def with_project_lock(project: Path, folder: Path) -> None:
    """The project's dvc.lock as `make repro` left it (a fresh clone does not commit it): the
    hashes of what its cache holds."""
    shutil.copy2(project / "dvc.lock", folder / "dvc.lock")


def worktree(project: Path, links: str) -> Callable[[], Path]:
    def make() -> Path:
        commit = head_commit(project)
        workspace = open_workspace(
            project, NAMES[links], commit, committed_params(project, commit)
        )
        set_cache(workspace.path, project, links)
        with_project_lock(project, workspace.path)
        return workspace.path

    return make


def clone(project: Path, target: Path) -> Callable[[], Path]:
    def make() -> Path:
        subprocess.run(["git", "clone", "-q", "--local", str(project), str(target)], check=True)
        set_cache(target, project, "reflink,hardlink,copy")
        with_project_lock(project, target)
        return target

    return make


def measure(name: str, make: Callable[[], Path]) -> dict[str, Any]:
    started = time.perf_counter()
    folder = make()
    made = time.perf_counter()
    dvc_checkout(folder)
    done = time.perf_counter()
    return {
        "way": name,
        "make_s": round(made - started, 3),
        "checkout_s": round(done - made, 3),
        "total_s": round(done - started, 3),
        "added_mib": round(added_bytes(folder) / MiB, 1),
        "folder": folder,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="a checkout after make repro")
    args = parser.parse_args(argv)
    project = args.project.resolve()
    cache_mib = sum(p.stat().st_size for p in (project / ".dvc/cache").rglob("*") if p.is_file())
    clone_target = project.parent / "bench-clone"
    shutil.rmtree(clone_target, ignore_errors=True)
    for name in NAMES.values():  # left by an interrupted run of this benchmark
        remove_workspace(Workspace(project, name))
    rows = [
        measure("worktree, links", worktree(project, "reflink,hardlink,copy")),
        measure("worktree, copies", worktree(project, "copy")),
        measure("clone, links", clone(project, clone_target)),
    ]
    for links in ("reflink,hardlink,copy", "copy"):
        remove_workspace(Workspace(project, NAMES[links]))
    shutil.rmtree(clone_target, ignore_errors=True)
    print(f"project {project}: DVC cache {cache_mib / MiB:.0f} MiB")
    print(f"{'way':<18} {'make s':>7} {'checkout s':>10} {'total s':>8} {'added MiB':>10}")
    for row in rows:
        print(
            f"{row['way']:<18} {row['make_s']:>7.2f} {row['checkout_s']:>10.2f} "
            f"{row['total_s']:>8.2f} {row['added_mib']:>10.1f}"
        )
    payload = {
        "machine": {"cpu": platform.processor() or _cpu_model(), "cores": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d"),
        "cache_mib": round(cache_mib / MiB, 1),
        "rows": [{k: v for k, v in row.items() if k != "folder"} for row in rows],
    }
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
