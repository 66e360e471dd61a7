"""Each task beside translation, end to end on a tiny corpus: every stage by `mt`, a version in
the project's registry under the task's name and metric, and the champion serving it.

The model is tiny and trains for two epochs: what is asserted holds for any correct model (the
keys and tags each task writes, one non-empty output per input), never a score.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import cli
from pipeline.config import _load_cached, load_config
from pipeline.data.dialogue_corpus import build as build_dialogue_corpus
from tests.conftest import REPO_ROOT, TINY_OVERRIDES, deep_merge, tiny_pairs, write_params
from tests.test_serving import MtServe, invocations

STAGES = ("fetch", "validate", "clean", "tokenize", "profile", "train", "evaluate", "register")
# Two sentences of context after each tiny source: a description worth summarising (>= 8 words).
CONTEXT = "It is a warm day, and the people in the park stop to watch them for a while."


def preset(task: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO_ROOT / "presets" / f"{task}.yaml").read_text())
    return loaded


def tiny_summaries(count: int, offset: int) -> list[tuple[str, str]]:
    """(description, synopsis): a tiny English sentence plus context -> its first five words."""
    return [
        (f"{source} {CONTEXT}", " ".join(source.split()[:5]))
        for source, _ in tiny_pairs(count, offset)
    ]


def write_tsv_corpus(folder: Path, splits: dict[str, list[tuple[str, str]]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, pairs in splits.items():
        text = "".join(f"{source}\t{target}\n" for source, target in pairs)
        (folder / f"{split}.tsv").write_text(text, encoding="utf-8")
    return folder


def run_every_stage(
    project: Path, task: str, corpus: Path, extra: dict[str, Any] | None = None
) -> None:
    overrides = deep_merge(preset(task), TINY_OVERRIDES)
    overrides = deep_merge(overrides, {"data": {"path": str(corpus)}, **(extra or {})})
    overrides["register"]["min_score"] = 0.0  # a tiny model's first version becomes champion
    write_params(project, overrides)
    _load_cached.cache_clear()
    for stage in STAGES:
        assert cli.main([stage]) == 0, stage


def registered_version(project: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((project / "reports" / "registration.json").read_text())
    return report


@pytest.mark.slow
def test_summarization_runs_every_stage_and_registers_under_its_metric(
    project_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    corpus = write_tsv_corpus(
        tmp_path / "descriptions",
        {
            "train": tiny_summaries(60, 0),
            "val": tiny_summaries(10, 60),
            "test": tiny_summaries(10, 70),
        },
    )
    # One language, one tiny text: fewer pieces than the translation fixtures' 120.
    run_every_stage(project_dir, "summarization", corpus, {"tokenize": {"vocab_size": 80}})

    config = load_config()
    assert (config.task, config.register.metric) == ("summarization", "rouge_l")
    assert sorted(path.name for path in (project_dir / "data" / "raw").glob("test.*")) == [
        "test.en.src",
        "test.en.tgt",
    ]
    metrics = json.loads((project_dir / "metrics.json").read_text())
    assert list(metrics) == ["test", "val"]
    for name in ("rouge_1", "rouge_2", "rouge_l", "rouge_l_ci95", "compression"):
        assert name in metrics["test"], name
    assert "bleu" not in metrics["test"]
    report = registered_version(project_dir)
    assert report["registry_uri"] == "models:/debian-descriptions-summarization-lstm/1"
    assert (report["decision"], report["champion_after"]) == ("promoted", "1")
    assert "ROUGE-L" in (project_dir / "reports" / "eval" / "report.md").read_text()


@pytest.mark.slow
def test_dialogue_runs_every_stage_registers_and_serves_replies(
    project_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chatterbot pairs themselves (678 train): the preset's corpus, a tiny model."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("AIRFLOW_CTX_DAG_RUN_ID", raising=False)
    corpus = tmp_path / "dialogue-corpus"
    build_dialogue_corpus(corpus)
    # The preset's own vocabulary: the corpus must support it as shipped (2000 did not).
    run_every_stage(project_dir, "dialogue", corpus, {"tokenize": preset("dialogue")["tokenize"]})

    metrics = json.loads((project_dir / "metrics.json").read_text())
    for name in ("bleu", "chrf", "distinct_1", "distinct_2", "top10_response_share"):
        assert name in metrics["test"], name
    report = registered_version(project_dir)
    assert report["registry_uri"] == "models:/chatterbot-dialogue-lstm/1"
    assert (report["decision"], report["champion_after"]) == ("promoted", "1")

    server = MtServe(project_dir, tmp_path / "serve.log")
    try:
        server.start()
        status, body = invocations(server, {"inputs": {"text": ["Hello", "How are you?"]}})
    finally:
        server.stop()
    assert status == 200
    replies = [row["translation"] for row in body["predictions"]]
    assert len(replies) == 2 and all(isinstance(reply, str) for reply in replies)
