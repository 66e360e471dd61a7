"""The pieces tests/test_multi_host.py stands on: namespaces as hosts, and servers they reach.

Two namespaces ("hosts") reach a private PostgreSQL, a private Redis and a WebDAV DVC remote on
the one server address, and nothing else: not the machine's own 127.0.0.1-only services, not
any other network. Afterwards no namespace, veth or process of theirs is left.
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.mlflow_server import BIN_DIR
from tests.netns import Namespace, isolated_hosts
from tests.pg_cluster import private_postgres
from tests.redis_server import private_redis
from tests.webdav_server import private_webdav

pytestmark = pytest.mark.slow

PYTHON, DVC = str(BIN_DIR / "python"), str(BIN_DIR / "dvc")
DAV_USER, DAV_PASSWORD = "dvc-writer", "s3cret-for-this-test"
TRACKED_TEXT = "Zwei Hunde spielen im Schnee.\n"

SELECT_ONE = """
import sys, psycopg
with psycopg.connect(sys.argv[1], connect_timeout=5) as connection:
    print(connection.execute("select 1").fetchone()[0])
"""
PING = "import sys, redis; print(redis.Redis.from_url(sys.argv[1], socket_timeout=5).ping())"
# For each host:port, "connected" or the errno name of the failure.
CONNECT = """
import errno, socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
        print("connected")
    except OSError as error:
        print(errno.errorcode[error.errno])
"""


def run_in(namespace: Namespace, argv: list[str], cwd: Path | None = None) -> str:
    """`argv` run inside `namespace`; its stdout, or a failure showing its stderr."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    if cwd is not None:  # DVC's per-repo index, kept beside the repo rather than in /var/tmp
        env["DVC_SITE_CACHE_DIR"] = str(cwd.parent / "dvc-site-cache")
    done = subprocess.run(
        namespace.command(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{argv} in {namespace.netns}:\n{done.stdout}\n{done.stderr}"
    return done.stdout.strip()


def git(repo: Path, *args: str) -> None:
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", *identity, *args], cwd=repo, check=True, capture_output=True)


def dvc_login(namespace: Namespace, repo: Path) -> None:
    """The remote's credentials, in `.dvc/config.local`: never committed, so set per clone."""
    run_in(namespace, [DVC, "remote", "modify", "--local", "store", "user", DAV_USER], repo)
    run_in(
        namespace, [DVC, "remote", "modify", "--local", "store", "password", DAV_PASSWORD], repo
    )


def anonymous_put_status(url: str) -> int:
    request = urllib.request.Request(url, data=b"not yours", method="PUT")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def push_tracked_file(namespace: Namespace, repo: Path, dvc_url: str) -> None:
    """A git + DVC project tracking one small file, pushed to the WebDAV remote."""
    repo.mkdir()
    git(repo, "init", "-q")
    run_in(namespace, [DVC, "init", "-q"], repo)
    (repo / "data.txt").write_text(TRACKED_TEXT, encoding="utf-8")
    run_in(namespace, [DVC, "add", "-q", "data.txt"], repo)
    run_in(namespace, [DVC, "remote", "add", "-d", "store", dvc_url], repo)
    dvc_login(namespace, repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "track data.txt")
    run_in(namespace, [DVC, "push", "-q"], repo)


def pull_tracked_file(namespace: Namespace, origin: Path, clone: Path) -> str:
    """A separate clone of `origin` (no data, no cache, no credentials) pulls the file."""
    git(origin.parent, "clone", "-q", str(origin), str(clone))
    assert not (clone / "data.txt").exists()
    dvc_login(namespace, clone)
    run_in(namespace, [DVC, "pull", "-q"], clone)
    return (clone / "data.txt").read_text(encoding="utf-8")


def netns_names() -> list[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in listing.stdout.splitlines()]


def link_names() -> list[str]:
    """Interface names, without the `@peer` that `ip -o link` appends to a veth's."""
    listing = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return [line.split()[1].rstrip(":").split("@")[0] for line in listing.stdout.splitlines()]


def test_namespaces_reach_the_private_servers_and_nothing_else(tmp_path: Path) -> None:
    with isolated_hosts(["worker-a", "worker-b"]) as network:
        server = network.server_address
        worker_a, worker_b = network.namespace("worker-a"), network.namespace("worker-b")
        with (
            private_postgres(tmp_path / "postgres", server, network.block) as postgres,
            private_redis(tmp_path / "redis", server) as redis,
            private_webdav(tmp_path / "webdav", server, DAV_USER, DAV_PASSWORD) as webdav,
        ):
            for worker in (worker_a, worker_b):
                assert run_in(worker, [PYTHON, "-c", SELECT_ONE, postgres.url("postgres")]) == "1"
                assert run_in(worker, [PYTHON, "-c", PING, redis.url]) == "True"

            assert anonymous_put_status(f"{webdav.url}/anonymous.txt") == 401
            assert not (webdav.root / "anonymous.txt").exists()
            push_tracked_file(worker_a, tmp_path / "repo-a", webdav.dvc_url)
            pulled = pull_tracked_file(worker_b, tmp_path / "repo-a", tmp_path / "repo-b")
            assert pulled == TRACKED_TEXT

            targets = [
                f"{server}:{postgres.port}",  # our cluster, through the veth: reachable
                f"127.0.0.1:{postgres.port}",  # the namespace's own loopback: nothing there
                f"{server}:5432",  # the machine's PostgreSQL listens on 127.0.0.1 only
                "198.51.100.1:80",  # anywhere else: no default route
            ]
            answers = run_in(worker_b, [PYTHON, "-c", CONNECT, *targets]).splitlines()
            assert answers == ["connected", "ECONNREFUSED", "ECONNREFUSED", "ENETUNREACH"]

            # Left running on purpose: leaving the context must kill it.
            sleeper = subprocess.Popen(worker_a.command(["sleep", "300"]))

    assert sleeper.wait(timeout=10) == -9
    ours = network.namespaces.values()
    assert [ns.netns for ns in ours if ns.netns in netns_names()] == []
    assert [ns.host_interface for ns in ours if ns.host_interface in link_names()] == []
