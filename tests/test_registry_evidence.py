"""What the MLflow UI shows of a registration: numbers, datasets, report files, the model card.

Two registrations of the upper-casing stand-in on the default SQLite store (one module-scoped
project, so the registrations are paid once): v1 (BLEU 55.53) into a run `register` of its
own, v2 (BLEU 100) into the training run named by reports/train/run.json. Every test reads the
store back through MLflow's own client, as the UI does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import _load_cached, load_config
from pipeline.eval_provenance import EvaluatedModel, write_record
from pipeline.evaluate import bleu_by_length, by_length_csv, corpus_metrics, plot_attention
from pipeline.paths import project_paths
from pipeline.registry.commands import build_candidate
from pipeline.registry.errors import RegistryError
from pipeline.registry.evidence_logging import signature_tags, split_metrics
from pipeline.registry.gate import GateRules
from pipeline.registry.registration import RegistrationResult, register_candidate, sha256_lines
from pipeline.registry.store import Registry
from pipeline.tracking import (
    EXPERIMENT_NAME,
    ensure_experiment,
    fluent_store,
    store_client,
    tracking_uri,
)
from tests.browser import chromium_page, close_assistant_panel, expect_text, row_cells
from tests.conftest import write_params
from tests.mlflow_server import (
    GATE_SPLIT,
    MlflowServer,
    reference_lines,
    uppercase_spec,
    wrong_every_other,
)

REFERENCES = reference_lines()
SOURCES = [f"source line {index}" for index in range(len(REFERENCES))]
WEAK = wrong_every_other(REFERENCES, 0)  # BLEU 55.53
STRONG = list(REFERENCES)  # BLEU 100
MODEL_NAME = "multi30k-en-de-lstm"
METRIC_NAMES = [
    "bleu", "bleu_ci95_high", "bleu_ci95_low", "bleu_lowercase", "chrf", "chrf_ci95_high",
    "chrf_ci95_low", "sentences", "ter", "ter_ci95_high", "ter_ci95_low",
]  # fmt: skip
HISTORY_CSV = (
    "epoch,loss,val_loss,perplexity,val_perplexity,learning_rate\n"
    "1,5.9,4.8,243.3,69.2,0.0016\n2,4.4,4.1,44.5,31.2,0.0011\n3,3.9,3.7,24.9,21.3,0.0009\n"
)
CLEANING = {"splits": {"train": {"rows_in": 100, "rows_out": 98}, GATE_SPLIT: {"rows_in": 40,
            "rows_out": 40}}}  # fmt: skip


@dataclass
class Registered:
    root: Path
    weak: RegistrationResult
    strong: RegistrationResult
    metrics: dict[str, dict[str, Any]]  # per version number: its metrics.json split entry
    training_run_id: str

    @property
    def client(self) -> MlflowClient:
        return store_client(self.weak.tracking_uri)

    def model_id(self, version: str) -> str:
        """The version's LoggedModel (its source is `models:/<model id>`)."""
        source = str(self.client.get_model_version(MODEL_NAME, version).source)
        return source.removeprefix("models:/")


def write_evaluation(root: Path, hypotheses: list[str]) -> dict[str, Any]:
    """What `mt evaluate` leaves: reports/eval (hypotheses, report, samples, BLEU by length,
    an attention map, provenance.json) and metrics.json; returns the split's metrics."""
    eval_dir = root / "reports" / "eval"
    (eval_dir / "hypotheses").mkdir(parents=True, exist_ok=True)
    (eval_dir / "attention").mkdir(exist_ok=True)
    (eval_dir / "hypotheses" / f"{GATE_SPLIT}.txt").write_text(
        "".join(f"{line}\n" for line in hypotheses), "utf-8"
    )
    rows = bleu_by_length(SOURCES, hypotheses, REFERENCES)
    (eval_dir / "bleu_by_length.csv").write_text(by_length_csv(rows), "utf-8")
    (eval_dir / "report.md").write_text("# Evaluation report\n", "utf-8")
    (eval_dir / "samples.md").write_text("# Sample translations\n", "utf-8")
    figure = plot_attention(["a", "b"], ["c"], np.array([[0.25, 0.75]]))
    figure.savefig(eval_dir / "attention" / f"{GATE_SPLIT}_1.png", dpi=20)
    scores = corpus_metrics(hypotheses, REFERENCES, resamples=20, seed=1234)
    metrics_text = json.dumps({GATE_SPLIT: scores})
    (root / "metrics.json").write_text(metrics_text, "utf-8")
    raw = {GATE_SPLIT: root / "data" / "raw" / f"{GATE_SPLIT}.de"}
    write_record(eval_dir, EvaluatedModel("stand-in", "stand-in", {}), raw, metrics_text)
    return scores


def write_project_reports(root: Path) -> None:
    """The raw test split and what validate, clean and train leave in reports/."""
    raw = root / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / f"{GATE_SPLIT}.de").write_text("".join(f"{r}\n" for r in REFERENCES), "utf-8")
    (raw / f"{GATE_SPLIT}.en").write_text("".join(f"{s}\n" for s in SOURCES), "utf-8")
    (root / "reports" / "validation").mkdir(parents=True)
    summary = {"suite": "raw_pairs", "success": True}
    (root / "reports" / "validation" / "summary.json").write_text(json.dumps(summary), "utf-8")
    (root / "reports" / "train").mkdir()
    (root / "reports" / "train" / "history.csv").write_text(HISTORY_CSV, "utf-8")
    (root / "reports" / "cleaning.json").write_text(json.dumps(CLEANING), "utf-8")


def register(root: Path, hypotheses: list[str]) -> tuple[RegistrationResult, dict[str, Any]]:
    scores = write_evaluation(root, hypotheses)
    config, paths = load_config(), project_paths()
    registry = Registry.connect(paths, config.register.model_name)
    candidate = build_candidate(paths, config)
    rules = GateRules.from_config(config.register, config.seed)
    spec = uppercase_spec(root.parent / "standin")
    return register_candidate(registry, spec, candidate, rules, "pytest"), scores


def start_training_run(root: Path) -> str:
    """A finished training run, named by reports/train/run.json as `mt train` names it."""
    uri = tracking_uri(project_paths())
    experiment_id = ensure_experiment(store_client(uri), project_paths())
    with fluent_store(uri), mlflow.start_run(experiment_id=experiment_id, run_name="train") as run:
        mlflow.log_param("epochs", 3)
    record = {"run_id": run.info.run_id, "experiment_id": experiment_id}
    (root / "reports" / "train" / "run.json").write_text(json.dumps(record), "utf-8")
    return str(run.info.run_id)


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registered]:
    root = tmp_path_factory.mktemp("evidence") / "project"
    root.mkdir()
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("MT_PROJECT_DIR", str(root))
        monkeypatch.chdir(root)
        for var in ("MLFLOW_TRACKING_URI", "AIRFLOW_CTX_DAG_RUN_ID", "AIRFLOW_CTX_DAG_ID"):
            monkeypatch.delenv(var, raising=False)
        overrides = {"min_score": 20.0, "bootstrap_resamples": 200, "model_name": MODEL_NAME}
        write_params(root, {"register": overrides})
        _load_cached.cache_clear()
        write_project_reports(root)
        weak, weak_scores = register(root, WEAK)
        training_run_id = start_training_run(root)
        strong, strong_scores = register(root, STRONG)
        metrics = {weak.version: weak_scores, strong.version: strong_scores}
        yield Registered(root, weak, strong, metrics, training_run_id)
    _load_cached.cache_clear()


def expected_metrics(scores: dict[str, Any]) -> dict[str, float]:
    """metrics.json's numbers under the MLflow names, CI pairs split into _low/_high."""
    expected = {
        f"{GATE_SPLIT}.{name}": float(scores[name])
        for name in ("bleu", "bleu_lowercase", "chrf", "ter", "sentences")
    }
    for name in ("bleu", "chrf", "ter"):
        expected[f"{GATE_SPLIT}.{name}_ci95_low"] = float(scores[f"{name}_ci95"][0])
        expected[f"{GATE_SPLIT}.{name}_ci95_high"] = float(scores[f"{name}_ci95"][1])
    return expected


def test_metrics_json_entries_become_named_numbers_and_signature_tags() -> None:
    scores = {"bleu": 31.5, "bleu_ci95": [30.0, 33.0], "sentences": 40, "flag": True,
              "note": "x", "lengths": [1, 2], "signatures": {"bleu": "nrefs:1"}}  # fmt: skip
    assert split_metrics("test", scores) == {
        "test.bleu": 31.5,
        "test.bleu_ci95_low": 30.0,
        "test.bleu_ci95_high": 33.0,
        "test.sentences": 40.0,
    }
    metrics = {"test": scores, "val": {"signatures": {"chrf": "nc:6"}}, "note": "x"}
    assert signature_tags(metrics) == {
        "metrics.test.signature.bleu": "nrefs:1",
        "metrics.val.signature.chrf": "nc:6",
    }


def test_history_that_is_not_what_train_writes_stops_registration_before_logging(
    project_dir: Path,
) -> None:
    write_project_reports(project_dir)
    write_evaluation(project_dir, WEAK)
    history = project_dir / "reports" / "train" / "history.csv"
    history.write_text(HISTORY_CSV.replace("1,5.9,", "1,oops,"), "utf-8")
    with pytest.raises(RegistryError) as refused:
        build_candidate(project_paths(), load_config())
    assert str(refused.value) == (
        f"{history}: line 2: loss 'oops' is not a number; rerun `mt train`; nothing was registered"
    )
    history.write_text("epoch,loss\n1,5.9\n", "utf-8")
    with pytest.raises(RegistryError, match="history.csv: no column 'val_loss' in the header"):
        build_candidate(project_paths(), load_config())
    assert not (project_dir / "mlruns.db").exists()


@pytest.mark.slow
def test_scores_are_numbers_on_the_run_and_on_the_logged_model(registered: Registered) -> None:
    assert (registered.weak.version, registered.strong.version) == ("1", "2")
    assert registered.strong.run_id == registered.training_run_id
    for result in (registered.weak, registered.strong):
        expected = expected_metrics(registered.metrics[result.version])
        assert sorted(expected) == [f"{GATE_SPLIT}.{name}" for name in METRIC_NAMES]
        assert registered.client.get_run(result.run_id).data.metrics == expected
        model = registered.client.get_logged_model(registered.model_id(result.version))
        assert {metric.key: metric.value for metric in model.metrics} == expected
        # the logged model names its version, so the MLflow UI shows it as registered
        assert json.loads(model.tags["mlflow.modelVersions"]) == [
            {"name": MODEL_NAME, "version": result.version}
        ]
        digest = sha256_lines(REFERENCES)[:36]
        assert {(m.dataset_name, m.dataset_digest) for m in model.metrics} == {
            (GATE_SPLIT, digest)
        }
    assert expected_metrics(registered.metrics["2"])[f"{GATE_SPLIT}.bleu"] == 100.0
    assert expected_metrics(registered.metrics["2"])[f"{GATE_SPLIT}.sentences"] == 40.0
    weak_run = registered.client.get_run(registered.weak.run_id)
    assert weak_run.info.run_name == "register"  # no run.json yet: a run of its own


@pytest.mark.slow
def test_signatures_are_tags_beside_the_numbers(registered: Registered) -> None:
    signatures = registered.metrics["2"]["signatures"]
    expected = {f"metrics.{GATE_SPLIT}.signature.{k}": v for k, v in signatures.items()}
    assert sorted(expected) == [
        f"metrics.{GATE_SPLIT}.signature.{name}"
        for name in ("bleu", "bleu_lowercase", "chrf", "ter")
    ]
    run_tags = registered.client.get_run(registered.strong.run_id).data.tags
    model_tags = registered.client.get_logged_model(registered.model_id("2")).tags
    assert {key: run_tags[key] for key in expected} == expected
    assert {key: model_tags[key] for key in expected} == expected


@pytest.mark.slow
def test_each_test_split_is_a_dataset_whose_digest_is_the_references_hash(
    registered: Registered,
) -> None:
    inputs = registered.client.get_run(registered.strong.run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    dataset, tags = inputs[0].dataset, {tag.key: tag.value for tag in inputs[0].tags}
    references_sha256 = sha256_lines(REFERENCES)
    assert (dataset.name, dataset.digest) == (GATE_SPLIT, references_sha256[:36])
    assert tags == {"mlflow.data.context": "testing", "mt.references_sha256": references_sha256}
    assert json.loads(dataset.source) == {"uri": f"data/raw/{GATE_SPLIT}.de"}
    assert json.loads(dataset.profile) == {"num_rows": 40, "num_elements": 80}
    columns = [column["name"] for column in json.loads(dataset.schema)["mlflow_colspec"]]
    assert columns == ["source", "reference"]


@pytest.mark.slow
def test_logged_models_order_by_bleu_on_the_test_split(registered: Registered) -> None:
    experiment = registered.client.get_experiment_by_name(EXPERIMENT_NAME)
    assert experiment is not None
    experiment_ids = [experiment.experiment_id]

    def ordered(ascending: bool) -> list[str]:
        models = registered.client.search_logged_models(
            experiment_ids,
            order_by=[
                {
                    "field_name": f"metrics.{GATE_SPLIT}.bleu",
                    "ascending": ascending,
                    "dataset_name": GATE_SPLIT,
                }
            ],
        )
        return [model.model_id for model in models]

    weak, strong = registered.model_id("1"), registered.model_id("2")
    assert ordered(ascending=False) == [strong, weak]
    assert ordered(ascending=True) == [weak, strong]
    better = registered.client.search_logged_models(
        experiment_ids, filter_string=f"metrics.`{GATE_SPLIT}.bleu` > 60"
    )
    assert [model.model_id for model in better] == [strong]


def artifact_paths(client: MlflowClient, run_id: str, path: str) -> list[str]:
    """Every file under `path` in the run's artifacts, recursively."""
    found = []
    for entry in client.list_artifacts(run_id, path):
        found += artifact_paths(client, run_id, entry.path) if entry.is_dir else [entry.path]
    return sorted(found)


@pytest.mark.slow
def test_reports_and_training_curves_are_run_artifacts(
    registered: Registered, tmp_path: Path
) -> None:
    client, run_id = registered.client, registered.strong.run_id
    assert artifact_paths(client, run_id, "evaluation") == [
        f"evaluation/attention/{GATE_SPLIT}_1.png",
        "evaluation/bleu_by_length.csv",
        "evaluation/bleu_by_length.png",
        f"evaluation/hypotheses/{GATE_SPLIT}.txt",
        "evaluation/provenance.json",
        "evaluation/report.md",
        "evaluation/samples.md",
    ]
    assert artifact_paths(client, run_id, "validation") == ["validation/summary.json"]
    assert artifact_paths(client, run_id, "training") == ["training/curves.png"]
    for png in ("training/curves.png", "evaluation/bleu_by_length.png"):
        local = Path(client.download_artifacts(run_id, png, str(tmp_path)))
        assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hypotheses = client.download_artifacts(
        run_id, f"evaluation/hypotheses/{GATE_SPLIT}.txt", str(tmp_path)
    )
    assert Path(hypotheses).read_text("utf-8").splitlines() == STRONG


@pytest.mark.slow
def test_version_description_is_the_model_card(registered: Registered) -> None:
    card = registered.client.get_model_version(MODEL_NAME, "2").description
    scores = registered.metrics["2"]
    bleu_low, bleu_high = scores["bleu_ci95"]
    lines = card.splitlines()
    assert lines[0] == (
        f"**{MODEL_NAME}**: an LSTM encoder-decoder translating English (`en`) into German "
        "(`de`). Built by the pipeline at git commit `unknown`."
    )
    assert f"| `{GATE_SPLIT}` | 40 | 100.00 | {bleu_low:.2f} – {bleu_high:.2f} |" in card
    assert "- outcome: **promoted**" in lines
    assert "- compared against champion: v1" in lines
    assert (
        f"- delta (challenger − champion): {registered.strong.decision.delta:+.2f} BLEU" in lines
    )
    assert "| `train` | 100 | 98 |" in lines
    assert "- input: at most 50 characters per text (`register.max_input_chars`); a longer " \
        "text is refused with HTTP 400" in lines  # fmt: skip
    assert f'model = mlflow.pyfunc.load_model("models:/{MODEL_NAME}/2")' in lines
    assert f"The logged model: `models:/{registered.model_id('2')}`." in lines
    first = registered.client.get_model_version(MODEL_NAME, "1").description
    assert "- compared against champion: none (no champion)" in first.splitlines()


@pytest.mark.slow
def test_registering_the_same_outputs_again_logs_nothing_twice(registered: Registered) -> None:
    client = registered.client
    again, _ = register(registered.root, STRONG)
    assert (again.action, again.version) == ("unchanged", "2")
    history = client.get_metric_history(registered.strong.run_id, f"{GATE_SPLIT}.bleu")
    assert [metric.value for metric in history] == [100.0]
    model = registered.client.get_logged_model(registered.model_id("2"))
    assert len(model.metrics) == len(METRIC_NAMES)
    assert len(client.get_run(registered.strong.run_id).inputs.dataset_inputs) == 1


# --- the same, as a person sees it in the MLflow UI ---------------------------------------


@pytest.fixture(scope="module")
def mlflow_ui(registered: Registered, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` over the project's SQLite store: the UI a user opens after a repro."""
    root = registered.root
    logs = tmp_path_factory.mktemp("mlflow-ui")
    server = MlflowServer(
        f"sqlite:///{root / 'mlruns.db'}", root / "mlartifacts", logs / "server.log"
    )
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.mark.slow
def test_a_person_sees_scores_card_and_champion_in_the_mlflow_ui(
    registered: Registered, mlflow_ui: str, tmp_path: Path
) -> None:
    shots = tmp_path / "reports" / "ui"
    shots.mkdir(parents=True)
    run = registered.client.get_run(registered.strong.run_id)
    experiment, model_id = run.info.experiment_id, registered.model_id("2")
    with chromium_page() as page:
        page.goto(f"{mlflow_ui}/#/models/{MODEL_NAME}")
        close_assistant_panel(page)
        expect_text(page, "Version 2")
        expect_text(page, "Version 1")
        page.screenshot(path=shots / "mlflow-model.png", full_page=True)

        page.goto(f"{mlflow_ui}/#/models/{MODEL_NAME}/versions/2")
        for text in ("champion", "challenger", "Test scores", "Gate verdict", "Known limits"):
            expect_text(page, text)
        assert row_cells(page, GATE_SPLIT)[:4] == [GATE_SPLIT, "40", "100.00", "100.00 – 100.00"]
        expect_text(page, "compared against champion: v1")
        page.screenshot(path=shots / "mlflow-version.png", full_page=True)

        page.goto(f"{mlflow_ui}/#/experiments/{experiment}/runs/{run.info.run_id}")
        expect_text(page, "Metrics (11)")
        assert row_cells(page, f"{GATE_SPLIT}.bleu")[:2] == [f"{GATE_SPLIT}.bleu", "100"]
        assert row_cells(page, f"{GATE_SPLIT}.ter")[:2] == [f"{GATE_SPLIT}.ter", "0"]
        page.screenshot(path=shots / "mlflow-run.png", full_page=True)

        page.goto(f"{mlflow_ui}/#/experiments/{experiment}/models/{model_id}")
        expect_text(page, "Metrics (11)")
        assert row_cells(page, f"{GATE_SPLIT}.sentences")[-1] == "40"
        page.screenshot(path=shots / "mlflow-logged-model.png", full_page=True)
    assert sorted(path.name for path in shots.iterdir()) == [
        "mlflow-logged-model.png", "mlflow-model.png", "mlflow-run.png", "mlflow-version.png",
    ]  # fmt: skip
