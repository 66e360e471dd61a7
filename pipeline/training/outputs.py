"""The train stage's outputs, written all-or-nothing, and a full disk reported as such.

Every output is first staged: the model in the checkpoints dir (where MLflow uploads it from),
each report in a temp file beside its target. Only when all are staged are they renamed into
place, and renames need no space; so a full disk fails the stage before any output changes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pipeline.atomic import fsync_directory, process_alive, tagged_writer_is_gone, writer_tag
from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.model.seq2seq import build_seq2seq
from pipeline.paths import ProjectPaths
from pipeline.training.data import TrainingData
from pipeline.training.devices import dtype_policy


class DiskFull(PipelineError):
    """No space left on the device the stage writes to."""


@contextlib.contextmanager
def full_disk_reported(where: Path, doing: str, checkpoints: Path) -> Iterator[None]:
    """ENOSPC inside the block -> `DiskFull` naming `where`, and that a rerun resumes.

    `where` is what the user knows (the model file, the checkpoints dir), not the temp file
    or h5 dataset that happened to hit the limit.
    """
    try:
        yield
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        raise DiskFull(
            f"{where}: no space left on device while {doing}; the checkpoints in {checkpoints} "
            "are kept: free space and rerun `mt train`, it resumes from them"
        ) from error


def export_float32(weights: Sequence[np.ndarray], config: Config, data: TrainingData) -> Any:
    """A float32 model with `weights`, without optimizer state: loads and serves anywhere."""
    with dtype_policy("float32"):
        exported = build_seq2seq(config.model, data.src_vocab_size, data.tgt_vocab_size)
    exported.set_weights(list(weights))
    return exported


def stage_model(model: keras.Model, staged: Path) -> None:
    """Save `model` as `staged`, whole or not at all (a partial file is removed, and so are
    the partial files of killed saves before it)."""
    staged.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_partials(staged)
    partial = staged.with_name(f".{staged.stem}.{writer_tag()}.tmp{staged.suffix}")
    try:
        model.save(partial)
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, staged)
        fsync_directory(staged.parent)
    finally:
        partial.unlink(missing_ok=True)


def remove_dead_partials(staged: Path) -> list[Path]:
    """`.<stem>.<writer>.tmp<suffix>` files whose saving process is gone (killed mid-save):
    judged as atomic.py judges its temp paths, so a save in progress in another container
    that shares `models/` is never taken for a dead one. `<pid>` alone: older mt, this host."""
    pattern = re.compile(rf"\.{re.escape(staged.stem)}\.(.+)\.tmp{re.escape(staged.suffix)}")
    removed = []
    for entry in staged.parent.glob(f".{staged.stem}.*.tmp{staged.suffix}"):
        match = pattern.fullmatch(entry.name)
        writer = match.group(1) if match else ""
        old_style_dead = writer.isdigit() and not process_alive(int(writer))
        if old_style_dead or tagged_writer_is_gone(writer):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def publish_outputs(
    staged_model: Path,
    paths: ProjectPaths,
    history: str,
    metrics: dict[str, Any],
    run_record: dict[str, str],
) -> None:
    """Stage the reports, then rename the model and the reports into place."""
    reports = paths.train_reports_dir
    texts = {
        reports / "history.csv": history,
        reports / "metrics.json": _json_text(metrics),
        reports / "run.json": _json_text(run_record),
    }
    staged: dict[Path, Path] = {}
    try:
        for target, text in texts.items():
            staged[target] = _stage_text(target, text)
        paths.model_file.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged_model, paths.model_file)
        for target, temp in staged.items():
            os.replace(temp, target)
    finally:
        for temp in staged.values():
            temp.unlink(missing_ok=True)


def _json_text(payload: Any) -> str:
    """Same form as `atomic_write_json`: stable diffs for `dvc metrics diff`."""
    return json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _stage_text(target: Path, text: str) -> Path:
    """`text` in a temp file beside `target` (same filesystem: the rename is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    temp = Path(name)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600 files; reports are read by others
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp
