"""A throw-away PostgreSQL cluster that other "hosts" (network namespaces) can reach.

The machine's server listens on 127.0.0.1 only, which a namespace cannot reach (its 127.0.0.1
is its own loopback), so a test with Celery workers in namespaces (tests/netns.py) starts its
own cluster listening on the namespaces' server address and on 127.0.0.1, with trust auth for
the namespaces' /24 and localhost. It is `tests.private_postgres.PrivatePostgres` (initdb as
the `postgres` OS user, which the tests' root-only tmp_path would not let in, so its data and
socket live in a folder of its own under /tmp) listening on one more address.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.mlflow_server import free_port
from tests.private_postgres import OS_USER, PrivatePostgres


@dataclass
class PostgresCluster(PrivatePostgres):
    """A private cluster listening on `host` and 127.0.0.1, trusting `client_network`."""

    host: str
    client_network: str

    @property
    def log_file(self) -> Path:
        return self.folder / "server.log"

    def url(self, database: str) -> str:
        """`postgresql://postgres@<host>:<port>/<database>`: psycopg, SQLAlchemy, Airflow."""
        return f"postgresql://{OS_USER}@{self.host}:{self.port}/{database}"

    def start(self) -> PostgresCluster:
        self._trust_clients()
        options = f"-p {self.port} -k {self.folder} -c listen_addresses={self.host},127.0.0.1"
        log = str(self.log_file)
        self._pg("pg_ctl", "-D", str(self.data_dir), "-l", log, "-o", options, "-w", "start")
        return self

    def _trust_clients(self) -> None:
        """initdb's trust covers localhost only; the namespaces connect from their own /30s."""
        with (self.data_dir / "pg_hba.conf").open("a", encoding="utf-8") as hba:
            hba.write(f"host all all {self.client_network} trust\n")


@contextlib.contextmanager
def private_postgres(
    folder: Path, host: str, client_network: str | None = None
) -> Iterator[PostgresCluster]:
    """A started cluster on `host` (and 127.0.0.1) and a free port, trusting `client_network`
    (default: the /24 around `host`, the block tests/netns.py carves its pairs from).

    Afterwards it is stopped with `pg_ctl stop -m immediate`, its log is copied to
    `folder/postgres.log`, and its own folder is removed.
    """
    network = client_network or str(ipaddress.ip_network(f"{host}/24", strict=False))
    cluster_dir = Path(tempfile.mkdtemp(prefix="mt-pg-cluster-"))
    shutil.chown(cluster_dir, OS_USER, OS_USER)
    cluster = PostgresCluster(cluster_dir, free_port(), host, network)
    try:
        cluster.init()
        yield cluster.start()
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            if cluster.running():
                cluster.stop("immediate")
        folder.mkdir(parents=True, exist_ok=True)
        if cluster.log_file.is_file():
            shutil.copyfile(cluster.log_file, folder / "postgres.log")
        shutil.rmtree(cluster_dir, ignore_errors=True)
