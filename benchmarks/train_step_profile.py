"""Where a training step's time goes: each part of the model timed alone, forward + backward.

    .venv/bin/python benchmarks/train_step_profile.py [--project .] [--batches 40] [--keras-lstm]

Takes real batches of a tokenized project (data/tokens/train.npz, made by `dvc repro tokenize`)
as `mt train` batches them, and times, per batch, with TensorFlow (the default backend):

  input_pipeline    iterating the tf.data pipeline alone (bucketing, padding, shuffling)
  full_step         model.train_on_batch: the whole step with the optimizer update
  encoder           embedding + bidirectional LSTM, forward and gradients
  decoder_lstm      the decoder LSTM over the target embeddings, forward and gradients
  attention         Luong attention + the attentional layer, forward and gradients
  output_softmax    projection to the vocabulary + label-smoothed cross-entropy, fwd + grads
  optimizer         Adam's update of every weight (full_step minus a gradient-only step)

`--keras-lstm` builds the model with `keras.layers.LSTM` (the LSTM before issue 15) in place of
`ProjectedInputLSTM` and trains in float32, to profile the step as it was; without it the
precision is what `mt train` picks on this machine (`train.precision`). Each part runs on
tensors of the shapes it sees in the real model, in its own tf.function, after two warm-up
calls. The parts overlap a little (and the whole step also pays for dispatch), so they need not
add up to full_step exactly. Prints a table and writes benchmarks/results/train_step_profile.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "train_step_profile.json"


def seconds_per_call(function: Callable[[Any], Any], batches: list[Any]) -> float:
    """Mean wall seconds of `function` over `batches`, after two warm-up calls."""
    for batch in batches[:2]:
        function(batch)
    start = time.perf_counter()
    for batch in batches:
        function(batch)
    return (time.perf_counter() - start) / len(batches)


def gradient_timer(layers: list[Any], forward: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A tf.function computing `forward(batch)` and its gradients w.r.t. `layers`' weights."""
    import tensorflow as tf

    weights = [weight.value for layer in layers for weight in layer.trainable_weights]

    @tf.function(reduce_retracing=True)
    def step(batch: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(forward(batch))
        return tape.gradient(loss, weights)

    return step


def part_timers(model: Any, config: Any) -> dict[str, Callable[[Any], Any]]:
    """One timer per part of the model, each fed what that part sees in a real step."""
    import tensorflow as tf

    from pipeline.train import MaskedSequenceCrossEntropy

    get = model.get_layer
    encoder_layers = [get("source_embedding"), get("encoder")]
    loss = MaskedSequenceCrossEntropy(config.train.label_smoothing)
    embed_dim, decoder_dim = config.model.embedding_dim, 2 * config.model.hidden_units
    memory_dim = 2 * config.model.hidden_units

    def encoder(batch: Any) -> Any:
        source = batch[0]["source"]
        mask = get("source_mask")(source)
        return get("encoder")(get("source_embedding")(source), mask=mask)[0]

    def decoder(batch: Any) -> Any:
        target = batch[0]["target_in"]
        shape = (tf.shape(target)[0], config.model.hidden_units * 2)
        embedded = get("target_embedding")(target)
        return get("decoder")(embedded, initial_state=[tf.zeros(shape), tf.zeros(shape)])[0]

    def attention(batch: Any) -> Any:
        source, target = batch[0]["source"], batch[0]["target_in"]
        outputs = tf.ones([tf.shape(target)[0], tf.shape(target)[1], decoder_dim]) * 0.1
        memory = tf.ones([tf.shape(source)[0], tf.shape(source)[1], memory_dim]) * 0.1
        context, _ = get("attention")(outputs, memory, source != 0)
        return get("attentional")(get("attention_concat")([outputs, context]))

    def softmax(batch: Any) -> Any:
        labels = batch[1]
        hidden = tf.ones([tf.shape(labels)[0], tf.shape(labels)[1], embed_dim]) * 0.1
        return loss(labels, get("target_embedding")(hidden, project=True))

    return {
        "encoder": gradient_timer(encoder_layers, encoder),
        "decoder_lstm": gradient_timer([get("target_embedding"), get("decoder")], decoder),
        "attention": gradient_timer([get("attention"), get("attentional")], attention),
        "output_softmax": gradient_timer([get("target_embedding")], softmax),
    }


def whole_model_gradients(model: Any, loss: Any) -> Callable[[Any], Any]:
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def step(batch: Any) -> Any:
        with tf.GradientTape() as tape:
            value = loss(batch[1], model(batch[0], training=True))
        return tape.gradient(value, model.trainable_weights)

    return step


def profile(project: Path, batch_count: int, keras_lstm: bool) -> dict[str, Any]:
    import keras

    import pipeline.model.seq2seq
    from pipeline.config import load_config
    from pipeline.model.seq2seq import build_seq2seq
    from pipeline.paths import project_paths
    from pipeline.train import (
        MaskedSequenceCrossEntropy,
        compile_for_training,
        dtype_policy,
        plan_devices,
    )
    from pipeline.training.data import load_training_data, make_dataset

    config = load_config(project / "params.yaml")
    data = load_training_data(project_paths(project), config.train.max_tokens)
    train = config.train
    dataset = make_dataset(data.train, train.batch_size, train.bucket_boundaries, shuffle_seed=1)
    batches = list(dataset.take(batch_count))
    if keras_lstm:  # the benchmark's own switch: the graph builder looks the class up by name
        pipeline.model.seq2seq.ProjectedInputLSTM = keras.layers.LSTM  # type: ignore[misc]
    # the precision `mt train` would pick here (float32 for the step before issue 15)
    precision = "float32" if keras_lstm else plan_devices(train.precision, 0).precision
    keras.utils.set_random_seed(config.seed)
    with dtype_policy(precision):
        model = build_seq2seq(config.model, data.src_vocab_size, data.tgt_vocab_size)
        compile_for_training(model, train, jit_compile=False)
    timings = {"input_pipeline": _pipeline_seconds(dataset, batch_count)}
    timings["full_step"] = seconds_per_call(lambda b: model.train_on_batch(*b), batches)
    gradients_only = whole_model_gradients(
        model, MaskedSequenceCrossEntropy(train.label_smoothing)
    )
    forward_backward = seconds_per_call(gradients_only, batches)
    for name, timer in part_timers(model, config).items():
        timings[name] = seconds_per_call(timer, batches)
    timings["optimizer"] = max(timings["full_step"] - forward_backward, 0.0)
    tokens = sum(int((batch[1] != 0).numpy().sum()) for batch in batches) / len(batches)
    return {
        "lstm": "keras.layers.LSTM" if keras_lstm else "ProjectedInputLSTM",
        "precision": precision,
        "timings_s": timings,
        "target_tokens_per_batch": tokens,
        "batches": len(batches),
    }


def _pipeline_seconds(dataset: Any, batch_count: int) -> float:
    start = time.perf_counter()
    for _ in dataset.take(batch_count):
        pass
    return (time.perf_counter() - start) / batch_count


def print_table(result: dict[str, Any]) -> None:
    timings = result["timings_s"]
    full = timings["full_step"]
    print(f"{'part':<16} {'ms/batch':>9} {'share of step':>14}")
    print("-" * 41)
    for name, seconds in timings.items():
        print(f"{name:<16} {seconds * 1000:>9.1f} {seconds / full:>13.0%}")
    print(f"target tokens per batch: {result['target_tokens_per_batch']:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=REPO)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--keras-lstm", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = profile(args.project.resolve(), args.batches, args.keras_lstm)
    print_table(result)
    payload = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_1m": os.getloadavg()[0],
        },
        **result,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
