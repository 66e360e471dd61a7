"""The parts of `mt train` (pipeline/train.py), one concern per module.

- `data`: token pairs -> teacher-forcing rows -> bucketed `tf.data` batches
- `objective`: loss, NLL metric, learning-rate schedule, `compile_for_training`
- `devices`: precision / XLA / GPU plan and hardware tags
- `history`: history rows, `history.csv`, `metrics.json`
- `checkpoints`: the resume state in models/checkpoints (journal, best weights, Keras backup)
- `tracking`: the MLflow run, with per-epoch metrics that survive an MLflow outage
- `outputs`: the float32 export and the all-or-nothing outputs, a full disk reported clearly
"""
