"""The registry on the default SQLite store: tags at creation, the gate, promote, rollback.

The model registered here is a real pyfunc stand-in (tests/mlflow_server.py upper-cases text);
hypotheses are built so the challenger is, or is not, significantly better.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sacrebleu.metrics import BLEU

from pipeline import cli
from pipeline.config import load_config
from pipeline.paths import project_paths
from pipeline.registry.commands import pinned_requirements, registry_main
from pipeline.registry.errors import RegistryError
from pipeline.registry.gate import (
    GateDecision,
    GateEvidence,
    GateRules,
    bleu_from_signature,
    comparability_problem,
    decide,
)
from pipeline.registry.lineage import content_md5, dvc_lock_hashes, metrics_tags
from pipeline.registry.registration import RegistrationResult
from pipeline.registry.store import CHALLENGER, CHAMPION, ChampionMove, Registry, champion_stack
from tests.mlflow_server import (
    free_port,
    prepare_registry_project,
    reference_lines,
    register_standin,
    wrong_every_other,
)

REFERENCES = reference_lines()
STRONG = list(REFERENCES)  # BLEU 100
WEAK = wrong_every_other(REFERENCES, 0)  # BLEU 55.53
OTHER_WEAK = wrong_every_other(REFERENCES, 1)  # BLEU 55.14, wrong on the other half
SIGNATURE = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
RULES = GateRules("auto", min_score=20.0, min_delta=0.0, significance=0.05,
                  bootstrap_resamples=200, seed=1234)  # fmt: skip


def evidence(hypotheses: list[str], references_sha: str = "abc", signature: str = SIGNATURE,
             split: str = "test_2016_flickr", pair: tuple[str, str] = ("en", "de"),
             ) -> GateEvidence:  # fmt: skip
    bleu = BLEU().corpus_score(hypotheses, [REFERENCES]).score
    return GateEvidence(*pair, split, references_sha, signature, bleu, tuple(hypotheses))


# --- the pure gate --------------------------------------------------------------------


def test_first_model_is_promoted_only_above_the_bleu_floor() -> None:
    assert decide(evidence(WEAK), None, REFERENCES, RULES).outcome == "promoted"
    high_floor = GateRules("auto", 60.0, 0.0, 0.05, 200, 1234)
    decision = decide(evidence(WEAK), None, REFERENCES, high_floor)
    assert decision.outcome == "rejected"
    assert decision.reason == "no champion yet and BLEU 55.53 < min_score 60.00"


def test_significantly_better_challenger_is_promoted() -> None:
    decision = decide(evidence(STRONG), ("3", evidence(WEAK)), REFERENCES, RULES)
    assert decision.outcome == "promoted"
    assert decision.champion_version == "3"
    assert decision.delta == pytest.approx(44.4655, abs=1e-4)
    assert decision.p_value is not None and decision.p_value < 0.01
    assert decision.test_signature == f"nrefs:1|bs:200|seed:1234|{SIGNATURE[8:]}"


@pytest.mark.parametrize(
    ("champion", "challenger", "min_delta"),
    [
        (WEAK, OTHER_WEAK, 0.0),  # as good, different errors: large p, delta < 0
        (STRONG, WEAK, 0.0),  # significantly worse
        (WEAK, STRONG, 50.0),  # significant, but the gain is below min_delta
    ],
)
def test_challenger_not_significantly_better_is_rejected(
    champion: list[str], challenger: list[str], min_delta: float
) -> None:
    rules = GateRules("auto", 20.0, min_delta, 0.05, 200, 1234)
    decision = decide(evidence(challenger), ("1", evidence(champion)), REFERENCES, rules)
    assert decision.outcome == "rejected"
    assert decision.reason.startswith("challenger not significantly better than champion v1")


def test_identical_systems_have_p_value_one_not_the_bootstrap_floor() -> None:
    decision = decide(evidence(WEAK), ("1", evidence(WEAK)), REFERENCES, RULES)
    assert (decision.outcome, decision.delta, decision.p_value) == ("rejected", 0.0, 1.0)
    assert "(delta +0.00, p=1.0000;" in decision.reason
    # Wrong on line 0 vs wrong on line 10 (same reference shape): other systems, same BLEU.
    mirrored = [("Ein Hund." if i == 10 else line) for i, line in enumerate(REFERENCES)]
    champion = [("Ein Hund." if i == 0 else line) for i, line in enumerate(REFERENCES)]
    tie = decide(evidence(mirrored), ("1", evidence(champion)), REFERENCES, RULES)
    assert (tie.outcome, tie.delta, tie.p_value) == ("rejected", 0.0, 1.0)


def test_different_test_sets_or_signatures_are_not_compared() -> None:
    other_refs = decide(evidence(STRONG), ("1", evidence(WEAK, "xyz")), REFERENCES, RULES)
    assert other_refs.outcome == "rejected"
    assert other_refs.reason == (
        "not compared: different test sets: references sha256 xyz (champion) vs abc (challenger)"
    )
    lowercase = SIGNATURE.replace("case:mixed", "case:lc")
    problem = comparability_problem(evidence(STRONG), evidence(WEAK, signature=lowercase))
    assert problem is not None and problem.startswith("different sacreBLEU signatures")
    resampled = SIGNATURE.replace("nrefs:1|", "nrefs:1|bs:1000|seed:7|")
    assert comparability_problem(evidence(STRONG), evidence(WEAK, signature=resampled)) is None
    other_split = comparability_problem(evidence(STRONG), evidence(WEAK, split="val"))
    assert other_split == "different test splits: champion 'val', challenger 'test_2016_flickr'"


@pytest.mark.parametrize(
    ("champion_pair", "challenger_pair", "shown"),
    [
        (("en", "de"), ("en", "cs"), "champion translates en->de, challenger en->cs"),
        (("en", "de"), ("de", "en"), "champion translates en->de, challenger de->en"),
    ],
    ids=["other_target", "reversed"],
)
def test_a_champion_of_another_language_pair_is_never_compared(
    champion_pair: tuple[str, str], challenger_pair: tuple[str, str], shown: str
) -> None:
    # STRONG would beat WEAK by 44 BLEU: the pair alone must stop the comparison.
    challenger = evidence(STRONG, pair=challenger_pair)
    decision = decide(challenger, ("4", evidence(WEAK, pair=champion_pair)), REFERENCES, RULES)
    assert decision == GateDecision(
        "rejected",
        f"not compared: different language pairs: {shown}; register the challenger under a "
        "model name of its own pair (register.model_name)",
        champion_version="4",
    )


def test_manual_policy_never_promotes() -> None:
    manual = GateRules("manual", 20.0, 0.0, 0.05, 200, 1234)
    first = decide(evidence(STRONG), None, REFERENCES, manual)
    better = decide(evidence(STRONG), ("1", evidence(WEAK)), REFERENCES, manual)
    assert (first.outcome, better.outcome) == ("awaiting_approval", "awaiting_approval")
    assert not first.promote and not better.promote
    assert better.p_value is not None and better.p_value < 0.05


def test_bleu_from_signature_rebuilds_the_metric() -> None:
    signature = "nrefs:1|case:lc|eff:yes|tok:intl|smooth:floor[0.10]|version:2.6.0"
    bleu = bleu_from_signature(signature)
    bleu.corpus_score(["Ein Hund."], [["ein hund ."]])
    assert bleu.get_signature().format() == signature


def test_champion_stack_replays_promotions_and_rollbacks() -> None:
    def move(action: str, to: str, status: str = "FINISHED") -> ChampionMove:
        return ChampionMove(action, None, to, "me", "", "t", status)

    moves = [move("gate", "1"), move("gate", "2"), move("promote", "4"), move("rollback", "2")]
    assert champion_stack(moves) == ["1", "2"]
    assert champion_stack([*moves, move("promote", "5", status="FAILED")]) == ["1", "2"]
    assert champion_stack([*moves, move("rollback", "1")]) == ["1"]


# --- lineage ----------------------------------------------------------------------------


def test_lineage_hashes_come_from_dvc_lock_else_are_computed(tmp_path: Path) -> None:
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  train:\n    deps:\n    - path: data/tokens\n"
        "      hash: md5\n      md5: 0123.dir\n    outs:\n    - path: models/seq2seq.keras\n"
        "      hash: md5\n      md5: 4567\n",
        encoding="utf-8",
    )
    assert dvc_lock_hashes(tmp_path / "dvc.lock") == {
        "data/tokens": "0123.dir",
        "models/seq2seq.keras": "4567",
    }
    (tmp_path / "model.bin").write_bytes(b"abc")
    assert content_md5(tmp_path / "model.bin") == "900150983cd24fb0d6963f7d28e17f72"
    with pytest.raises(RegistryError, match="missing"):
        content_md5(tmp_path / "absent")


def test_metrics_tags_flatten_scores_and_signatures() -> None:
    metrics = {"test": {"bleu": 31.5, "bleu_ci95": [30.0, 33.0], "signatures": {"bleu": "s"}}}
    assert metrics_tags(metrics) == {
        "metrics.test.bleu": "31.5",
        "metrics.test.bleu_ci95": "[30.0, 33.0]",
        "metrics.test.signature.bleu": "s",
    }


def test_pinned_requirements_follow_requirements_lock() -> None:
    pins = pinned_requirements()
    assert "mlflow==3.17.2" in pins
    assert "tensorflow-cpu==2.21.0" in pins
    assert all("==" in pin for pin in pins)


# --- against a real SQLite tracking store ----------------------------------------------


@pytest.fixture
def registry_project(project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return prepare_registry_project(project_dir, monkeypatch)


def register(root: Path, hypotheses: list[str], references: list[str] = REFERENCES,
             actor: str = "pytest") -> RegistrationResult:  # fmt: skip
    return register_standin(root, hypotheses, references, actor)


def open_registry() -> Registry:
    return Registry.connect(project_paths(), load_config().register.model_name)


@pytest.mark.slow
def test_first_registration_carries_lineage_tags_and_becomes_champion(
    registry_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "manual__2026-01-01")
    result = register(registry_project, WEAK)
    assert (result.version, result.decision.outcome) == ("1", "promoted")
    assert (result.champion_before, result.champion_after) == (None, "1")
    version = open_registry().version("1")
    assert sorted(version.aliases) == [CHALLENGER, CHAMPION]
    tags = version.tags
    assert tags["git.commit"] == "unknown"  # the tmp project is not a git checkout
    assert json.loads(tags["params"])["register"]["min_score"] == 20.0
    assert tags["metrics.test_2016_flickr.bleu"] == str(
        BLEU().corpus_score(WEAK, [REFERENCES]).score
    )
    assert tags["metrics.test_2016_flickr.signature.bleu"] == SIGNATURE
    assert tags["airflow.dag_run_id"] == "manual__2026-01-01"
    assert tags["gate.outcome"] == "promoted"
    assert tags["evidence.split"] == "test_2016_flickr"
    assert (tags["data.src_lang"], tags["data.tgt_lang"]) == ("en", "de")
    assert tags["registered_by"] == "pytest"


@pytest.mark.slow
def test_second_registration_is_promoted_only_when_significantly_better(
    registry_project: Path,
) -> None:
    register(registry_project, WEAK)
    same = register(registry_project, OTHER_WEAK)
    assert (same.version, same.decision.outcome, same.champion_after) == ("2", "rejected", "1")
    assert same.decision.p_value is not None and same.decision.p_value > 0.05
    better = register(registry_project, STRONG)
    assert (better.version, better.decision.outcome, better.champion_after) == (
        "3",
        "promoted",
        "3",
    )
    assert better.decision.delta == pytest.approx(44.4655, abs=1e-4)
    registry = open_registry()
    assert registry.version("2").aliases == []
    assert registry.version("2").tags["gate.outcome"] == "rejected"
    assert sorted(registry.version("3").aliases) == [CHALLENGER, CHAMPION]


@pytest.mark.slow
def test_registering_the_same_outputs_again_changes_nothing(
    registry_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = register(registry_project, WEAK)
    again = register(registry_project, WEAK)
    assert (again.action, again.version, again.decision) == ("unchanged", "1", first.decision)
    assert (again.champion_before, again.champion_after) == ("1", "1")
    registry = open_registry()
    assert [str(v.version) for v in registry.versions()] == ["1"]
    assert registry.version("1").tags["registration.state"] == "complete"
    assert [m.to_version for m in registry.champion_moves()] == ["1"]
    assert register(registry_project, OTHER_WEAK).version == "2"  # other outputs: a new one


@pytest.mark.slow
def test_champion_on_another_test_set_is_not_compared(registry_project: Path) -> None:
    register(registry_project, WEAK)
    shifted = [f"{line} Ende" for line in REFERENCES]
    result = register(registry_project, STRONG, references=shifted)
    assert result.decision.outcome == "rejected"
    assert result.decision.reason.startswith("not compared: different test sets")
    champion = open_registry().alias_version(CHAMPION)
    assert champion is not None and str(champion.version) == "1"
    # A champion registered before versions carried their language pair: never compared.
    registry = open_registry()
    for tag in ("data.src_lang", "data.tgt_lang"):
        registry.client.delete_model_version_tag(registry.name, "1", tag)
    untagged = register(registry_project, STRONG)
    assert (untagged.decision.outcome, untagged.champion_after) == ("rejected", "1")
    assert untagged.decision.reason == (
        "not compared: version 1 carries no data.src_lang tag (registered before versions "
        "recorded it); if this challenger is better, promote it by hand with `mt registry "
        "promote VERSION`"
    )


@pytest.mark.slow
def test_promote_and_rollback_are_recorded_and_printed(
    registry_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    register(registry_project, WEAK)  # v1 champion
    register(registry_project, OTHER_WEAK)  # v2 rejected
    assert registry_main(["promote", "2", "--reason", "hotfix"]) == 0
    assert capsys.readouterr().out == "@champion of multi30k-en-de-lstm: v1 -> v2\n"
    assert registry_main(["rollback", "--reason", "bad outputs"]) == 0
    assert capsys.readouterr().out == "@champion of multi30k-en-de-lstm rolled back: v2 -> v1\n"
    moves = open_registry().champion_moves()
    assert [(m.action, m.from_version, m.to_version, m.reason) for m in moves] == [
        ("gate", None, "1", "no champion yet and BLEU 55.53 >= min_score 20.00"),
        ("promote", "1", "2", "hotfix"),
        ("rollback", "2", "1", "bad outputs"),
    ]
    assert all(m.status == "FINISHED" for m in moves)
    assert moves[1].actor.endswith("via mt registry promote")
    with pytest.raises(RegistryError, match="no previous champion"):
        registry_main(["rollback"])
    assert registry_main(["history"]) == 0
    history = capsys.readouterr().out.splitlines()
    assert len(history) == 3 and "rollback v2 -> v1  [FINISHED]" in history[2]
    assert registry_main(["list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[1].split()[:3] == ["2", "@challenger", "rejected"]
    assert listing[2].split()[:3] == ["1", "@champion", "promoted"]


def test_unreachable_tracking_server_fails_cleanly(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    assert cli.main(["registry", "list"]) == 2
    assert f"connecting failed against the tracking store {uri}" in caplog.text
    assert "check that the MLflow server is up" in caplog.text


@pytest.mark.slow
def test_model_is_logged_in_the_training_run_named_by_run_json(registry_project: Path) -> None:
    import mlflow

    from pipeline.tracking import ensure_experiment, fluent_store, store_client, tracking_uri

    uri = tracking_uri(project_paths())
    experiment_id = ensure_experiment(store_client(uri), project_paths())
    with fluent_store(uri), mlflow.start_run(experiment_id=experiment_id) as training_run:
        mlflow.log_param("epochs", 2)
    run_file = registry_project / "reports" / "train" / "run.json"
    run_file.parent.mkdir(parents=True)
    run_id = training_run.info.run_id
    run_file.write_text(json.dumps({"run_id": run_id, "experiment_id": experiment_id}), "utf-8")
    result = register(registry_project, WEAK)
    assert result.run_id == run_id
    assert open_registry().version("1").run_id == run_id
    # MLflow logs the pyfunc's model_config (the serving limits) as params of the run.
    params = {
        "epochs": "2",
        "max_input_chars": "50",
        "max_batch_rows": "4",
        "max_request_work": "120",
    }
    assert store_client(uri).get_run(run_id).data.params == params
