"""The parts of `mt train` (pipeline/train.py), one concern per module.

- `data`: token pairs -> teacher-forcing rows -> bucketed, padded batches (numpy; `tf.data` under
  TensorFlow)
- `devices`: precision / XLA / GPU plan and hardware tags, for the Keras backend in use
- `history`: history rows, `history.csv`, `metrics.json`
- `checkpoints`: the resume state in models/checkpoints (journal, best weights, Keras backup)
- `tracking`: the MLflow run, with per-epoch metrics that survive an MLflow outage
- `outputs`: the float32 export and the all-or-nothing outputs, a full disk reported clearly
"""
