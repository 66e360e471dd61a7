"""The MLflow model registry: `mt register` (log, tag, gate) and `mt registry` (list, history,
promote, rollback). See docs/registry.md.

- `lineage`: the tags every version carries (git, DVC hashes, params, metrics, Airflow run).
- `gate`: the pure decision: paired bootstrap of challenger against champion.
- `store`: the MLflow calls: log the pyfunc, create the version, move aliases, audit trail.
- `commands`: the `mt` entry points that read the project's files and print what changed.
"""

from pipeline.registry.commands import main, registry_main

__all__ = ["main", "registry_main"]
