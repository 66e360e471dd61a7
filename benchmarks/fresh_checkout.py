"""What the fresh-clone benchmarks share: a clone of HEAD laid out as on the team's machines, and
`/usr/bin/time -v`'s report read back (benchmarks/fresh_clone.py, benchmarks/ci_time.py)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIME_FIELDS = {
    "Elapsed (wall clock) time (h:mm:ss or m:ss)": "wall_s",
    "Maximum resident set size (kbytes)": "peak_rss_kb",
    "Exit status": "exit_status",
}


def clone_head(workdir: Path) -> Path:
    """A clone of HEAD at workdir/main; workdir/shared links to the team's shared folder, where
    the Makefile and the tests look for the data."""
    checkout = workdir / "main"
    subprocess.run(["git", "clone", "-q", str(REPO), str(checkout)], check=True)
    shared = REPO.parent / "shared"
    if shared.is_dir():
        (workdir / "shared").symlink_to(shared)
    return checkout


def run_timed(
    command: list[str], checkout: Path, log_path: Path, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """`command` in `checkout` under `/usr/bin/time -v`, no stdin, all output to `log_path`;
    its exit code and the log's text (the time report at its end)."""
    with log_path.open("w") as log:
        done = subprocess.run(
            ["/usr/bin/time", "-v", *command],
            cwd=checkout,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    return done.returncode, log_path.read_text(errors="replace")


def time_report(text: str) -> dict[str, float]:
    """Wall seconds, peak RSS (kB) and exit status from `/usr/bin/time -v`'s report in `text`."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.strip().rpartition(": ")
        name = TIME_FIELDS.get(key)
        if name == "wall_s":
            found[name] = wall_seconds(value)
        elif name is not None and re.fullmatch(r"\d+", value):
            found[name] = float(value)
    return found


def wall_seconds(value: str) -> float:
    """/usr/bin/time's h:mm:ss or m:ss.ss as seconds."""
    seconds = 0.0
    for part in value.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds
