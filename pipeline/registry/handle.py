"""What the audit trail (audit.py) and the champion lock (lock.py) use of a `Registry`.

store.py imports both to move `@champion`; they know the Registry by this interface (its
client, its store, the model's name, the champion now) and import nothing from store.py.
"""

from __future__ import annotations

from typing import Protocol

from mlflow import MlflowClient

from pipeline.paths import ProjectPaths


class RegistryHandle(Protocol):
    """One registered model in one tracking store (store.Registry is the one there is)."""

    client: MlflowClient
    uri: str
    name: str
    paths: ProjectPaths

    def champion_number(self) -> str | None:
        """The version `@champion` points at, or None."""
        ...
