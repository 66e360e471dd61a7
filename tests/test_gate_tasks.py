"""The gate, the model card, the watch and the sweep of a task other than translation.

Pure: hand-made hypotheses and records, no MLflow server. The gate compares register.metric
(pipeline/tasks.py): ROUGE through pipeline/metrics/bootstrap.py's paired test over sentence
F1, chrF through sacreBLEU's PairedTest built from the recorded signature; texts name the
metric by its label. Translation's own behaviour is pinned by tests/test_registry.py.
"""

from __future__ import annotations

import json
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from sacrebleu.metrics import CHRF

from pipeline.config import load_config
from pipeline.metrics.scoring import corpus_score
from pipeline.monitor.canary import RecordedCanary, canary_score, metric_signature, pick_canary
from pipeline.monitor.champion_check import CanaryScore
from pipeline.monitor.findings import Finding, canary_findings
from pipeline.monitor.watch import summary_lines, watch_metrics
from pipeline.monitor.watch_report import canary_numbers, chart_file, report_markdown
from pipeline.orchestration.tasks import approval_request
from pipeline.registry.candidate import Candidate
from pipeline.registry.gate import (
    GateDecision,
    GateEvidence,
    GateRules,
    chrf_from_signature,
    comparability_problem,
    decide,
)
from pipeline.registry.model_card import ModelCardFacts, facts_from, model_card, with_verdict
from pipeline.registry.registration import evidence_tags, task_and_metric
from pipeline.registry.registration_key import evidence_part
from pipeline.sweep.grid import check_key, ranking_metric
from pipeline.sweep.table import PointRow, render, winner
from pipeline.sweep.tracking import Sweep
from pipeline.tasks import Task
from tests.conftest import REPO_ROOT

# Thirty one-line synopses; the weak summariser keeps only the first two words of every other.
ADJECTIVES = ("fast", "simple", "small", "secure", "portable", "graphical")
WHAT = (
    "library for parsing XML files",
    "tool to convert image formats",
    "daemon that monitors disk usage",
    "editor for plain text files",
    "client for the IRC chat protocol",
)
REFERENCES = [f"{adjective} {what}" for adjective in ADJECTIVES for what in WHAT]
STRONG = list(REFERENCES)  # ROUGE-L 100
WEAK = [line if i % 2 else " ".join(line.split()[:2]) for i, line in enumerate(REFERENCES)]
OTHER_WEAK = [
    line if i % 2 == 0 else " ".join(line.split()[:2]) for i, line in enumerate(REFERENCES)
]
RESAMPLES = 200
RULES = GateRules("auto", min_score=31.4, min_delta=0.0, significance=0.05,
                  bootstrap_resamples=RESAMPLES, seed=1234)  # fmt: skip
CHRF_SIGNATURE = "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0"


def evidence(hypotheses: list[str], task: Task = "summarization", metric: str = "rouge_l",
             signature: str | None = None, pair: tuple[str, str] = ("en", "en"),
             ) -> GateEvidence:  # fmt: skip
    score = corpus_score(metric, hypotheses, REFERENCES)
    return GateEvidence(*pair, "test", "abc", signature, score, tuple(hypotheses), task, metric)


def rouge_signature() -> str:
    return (
        f"nrefs:1|bs:{RESAMPLES}|seed:1234|type:rougeL|tok:rouge-score|stemmer:porter|score:f1|"
        f"version:{version('rouge-score')}"
    )


# --- the gate --------------------------------------------------------------------------------


def test_rouge_l_gate_promotes_a_clearly_better_challenger_with_the_bootstrap_floor_p() -> None:
    assert round(corpus_score("rouge_l", WEAK, REFERENCES), 2) == 74.44
    decision = decide(evidence(STRONG), ("3", evidence(WEAK)), REFERENCES, RULES)
    # Every resampled difference is about the observed one: no centred one exceeds it, so p
    # is the floor of the counting rule, 1 / (resamples + 1).
    assert decision == GateDecision(
        "promoted",
        "challenger significantly better than champion v3: ROUGE-L 100.00 vs 74.44 (delta "
        "+25.56, p=0.0050; need p < 0.05 and delta > 0.0)",
        champion_version="3",
        delta=25.56,
        p_value=round(1 / (RESAMPLES + 1), 4),
        test_signature=rouge_signature(),
    )


def test_rouge_l_gate_rejects_an_identical_challenger_with_p_one() -> None:
    decision = decide(evidence(WEAK), ("3", evidence(WEAK)), REFERENCES, RULES)
    assert (decision.outcome, decision.delta, decision.p_value) == ("rejected", 0.0, 1.0)
    assert decision.reason == (
        "challenger not significantly better than champion v3: ROUGE-L 74.44 vs 74.44 (delta "
        "+0.00, p=1.0000; need p < 0.05 and delta > 0.0)"
    )


def test_rouge_l_gate_rejects_a_worse_or_as_good_challenger() -> None:
    worse = decide(evidence(WEAK), ("3", evidence(STRONG)), REFERENCES, RULES)
    assert worse.outcome == "rejected" and worse.delta == -25.56
    other = decide(evidence(OTHER_WEAK), ("3", evidence(WEAK)), REFERENCES, RULES)
    assert other.outcome == "rejected"
    assert other.p_value is not None and other.p_value > 0.05


def test_first_model_reason_names_the_metric_by_its_label() -> None:
    first = replace(evidence(WEAK), score=35.1)
    assert decide(first, None, REFERENCES, RULES) == GateDecision(
        "promoted", "no champion yet and ROUGE-L 35.10 >= min_score 31.40"
    )
    low = replace(first, score=30.0)
    assert decide(low, None, REFERENCES, RULES).reason == (
        "no champion yet and ROUGE-L 30.00 < min_score 31.40"
    )
    chrf = evidence(WEAK, "dialogue", "chrf", CHRF_SIGNATURE)
    assert decide(replace(chrf, score=12.5), None, REFERENCES, RULES).reason == (
        "no champion yet and chrF 12.50 < min_score 31.40"
    )


def test_a_champion_of_another_task_or_metric_is_never_compared() -> None:
    # STRONG would beat WEAK by 25 points: the task alone must stop the comparison.
    translation = evidence(WEAK, "translation", "bleu", "nrefs:1|tok:13a", ("en", "de"))
    decision = decide(evidence(STRONG), ("4", translation), REFERENCES, RULES)
    assert decision == GateDecision(
        "rejected",
        "not compared: different tasks: champion is a translation model, challenger a "
        "summarization model; register the challenger under a model name of its own task "
        "(register.model_name)",
        champion_version="4",
    )
    rouge_1 = evidence(STRONG, metric="rouge_1")
    assert comparability_problem(rouge_1, evidence(WEAK)) == (
        "different metrics: champion was judged by ROUGE-L, challenger by ROUGE-1 "
        "(register.metric); set register.metric to 'rouge_l' to compare them, or register the "
        "challenger under a model name of its own"
    )
    german = evidence(STRONG, pair=("de", "de"))
    assert comparability_problem(german, evidence(WEAK)) == (
        "different languages: champion en->en, challenger de->de; register the challenger "
        "under a model name of its own (register.model_name)"
    )


def test_chrf_gate_is_sacrebleus_paired_test_built_from_the_chrf_signature() -> None:
    dialogue = ("dialogue", "chrf", CHRF_SIGNATURE)
    champion, challenger = evidence(WEAK, *dialogue), evidence(STRONG, *dialogue)
    decision = decide(challenger, ("2", champion), REFERENCES, RULES)
    assert decision.outcome == "promoted"
    assert decision.reason.startswith(
        "challenger significantly better than champion v2: chrF 100.00 vs "
    )
    assert decision.test_signature == CHRF_SIGNATURE.replace(
        "nrefs:1|", "nrefs:1|bs:200|seed:1234|"
    )
    assert decide(challenger, ("2", challenger), REFERENCES, RULES).p_value == 1.0
    lowercase = replace(champion, signature=CHRF_SIGNATURE.replace("case:mixed", "case:lc"))
    problem = comparability_problem(challenger, lowercase)
    assert problem is not None and problem.startswith("different sacreBLEU signatures")
    unsigned = replace(champion, signature=None)
    assert comparability_problem(challenger, unsigned) == (
        "no sacreBLEU signature recorded for the champion's chrF"
    )


def test_chrf_from_signature_rebuilds_the_metric() -> None:
    signature = "nrefs:1|case:lc|eff:no|nc:4|nw:2|space:yes|version:2.6.0"
    chrf = chrf_from_signature(signature)
    chrf.corpus_score(["Ein Hund."], [["ein hund ."]])
    assert chrf.get_signature().format() == signature
    default, rebuilt = CHRF(), chrf_from_signature(CHRF_SIGNATURE)
    for scorer in (default, rebuilt):
        scorer.corpus_score(["Ein Hund."], [["ein hund ."]])
    assert rebuilt.get_signature().format() == default.get_signature().format()


# --- the version's tags and registration key ---------------------------------------------------


def test_a_summarization_version_carries_task_metric_and_its_score() -> None:
    tags = evidence_tags(replace(evidence(STRONG), score=35.1))
    assert {key: value for key, value in tags.items() if "sha256" not in key} == {
        "task": "summarization",
        "register.metric": "rouge_l",
        "data.src_lang": "en",
        "data.tgt_lang": "en",
        "evidence.split": "test",
        "evidence.rouge_l": "35.1",
    }
    assert task_and_metric(tags) == ("summarization", "rouge_l")
    assert task_and_metric({"evidence.bleu": "31.0"}) == ("translation", "bleu")  # older
    chrf = evidence_tags(evidence(STRONG, "dialogue", "chrf", CHRF_SIGNATURE))
    assert chrf["evidence.chrf_signature"] == CHRF_SIGNATURE


def test_registration_key_of_a_translation_hashes_what_it_hashed_before_tasks(
    tmp_path: Path,
) -> None:
    (tmp_path / "hypotheses").mkdir()
    (tmp_path / "hypotheses" / "test.txt").write_text("x\n", "utf-8")
    (tmp_path / "metrics.json").write_text("{}", "utf-8")

    def candidate(gate: GateEvidence) -> Candidate:
        return Candidate(gate, (), tmp_path / "hypotheses", tmp_path / "metrics.json", {})

    translation = evidence(WEAK, "translation", "bleu", "nrefs:1|tok:13a", ("en", "de"))
    part = evidence_part(candidate(translation))
    assert sorted(part) == [
        "bleu_signature", "hypotheses", "metrics", "references_sha256", "split"
    ]  # fmt: skip
    assert part["bleu_signature"] == "nrefs:1|tok:13a"
    summary = evidence_part(candidate(evidence(WEAK)))
    assert (summary["task"], summary["metric"], summary["bleu_signature"]) == (
        "summarization",
        "rouge_l",
        None,
    )


# --- the model card ---------------------------------------------------------------------------


SUMMARY_METRICS = {
    "test": {
        "rouge_1": 40.25, "rouge_1_ci95": [39.0, 41.5], "rouge_2": 20.5,
        "rouge_2_ci95": [19.5, 21.5], "rouge_l": 35.1, "rouge_l_ci95": [34.0, 36.2],
        "mean_output_words": 6.25, "compression": 0.18,
        "signatures": {"rouge": "nrefs:1|type:rougeL"},
    },
    "val": {"rouge_1": 41.0, "rouge_2": 21.0, "rouge_l": 36.0},
}  # fmt: skip
SUMMARY_FACTS = ModelCardFacts(
    model_name="debian-descriptions-summarization-lstm",
    src_lang="en",
    tgt_lang="en",
    data_source="tsv",
    metrics=SUMMARY_METRICS,
    val_split="val",
    git_commit="abc1234",
    task="summarization",
    metric="rouge_l",
)
ROUGE_PROMOTED = GateDecision(
    "promoted",
    "challenger significantly better than champion v1: ROUGE-L 35.10 vs 33.00 (delta +2.10, "
    "p=0.0050; need p < 0.05 and delta > 0.0)",
    champion_version="1",
    delta=2.1,
    p_value=0.005,
)


def test_card_of_a_summarization_model_says_it_summarises_and_headlines_rouge_l() -> None:
    card = model_card(SUMMARY_FACTS, ROUGE_PROMOTED)
    lines = card.splitlines()
    assert lines[0] == (
        "**debian-descriptions-summarization-lstm**: an LSTM encoder-decoder that summarises "
        "English (`en`) text (a description → a one-line synopsis). Built by the pipeline at "
        "git commit `abc1234`."
    )
    assert (
        "Judged by **ROUGE-L** (`register.metric`: the gate's and the champion watch's metric)."
        in lines
    )
    assert (
        "| split | sentences | ROUGE-L | ROUGE-L 95% CI | ROUGE-1 | ROUGE-1 95% CI | ROUGE-2 | "
        "ROUGE-2 95% CI | mean output words | compression |" in lines
    )
    assert (
        "| `test` | - | 35.10 | 34.00 – 36.20 | 40.25 | 39.00 – 41.50 | 20.50 | 19.50 – 21.50 "
        "| 6.25 | 0.18 |" in lines
    )
    assert (
        "rouge-score F1 ×100 (Porter-stemmed) against the raw references, 95% bootstrap CIs. "
        "Signatures:" in lines
    )
    assert lines[lines.index("## Gate verdict") - 2] == (
        "Val split `val` (against the cleaned references; sweeps choose by it, the gate never "
        "reads it): ROUGE-L 36.00, ROUGE-1 41.00, ROUGE-2 21.00."
    )
    assert "- delta (challenger − champion): +2.10 ROUGE-L" in lines
    assert "- summarises English (`en`) text (a description → a one-line synopsis) only" in lines
    rejected = GateDecision("rejected", "not compared: x", "2", delta=-1.5)
    assert (
        "- delta (challenger − champion): -1.50 ROUGE-L"
        in with_verdict(card, rejected, "rouge_l").splitlines()
    )


def test_card_of_a_dialogue_model_says_it_replies() -> None:
    scores = {"bleu": 3.5, "chrf": 15.25, "distinct_1": 0.1234, "distinct_2": 0.2,
              "top10_response_share": 0.5}  # fmt: skip
    facts = ModelCardFacts(model_name="chatterbot-dialogue-lstm", src_lang="en", tgt_lang="en",
                           task="dialogue", metric="chrf", version="2",
                           metrics={"test": scores})  # fmt: skip
    lines = model_card(facts, ROUGE_PROMOTED).splitlines()
    assert lines[0] == (
        "**chatterbot-dialogue-lstm**: an LSTM encoder-decoder that replies to English (`en`) "
        "utterances. Built by the pipeline at git commit `not recorded`."
    )
    assert (
        "| `test` | - | 15.25 | - | 3.50 | - | 0.1234 | 0.2000 | 0.5000 |" in lines
    )  # chrF (register.metric) first
    assert "- replies to English (`en`) utterances only" in lines
    assert 'model.predict(pd.DataFrame({"text": ["Hello, how are you?"]}))' in lines


def test_card_facts_read_task_and_metric_from_the_params_tag() -> None:
    params = {"task": "summarization", "register": {"metric": "rouge_l"}, "data": {}}
    facts = facts_from("m", {"params": json.dumps(params)}, {}, {}, {}, {})
    assert (facts.task, facts.metric) == ("summarization", "rouge_l")
    older = facts_from("m", {"params": json.dumps({"data": {}})}, {}, {}, {}, {})
    assert (older.task, older.metric) == ("translation", "bleu")


# --- the champion watch -----------------------------------------------------------------------


def monitor(**overrides: Any) -> Any:
    return replace(load_config(REPO_ROOT / "params.yaml").monitor, **overrides)


def test_canary_findings_name_rouge_l() -> None:
    own = RecordedCanary("2", 35.0, None, "rouge_l")
    baseline = RecordedCanary("1", 38.0, None, "rouge_l")
    rules = monitor(min_canary_score=31.4, max_canary_drop=2.0)
    assert canary_findings("m v2", 30.0, own, baseline, rules, "rouge_l") == [
        Finding("canary", "canary ROUGE-L of m v2 is 30.00, below monitor.min_canary_score 31.40"),
        Finding(
            "canary",
            "canary ROUGE-L of m v2 is 30.00, 5.00 points below 35.00 of v2, its own recorded "
            "canary ROUGE-L (allowed: monitor.max_canary_drop 2.00)",
        ),
        Finding(
            "canary",
            "canary ROUGE-L of m v2 is 30.00, 8.00 points below 38.00 of v1, the version the "
            "gate last promoted (allowed: monitor.max_canary_drop 2.00)",
        ),
    ]
    assert canary_findings("m v2", 35.0, own, None, rules, "rouge_l") == []


def test_canary_is_rescored_with_register_metric() -> None:
    canary = pick_canary("test", REFERENCES, REFERENCES, 12, 1234)
    weak = [WEAK[row] for row in canary.rows]
    expected = round(corpus_score("rouge_l", weak, list(canary.references)), 4)
    assert canary_score("rouge_l", weak, canary, None) == expected < 100.0
    assert canary_score("rouge_l", list(canary.references), canary, None) == 100.0
    assert canary_score("chrf", list(canary.references), canary, CHRF_SIGNATURE) == 100.0
    assert metric_signature({}, "test", "rouge_l") is None
    tags = {"metrics.test.signature.chrf": CHRF_SIGNATURE}
    assert metric_signature(tags, "test", "chrf") == CHRF_SIGNATURE


def history_record(canary: dict[str, Any] | None, checked_at: str) -> dict[str, Any]:
    return {"checked_at": checked_at, "model_name": "m", "version": "2", "loads": True,
            "canary": canary, "drift": [], "findings": [], "drift_until": None}  # fmt: skip


# A record as watches wrote it before the canary scored other metrics than BLEU.
OLD_CANARY = {"split": "test", "pairs": 12, "bleu": 31.2, "recorded_bleu": 31.2,
              "baseline_version": None, "baseline_bleu": None}  # fmt: skip
ROUGE_CANARY = CanaryScore("test", 12, "rouge_l", 35.0, 35.5, "1", 38.0).as_dict()


def test_history_records_keep_their_names_and_old_bleu_records_still_read() -> None:
    assert ROUGE_CANARY == {
        "split": "test",
        "pairs": 12,
        "metric": "rouge_l",
        "rouge_l": 35.0,
        "recorded_rouge_l": 35.5,
        "baseline_version": "1",
        "baseline_rouge_l": 38.0,
    }
    old = canary_numbers(OLD_CANARY)
    assert (old.metric, old.score, old.recorded, old.baseline) == ("bleu", 31.2, 31.2, None)
    record = history_record(ROUGE_CANARY, "2026-03-02T10:00:00+00:00")
    assert watch_metrics(record) == {
        "loads": 1.0,
        "findings": 0.0,
        "drift.batches": 0.0,
        "drift.drifted_batches": 0.0,
        "drift.too_few_lines_batches": 0.0,
        "canary.rouge_l": 35.0,
        "canary.recorded_rouge_l": 35.5,
        "canary.baseline_rouge_l": 38.0,
    }
    old_metrics = watch_metrics(history_record(OLD_CANARY, "2026-03-01T10:00:00+00:00"))
    assert (old_metrics["canary.bleu"], old_metrics["canary.recorded_bleu"]) == (31.2, 31.2)
    assert summary_lines(record)[1] == (
        "canary: ROUGE-L 35.00 on 12 pairs of test (recorded 35.50; version the gate last "
        "promoted v1: 38.00)"
    )


def test_watch_report_names_the_current_metric_and_marks_older_bleu_runs() -> None:
    history = [
        history_record(OLD_CANARY, "2026-03-01T10:00:00+00:00"),
        history_record(ROUGE_CANARY, "2026-03-02T10:00:00+00:00"),
    ]
    report = report_markdown(history, monitor(min_canary_score=31.4, max_canary_drop=2.0))
    lines = report.splitlines()
    assert "## Canary ROUGE-L over time" in lines
    assert "![canary ROUGE-L per watch run](canary_rouge_l.png)" in lines
    assert chart_file("rouge_l") == "canary_rouge_l.png" and chart_file("bleu") == (
        "canary_bleu.png"
    )
    header = lines.index("| --- | --- | --- | ---: | ---: | --- | ---: | ---: |")
    assert lines[header - 1].startswith("| checked at (UTC) | champion | loads | canary ROUGE-L |")
    assert lines[header + 1 : header + 3] == [
        "| 2026-03-02T10:00:00+00:00 | v2 | yes | 35.00 | 35.50 | v1: 38.00 | 0 | 0 |",
        "| 2026-03-01T10:00:00+00:00 | v2 | yes | 31.20 BLEU | 31.20 BLEU | the champion | 0 "
        "| 0 |",
    ]


# --- the approval request and the sweep -------------------------------------------------------


def test_approval_request_of_a_summarization_model_shows_rouge() -> None:
    registration = {
        "model_name": "debian-descriptions-summarization-lstm",
        "version": "3",
        "decision": "awaiting_approval",
        "reason": "policy manual, gate would promote (...)",
        "delta": 2.1,
        "p_value": 0.005,
        "champion_before": "2",
        "task": "summarization",
        "metric": "rouge_l",
    }
    body = approval_request(registration, SUMMARY_METRICS).get("body", "").splitlines()
    assert body[2:5] == [
        "| test split | ROUGE-L | ROUGE-1 | ROUGE-2 | sentences |",
        "| --- | ---: | ---: | ---: | ---: |",
        "| test | 35.10 | 40.25 | 20.50 | n/a |",
    ]
    assert "ROUGE-L delta vs champion: +2.10, paired bootstrap p-value: 0.005." in body


def test_sweep_ranks_by_the_val_score_of_register_metric() -> None:
    rows = [
        PointRow("s-1", {"train.learning_rate": "0.01"}, "finished", 31.5, 60.0, "r1", "a" * 40),
        PointRow("s-2", {"train.learning_rate": "0.02"}, "finished", 35.25, 60.0, "r2", "b" * 40),
    ]
    table = render(rows, ["train.learning_rate"], "rouge_l").splitlines()
    assert (
        table[0]
        == "| # | DVC experiment | train.learning_rate | val ROUGE-L | training | status |"
    )
    assert table[2].startswith("| 1 | s-2 | 0.02 | 35.25 |")
    assert winner(rows, "s", "rouge_l").name == "s-2" and rows[1].val_bleu == 35.25
    with pytest.raises(Exception, match="no point has finished with a val ROUGE-L"):
        winner([replace(rows[0], status="failed")], "s", "rouge_l")
    header = Sweep("s", "run", "1", "f" * 40, (), ("train.epochs",), "rouge_l").header()
    assert Sweep.from_header(header).metric == "rouge_l"
    assert Sweep.from_header({k: v for k, v in header.items() if k != "metric"}).metric == "bleu"
    params = (REPO_ROOT / "params.yaml").read_text("utf-8")
    assert ranking_metric(params) == load_config(REPO_ROOT / "params.yaml").register.metric
    with pytest.raises(Exception, match="`task` is not sweepable"):
        check_key("task", "--set 'task=dialogue'")
