"""A private `redis-server` for tests that stop the broker for real.

The machine's Redis on 6379 is shared with other test runs, so a test that kills the broker
starts its own: a free port on 127.0.0.1 (or on `host`, e.g. a veth address from tests/netns.py),
a throw-away folder, no persistence (`--save ''`, `--appendonly no`), so a restart comes back
empty, as a broker that lost its host does. `kill()` is SIGKILL (no graceful shutdown, no final
save); `start()` brings it back on the same port, so every client's configured URL is right again.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.airflow_harness import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
STARTUP_TIMEOUT_S = 30


@dataclass
class RedisServer:
    """One `redis-server` process on `host:port`, logging to `folder/redis.log`."""

    folder: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            REDIS_SERVER, "--port", str(self.port), "--bind", self.host,
            "--save", "", "--appendonly", "no", "--dir", str(self.folder),
            "--logfile", str(self.folder / "redis.log"),
            # Protected mode turns away clients from other hosts when there is no password.
            "--protected-mode", "yes" if self.host == "127.0.0.1" else "no",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self._wait_until_answering()
        return self

    def kill(self) -> None:
        """SIGKILL the server and reap it: every connection drops, every key is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _wait_until_answering(self) -> None:
        import redis

        client = redis.Redis(host=self.host, port=self.port, socket_timeout=2)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise RuntimeError(f"redis-server on port {self.port} exited: {self.log()}")
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        return
                time.sleep(0.2)
        finally:
            client.close()
        raise RuntimeError(f"redis-server on port {self.port} not answering: {self.log()}")

    def log(self) -> str:
        log_file = self.folder / "redis.log"
        return log_file.read_text(errors="replace")[-3000:] if log_file.is_file() else "(no log)"


@contextlib.contextmanager
def private_redis(folder: Path, host: str = "127.0.0.1") -> Iterator[RedisServer]:
    """A running private Redis on `host` and a free port; killed, its folder removed after."""
    server = RedisServer(folder, free_port(), host=host).start()
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(folder, ignore_errors=True)
