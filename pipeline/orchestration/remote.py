"""Where the DVC remote is, as this worker sees it, and how a run's workspace is pointed at it.

The URL comes from env `MT_DVC_REMOTE` (each host may reach the remote by another address),
else from params.yaml `orchestration.dvc_remote`; empty in both means one host: every task of a
run works in the same workspace and nothing is pushed or pulled (`make repro` never needs one).
Credentials never go into params.yaml or git: env `MT_DVC_REMOTE_USER`/`MT_DVC_REMOTE_PASSWORD`
are written into the workspace's git-ignored `.dvc/config.local` (DVC's own place for them);
S3 and similar remotes take their usual environment (AWS_* ...) instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.errors import ConfigError, PipelineError
from pipeline.programs import program

REMOTE_ENV = "MT_DVC_REMOTE"
USER_ENV = "MT_DVC_REMOTE_USER"
PASSWORD_ENV = "MT_DVC_REMOTE_PASSWORD"  # noqa: S105 (an environment variable's name)
REMOTE_NAME = "mt-remote"
# Protocols DVC handles with the plugins this project installs or documents.
KNOWN_SCHEMES = ("s3://", "ssh://", "webdav://", "webdavs://", "gs://", "azure://", "/")


def remote_url(root: Path) -> str:
    """The remote of this worker, or "" when the deployment is one host."""
    url = os.environ.get(REMOTE_ENV, "").strip() or _params_remote(root)
    if url and not url.startswith(KNOWN_SCHEMES):
        raise ConfigError(
            f"DVC remote {url!r} (env {REMOTE_ENV} or orchestration.dvc_remote): not a remote "
            f"URL; expected one of {', '.join(KNOWN_SCHEMES)}, e.g. s3://bucket/mt or "
            "webdav://host:8080/dvc"
        )
    return url


def _params_remote(root: Path) -> str:
    """orchestration.dvc_remote, read raw: the whole config is checked where it is used (and
    load_config caches what it read, which must not be params.yaml before a run's overrides)."""
    try:
        raw = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return ""  # the stage itself reports an unreadable params.yaml, in its own words
    value = (raw.get("orchestration") or {}).get("dvc_remote") or ""
    return str(value).strip()


def configure_remote(root: Path, url: str) -> None:
    """Make `url` the workspace's default remote in `.dvc/config.local`, with credentials from
    env; through DVC's own config API (what `dvc remote add --local` does, without paying
    three `dvc` start-ups in every task)."""
    from dvc.config import Config
    from dvc.config import ConfigError as DvcConfigError

    remote: dict[str, str] = {"url": url}
    for option, variable in (("user", USER_ENV), ("password", PASSWORD_ENV)):
        if os.environ.get(variable):
            remote[option] = os.environ[variable]
    try:
        with Config(str(root / ".dvc")).edit("local") as local:
            # Merged: options set by hand (`dvc remote modify --local mt-remote ...`) stay.
            local["remote"].setdefault(REMOTE_NAME, {}).update(remote)
            local["core"]["remote"] = REMOTE_NAME
    except DvcConfigError as error:
        raise ConfigError(f"{root / '.dvc'}: cannot set the DVC remote {url!r}: {error}") from None


def dvc(root: Path, *args: str) -> None:
    """Run `dvc ARGS` in `root`; its output goes to the task log on stderr (stdout is
    kept for the task's result); a failure is one line naming the command."""
    command = [program("dvc"), *args]
    output = sys.stderr.fileno()
    done = subprocess.run(command, cwd=root, stdout=output, stderr=output, check=False)
    if done.returncode != 0:
        raise PipelineError(f"{root}: `dvc {' '.join(args)}` failed (exit {done.returncode})")
