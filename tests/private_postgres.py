"""A private PostgreSQL cluster for tests that stop the database for real.

The machine's server on 5432 is shared with other test runs, so a test that stops MLflow's
backend store creates its own cluster: `initdb` as the `postgres` OS user in a throw-away
folder under /tmp (the tests' tmp_path is root-only, and PostgreSQL refuses to run as root),
trust auth, a free 127.0.0.1 port, its socket in the same folder. `stop()` is `pg_ctl stop -m
immediate`: every backend is killed without a checkpoint, as when the database host dies, and
`start()` brings it back on the same port through crash recovery.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.mlflow_server import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"


@dataclass
class PrivatePostgres:
    """One cluster in `folder` (data/, server.log, the socket) listening on `port`."""

    folder: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    def url(self, database: str) -> str:
        """A SQLAlchemy URL (what `mlflow server --backend-store-uri` takes)."""
        return f"postgresql+psycopg2://{OS_USER}@127.0.0.1:{self.port}/{database}"

    def _pg(self, program: str, *args: str) -> None:
        command = ["runuser", "-u", OS_USER, "--", str(PG_BIN / program), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(args)}: {done.stderr}\n{self._log_tail()}")

    def _log_tail(self) -> str:
        log = self.folder / "server.log"
        return (
            "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else ""
        )

    def init(self) -> PrivatePostgres:
        self._pg("initdb", "-D", str(self.data_dir), "-A", "trust", "-U", OS_USER, "--no-sync")
        return self

    def start(self) -> PrivatePostgres:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        log = str(self.folder / "server.log")
        self._pg("pg_ctl", "-D", str(self.data_dir), "-l", log, "-o", options, "-w", "start")
        return self

    def stop(self, mode: str = "immediate") -> None:
        self._pg("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        status = ["runuser", "-u", OS_USER, "--", str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir)]
        done = subprocess.run([*status, "status"], capture_output=True, timeout=60, check=False)
        return done.returncode == 0

    def create_database(self, name: str) -> str:
        import psycopg

        dsn = f"postgresql://{OS_USER}@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started private cluster; stopped and deleted afterwards, whatever the test did."""
    folder = Path(tempfile.mkdtemp(prefix="mt-private-pg-"))
    shutil.chown(folder, OS_USER, OS_USER)
    cluster = PrivatePostgres(folder, free_port())
    try:
        yield cluster.init().start()
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            if cluster.running():
                cluster.stop("fast")
        shutil.rmtree(folder, ignore_errors=True)
