"""The MLflow model registry: `mt register` (log, tag, gate) and `mt registry` (list, history,
promote, rollback, webhook). See docs/registry.md.

- `lineage`: the tags every version carries (git, DVC hashes, params, metrics, Airflow run).
- `gate`: the pure decision: paired bootstrap of challenger against champion on the task's
  metric (register.metric).
- `registration`, `registration_key`: one registration, resumable after a crash; `candidate`:
  what it logs and is judged on.
- `evidence_files`, `evidence_logging`, `evidence_charts`: the evaluation as MLflow metrics,
  datasets and artifacts; `model_card`: the version's description.
- `store`: the MLflow calls: create the version, move aliases by compare-and-set.
- `audit`: the trail of @champion moves, reconciled with moves made outside mt;
  `webhooks`: MLflow's registry webhooks received and recorded; `server_clock`: the tracking
  server's clock, which both date and check by; `lock`: the champion lock;
  `handle`: what `audit` and `lock` use of a `store.Registry`;
  `smoke`: the canary sentences every new champion must answer (any task).
- `auth_setup`: users and permissions on a basic-auth MLflow server (`mt mlflow-users`).
- `commands`: the `mt` entry points that read the project's files and print what changed.
"""

from pipeline.registry.commands import main, registry_main

__all__ = ["main", "registry_main"]
