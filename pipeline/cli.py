"""`mt`: the one entry point for every stage and tool; `dvc.yaml` and the DAG call it.

Each command lives in its own module with a `main(argv)`; modules are imported only when their
command runs, so `mt fetch` never pays for TensorFlow.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

from pipeline.errors import PipelineError
from pipeline.keras_start import import_keras_without_scikit_learn

log = logging.getLogger("pipeline.cli")
DISTRIBUTION = "mt-pipeline"  # pyproject.toml [project] name

# command -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "fetch": ("pipeline.data.fetch", "main", "download or copy the raw corpus into data/raw"),
    "validate": ("pipeline.data.validate_raw", "main", "Great Expectations suite over data/raw"),
    "clean": ("pipeline.data.clean", "main", "normalise and filter pairs into data/clean"),
    "tokenize": ("pipeline.tokenize", "main", "train SentencePiece and encode the splits"),
    "profile": (
        "pipeline.monitor.profile",
        "main",
        "profile the clean train sources: the reference for drift",
    ),
    "train": ("pipeline.train", "main", "train the Seq2Seq LSTM"),
    "evaluate": ("pipeline.evaluate", "main", "the task's metrics on the test and val splits"),
    "register": ("pipeline.registry", "main", "log the model to MLflow and run the gate"),
    "registry": (
        "pipeline.registry",
        "registry_main",
        "list | history | promote | rollback | webhook",
    ),
    "mlflow-users": (
        "pipeline.registry.auth_setup",
        "main",
        "pipeline and promoter accounts on an MLflow server with basic-auth",
    ),
    "translate": ("pipeline.translator", "main", "translate stdin or a file"),
    "serve": ("pipeline.serve_command", "main", "serve @champion over REST, following it"),
    "translate-batch": (
        "pipeline.monitor.batch",
        "main",
        "translate a file or folder with @champion: output + manifest, idempotent",
    ),
    "monitor": (
        "pipeline.monitor.watch",
        "main",
        "watch: check @champion (load, canary BLEU) and the drift of incoming text",
    ),
    "sweep": (
        "pipeline.sweep",
        "main",
        "run | best: a grid of DVC experiments, chosen by val BLEU, the best registered",
    ),
    "task": (
        "pipeline.task_presets",
        "main",
        "list | use TASK: translation, summarization or dialogue (docs/tasks.md)",
    ),
    "dialogue-corpus": (
        "pipeline.data.dialogue_corpus",
        "main",
        "write {train,val,test}.tsv of chatterbot-corpus's conversation turns",
    ),
    "stage": (
        "pipeline.orchestration.commands",
        "main",
        "run STAGE | save: a DAG task in the run's own workspace (docs/airflow.md)",
    ),
}


# Commands that always load a Keras model: Keras is imported first, without scikit-learn
# (pipeline/keras_start.py).
KERAS_COMMANDS = frozenset({"train", "evaluate", "translate", "serve", "translate-batch"})


def configure_logging() -> None:
    """Our loggers at MT_LOG_LEVEL (INFO); third-party chatter (GX, MLflow) at WARNING."""
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pipeline").setLevel(os.environ.get("MT_LOG_LEVEL", "INFO").upper())


def usage() -> str:
    # The longest name sets the column, so every description starts in the same one.
    width = max(map(len, COMMANDS))
    lines = ["usage: mt COMMAND [options]", "       mt --version", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_text}" for name, (_, _, help_text) in COMMANDS.items()]
    lines += ["", "`mt COMMAND --help` for a command's options."]
    return "\n".join(lines)


def print_version() -> int:
    """`mt <version>` of the installed distribution: the version `pip show` reports."""
    try:
        print(f"mt {metadata.version(DISTRIBUTION)}")
    except metadata.PackageNotFoundError:
        print(f"mt: {DISTRIBUTION} is not installed: run `make install`", file=sys.stderr)
        return 2
    return 0


def resolve(command: str) -> Callable[[list[str]], int | None]:
    module_name, function_name, _ = COMMANDS[command]
    module = importlib.import_module(module_name)
    function: Callable[[list[str]], int | None] = getattr(module, function_name)
    return function


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(usage())
        return 0 if args else 2
    if args[0] == "--version":
        return print_version()
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"mt: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    configure_logging()
    if command in KERAS_COMMANDS and not {"-h", "--help"} & set(rest):
        import_keras_without_scikit_learn()
    try:
        return resolve(command)(rest) or 0
    except PipelineError as error:
        log.error("%s failed: %s", command, error)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
