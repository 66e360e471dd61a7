"""Sweeps: a grid of params.yaml overrides run as DVC experiments, chosen by their val score
in the task's metric (`val.<register.metric>`: val BLEU for translation).

`mt sweep run --set KEY=V1,V2 ...` runs every point of the grid in its own workspace (the
stages up to evaluate, pipeline/workspaces.py) and saves it as a DVC experiment, each point's
training run a child of the sweep's MLflow run; `mt sweep
best [--register]` prints the table and registers the best point through the normal gate. The
Airflow DAG `sweep_translation` runs the same steps with one mapped task per point. See the
Sweeps section of docs/training.md.

- `grid`: the `--set` syntax (DVC's), the cartesian product, every point validated first.
- `experiments`: each point's workspace and experiment; the winner registered from its commit.
- `tracking`: the MLflow parent run, the points' scores on their training runs, read back.
- `table`: rows ranked by val score, as Markdown.
- `runner`: plan, run a point, finish, register the best (shared by `mt` and the DAG).
- `commands`: `mt sweep run | best`.
"""

from pipeline.sweep.commands import main

__all__ = ["main"]
