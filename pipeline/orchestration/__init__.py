"""What Airflow calls: everything the DAGs in dags/ run besides the pipeline's own stages.

- `tasks`: the retrain DAG's tasks: a run's settings, the stage and experiment task scripts,
  the approval request and the promotion (see docs/airflow.md for the picture)
- `run_params`: what a run may override, from its Trigger form or asset events
- `stage_runner`, `commands`: `mt stage run|save|close`, one DVC stage of a run in the run's
  workspace (pipeline/workspaces.py), on one host or several
- `carried`, `remote`: several hosts: what a run carries between tasks, the DVC remote
- `dag_defaults`, `alerts`: what every DAG shares: default args, failure and approval notices
- `batch_request`: what translate_batch translates, from its form or asset events

Nothing below this package imports it: the pipeline's stages and `mt` run without Airflow.
Only light imports at module level: the DAG files import these modules at parse time.
"""
