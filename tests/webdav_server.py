"""A real WebDAV server (WsgiDAV on cheroot) for a DVC remote that other hosts reach over HTTP.

One share, `/dvc`, served from `folder/remote`, with one user and password and no anonymous
access (WsgiDAV's simple domain controller). DVC's webdav plugin sends the user and password
as HTTP Basic auth, so Basic is what the server asks for first; Digest stays accepted.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.mlflow_server import BIN_DIR, _stop, _tail, free_port

SHARE = "/dvc"
STARTUP_TIMEOUT_S = 60


@dataclass
class WebdavServer:
    """`wsgidav` on `host:port` serving `folder/remote` as `/dvc`, logging to `folder`."""

    folder: Path
    host: str
    port: int
    user: str
    password: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{SHARE}"

    @property
    def dvc_url(self) -> str:
        """The remote's URL for `dvc remote add`; user and password go in `--local` config."""
        return f"webdav://{self.host}:{self.port}{SHARE}"

    @property
    def root(self) -> Path:
        return self.folder / "remote"

    @property
    def log_file(self) -> Path:
        return self.folder / "wsgidav.log"

    def write_config(self) -> Path:
        config = {
            "host": self.host,
            "port": self.port,
            "provider_mapping": {SHARE: str(self.root)},
            # "*": every share; a user not listed, anonymous included, gets 401.
            "simple_dc": {"user_mapping": {"*": {self.user: {"password": self.password}}}},
            "http_authenticator": {"accept_basic": True, "default_to_digest": False},
            "verbose": 3,  # one line per request in the log
        }
        config_file = self.folder / "wsgidav.yaml"
        config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
        return config_file

    def start(self) -> WebdavServer:
        self.root.mkdir(parents=True, exist_ok=True)
        command = [str(BIN_DIR / "wsgidav"), "--config", str(self.write_config())]
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_until_answering()
        return self

    def stop(self) -> None:
        _stop(self.process, signal.SIGTERM)

    def _wait_until_answering(self) -> None:
        """Until an authenticated GET of the share's listing answers 200."""
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request = urllib.request.Request(
            f"{self.url}/", headers={"Authorization": f"Basic {token}"}
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"wsgidav exited:\n{_tail(self.log_file)}")
            with (
                contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
                urllib.request.urlopen(request, timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.url}: not answering after {STARTUP_TIMEOUT_S}s")


@contextlib.contextmanager
def private_webdav(folder: Path, host: str, user: str, password: str) -> Iterator[WebdavServer]:
    """A running WebDAV server on `host` and a free port; stopped, its folder removed after."""
    folder.mkdir(parents=True, exist_ok=True)
    server = WebdavServer(folder, host, free_port(), user, password)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
