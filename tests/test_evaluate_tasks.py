"""`mt evaluate` per task: summarization's ROUGE, dialogue's variety of replies, translation as
it was, all on hand-made outputs of a stand-in model (no training, no TensorFlow)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import sacrebleu

from pipeline.config import _load_cached, load_config
from pipeline.eval_provenance import EvaluatedModel
from pipeline.evaluate import evaluate_and_write, read_split, read_val_split
from pipeline.evaluation.by_length import (
    LONG_SOURCE_BUCKETS,
    by_length_csv,
    by_length_filename,
    metric_by_length,
)
from pipeline.evaluation.report import report_markdown
from pipeline.evaluation.scores import (
    baseline_scores,
    dialogue_metrics,
    split_metrics,
    summarization_metrics,
)
from pipeline.evaluation.splits import SplitData, SplitEvaluation
from pipeline.metrics.bootstrap import bootstrap_mean
from pipeline.paths import project_paths
from pipeline.tasks import Task
from tests.conftest import SEED_PAIRS, TINY_OVERRIDES, deep_merge, write_params
from tests.test_evaluate import METRIC_KEYS

SACREBLEU = sacrebleu.__version__
ROUGE_SCORE = version("rouge-score")
TRANSLATION_KEYS = METRIC_KEYS  # what evaluate wrote before tasks (tests/test_evaluate.py)
SUMMARIZATION_KEYS = {
    "rouge_1",
    "rouge_1_ci95",
    "rouge_2",
    "rouge_2_ci95",
    "rouge_l",
    "rouge_l_ci95",
    "mean_output_words",
    "mean_reference_words",
    "compression",
    "sentences",
    "signatures",
}
DIALOGUE_KEYS = {
    "bleu",
    "bleu_ci95",
    "chrf",
    "chrf_ci95",
    "distinct_1",
    "distinct_2",
    "top10_response_share",
    "mean_output_words",
    "sentences",
    "signatures",
}


def rouge_signature(rouge_type: str, resamples: int = 50, seed: int = 1234) -> str:
    return (
        f"nrefs:1|bs:{resamples}|seed:{seed}|type:{rouge_type}|tok:rouge-score|stemmer:porter|"
        f"score:f1|version:{ROUGE_SCORE}"
    )


def sacrebleu_signature(metric: str, resamples: int = 50, seed: int = 1234) -> str:
    common = f"nrefs:1|bs:{resamples}|seed:{seed}"
    return {
        "bleu": f"{common}|case:mixed|eff:no|tok:13a|smooth:exp|version:{SACREBLEU}",
        "chrf": f"{common}|case:mixed|eff:yes|nc:6|nw:0|space:no|version:{SACREBLEU}",
    }[metric]


# ----------------------------------------------------------------------- scoring, per task


def test_summarization_scores_are_stemmed_rouge_f1_with_lengths_and_compression() -> None:
    sources = ["the cat sat on the mat today", "a dog barked"]
    hypotheses = ["the cats sat down", "nothing alike"]
    references = ["the cat sat", "a dog"]
    metrics = summarization_metrics(sources, hypotheses, references, resamples=1000, seed=7)
    assert set(metrics) == SUMMARIZATION_KEYS
    # Sentence F1: ROUGE-1 and ROUGE-L 6/7 and 0 ("cats" stems to "cat"), ROUGE-2 0.8 and 0.
    assert (metrics["rouge_1"], metrics["rouge_2"], metrics["rouge_l"]) == (42.8571, 40.0, 42.8571)
    # Two rows: a quarter of the resamples draw the zero row twice, a quarter the other one, so
    # the 2.5-97.5 percentile range is [0, 6/7] and the CI its half-width either side of the mean.
    assert metrics["rouge_1_ci95"] == [0.0, 85.7143]
    assert metrics["rouge_2_ci95"] == [0.0, 80.0]
    assert metrics["rouge_l_ci95"] == [0.0, 85.7143]
    assert (metrics["mean_output_words"], metrics["mean_reference_words"]) == (3.0, 2.5)
    assert metrics["compression"] == 0.619  # the mean of 4/7 and 2/3, not 6/10
    assert metrics["sentences"] == 2
    assert metrics["signatures"] == {
        "rouge_1": rouge_signature("rouge1", 1000, 7),
        "rouge_2": rouge_signature("rouge2", 1000, 7),
        "rouge_l": rouge_signature("rougeL", 1000, 7),
    }


def test_summaries_equal_to_their_references_score_100_with_no_spread() -> None:
    texts = ["a b c", "d e"]
    metrics = summarization_metrics(["a b c d", "d e f g"], texts, texts, resamples=50, seed=1)
    for metric in ("rouge_1", "rouge_2", "rouge_l"):
        assert (metrics[metric], metrics[f"{metric}_ci95"]) == (100.0, [100.0, 100.0])
    assert metrics["compression"] == 0.625


def test_summarization_intervals_are_the_bootstrap_of_the_sentence_scores() -> None:
    hypotheses = ["a b", "a c", "x", "b a", "a b c"]
    references = ["a b"] * 5
    metrics = summarization_metrics(hypotheses, hypotheses, references, resamples=200, seed=3)
    mean, half = bootstrap_mean([1.0, 0.5, 0.0, 1.0, 0.8], resamples=200, seed=3)
    assert metrics["rouge_1"] == 66.0 == round(100 * mean, 4)
    assert metrics["rouge_1_ci95"] == [
        round(100 * (mean - half), 4),
        round(100 * (mean + half), 4),
    ]


def test_dialogue_scores_count_distinct_ngrams_and_the_ten_most_frequent_replies() -> None:
    outputs = ["I do not know"] * 3 + [f"reply {n}" for n in range(10)]
    metrics = dialogue_metrics(outputs, outputs, resamples=50, seed=1234)
    assert set(metrics) == DIALOGUE_KEYS
    assert metrics["bleu"] == metrics["chrf"] == 100.0
    # sacreBLEU's CI: a resample without "I do not know" has no 4-grams, so BLEU 0.
    assert metrics["chrf_ci95"] == [100.0, 100.0] and len(metrics["bleu_ci95"]) == 2
    assert metrics["distinct_1"] == 0.4688  # i do not know reply 0-9: 15 of 32 words
    assert metrics["distinct_2"] == 0.6842  # 3 + 10 of 19 bigrams
    assert metrics["top10_response_share"] == 0.9231  # 3 + 9 of 13 outputs
    assert metrics["mean_output_words"] == 2.46
    assert metrics["sentences"] == 13
    assert metrics["signatures"] == {
        "bleu": sacrebleu_signature("bleu"),
        "chrf": sacrebleu_signature("chrf"),
    }


def test_each_task_scores_its_own_keys_and_translation_keeps_todays() -> None:
    texts = ["Ein Hund läuft am Strand.", "Zwei Männer spielen Fußball."]
    sources = ["A dog runs on the beach.", "Two men are playing soccer."]
    expected: dict[Task, set[str]] = {
        "translation": TRANSLATION_KEYS,
        "summarization": SUMMARIZATION_KEYS,
        "dialogue": DIALOGUE_KEYS,
    }
    for task, keys in expected.items():
        metrics = split_metrics(task, sources, texts, texts, resamples=50, seed=1234)
        assert set(metrics) == keys, task


def test_rouge_by_length_buckets_long_sources_and_averages_sentence_scores() -> None:
    sources = [words(3), words(25), words(30), words(200)]
    hypotheses = ["the cat sat", "a dog", "nothing", "x y"]
    references = ["the cat sat", "a dog barked", "a dog barked", "x y"]
    rows = metric_by_length("rouge_l", sources, hypotheses, references, LONG_SOURCE_BUCKETS)
    assert rows == [
        {"source_length": "1-20", "rouge_l": 100.0, "sentences": 1},
        {"source_length": "21-40", "rouge_l": 40.0, "sentences": 2},  # F1 0.8 and 0
        {"source_length": "161+", "rouge_l": 100.0, "sentences": 1},
    ]
    assert by_length_csv(rows[:1], "rouge_l") == "source_length,rouge_l,sentences\n1-20,100.0,1\n"
    assert by_length_filename(0, "test", "rouge_l") == "rouge_l_by_length.csv"
    assert by_length_filename(1, "test_2", "chrf") == "chrf_by_length_test_2.csv"
    assert by_length_filename(1, "test_2") == "bleu_by_length_test_2.csv"


def test_extractive_baselines_are_scored_as_the_model_is() -> None:
    source = "The cat sat. It was happy and fed today"
    scores = baseline_scores([source], ["the cat sat"])
    assert list(scores) == ["first 6 words", "first 8 words", "first 10 words", "first sentence"]
    assert scores["first sentence"] == {
        "rouge_1": 100.0,
        "rouge_2": 100.0,
        "rouge_l": 100.0,
        "mean_output_words": 3.0,
        "compression": 0.3333,
    }
    # "The cat sat. It was happy": precision 3/6, recall 1 -> F1 2/3; bigrams 2/5 and 1 -> 4/7.
    assert scores["first 6 words"]["rouge_1"] == 66.6667
    assert scores["first 6 words"]["rouge_2"] == 57.1429
    assert scores["first 10 words"]["rouge_l"] == 50.0  # the whole source: 3/9 and 1


def words(count: int) -> str:
    return " ".join(f"w{n}" for n in range(count))


# --------------------------------------------------------------------------------- reports


def summarization_evaluation() -> SplitEvaluation:
    sources = ["The cat sat. It was happy and fed today", "A dog barked at night."]
    hypotheses, references = ["the cat sat", "a cat"], ["the cat sat", "a dog barked"]
    metrics = summarization_metrics(sources, hypotheses, references, resamples=50, seed=1234)
    return SplitEvaluation(
        split=SplitData("test", sources, references),
        hypotheses=hypotheses,
        metrics=metrics,
        by_length=metric_by_length(
            "rouge_l", sources, hypotheses, references, LONG_SOURCE_BUCKETS
        ),
        sample_rows=[0],
        baselines=baseline_scores(sources, references),
    )


def test_a_summarization_report_names_rouge_l_and_shows_the_baselines() -> None:
    report = report_markdown([summarization_evaluation()], "beam 2", "summarization", "rouge_l")
    assert report.startswith("# Evaluation report: ROUGE-L (summarization)\n")
    table = [
        "| summary | ROUGE-1 | ROUGE-2 | ROUGE-L | mean words | compression |",
        "| --- | --- | --- | --- | --- | --- |",
        "| model | 70.00 | 50.00 | 70.00 | 2.50 | 0.37 |",
        "| first 6 words | 70.83 | 61.90 | 70.83 | 5.50 | 0.83 |",
        "| first 8 words | 64.77 | 55.56 | 64.77 | 6.50 | 0.94 |",
        "| first 10 words | 62.50 | 53.33 | 62.50 | 7.00 | 1.00 |",
        "| first sentence | 87.50 | 83.33 | 87.50 | 4.00 | 0.67 |",
        "",
        "The model is -17.50 ROUGE-L points from the best baseline (first sentence, 87.50).",
    ]
    assert "\n".join(table) in report
    # Two rows, F1 1 and 0.4 ("a cat" against "a dog barked"): resampled means 0.4 to 1.
    assert "| ROUGE-L | 70.00 | 40.00 – 100.00 |" in report
    assert "- ROUGE-L by source length: [rouge_l_by_length.csv](rouge_l_by_length.csv)" in report
    assert (
        "| source length | ROUGE-L | sentences |\n| --- | --- | --- |\n| 1-20 | 70.00 | 2 |"
        in (report)
    )
    assert f"- rouge_l: `{rouge_signature('rougeL')}`" in report


def test_a_dialogue_report_lists_the_most_frequent_replies_with_their_counts() -> None:
    outputs = ["I do not know."] * 3 + ["Yes | no"] * 2 + [""]
    sources = [f"question {n}" for n in range(6)]
    evaluation = SplitEvaluation(
        split=SplitData("test", sources, outputs),
        hypotheses=outputs,
        metrics=dialogue_metrics(outputs, outputs, resamples=50, seed=1),
        by_length=metric_by_length("chrf", sources, outputs, outputs, LONG_SOURCE_BUCKETS),
        sample_rows=[],
        frequent_responses=[("i do not know.", 3), ("yes | no", 2), ("", 1)],
    )
    report = report_markdown([evaluation], "beam 2", "dialogue", "chrf")
    assert report.startswith("# Evaluation report: chrF (dialogue)\n")
    assert (
        "| response | count | share |\n| --- | --- | --- |\n| i do not know. | 3 | 50.00% |\n"
        "| yes \\| no | 2 | 33.33% |\n| *(empty)* | 1 | 16.67% |\n"
    ) in report
    assert "| top-10 response share | 1.0000 | |" in report
    assert "- chrF by source length: [chrf_by_length.csv](chrf_by_length.csv)" in report


# ------------------------------------------------------------------------------- the stage


@dataclass
class StandInTranslation:
    text: str
    source_pieces: list[str] = field(default_factory=list)  # none: no attention maps
    target_pieces: list[str] = field(default_factory=list)
    attention: Any = None


class StandInModel:
    """Fixed outputs by source, in place of a trained model."""

    def __init__(self, outputs: dict[str, str]) -> None:
        self.outputs = outputs

    def translate(self, texts: list[str], progress: bool = False) -> list[str]:
        return [self.outputs[text] for text in texts]

    def translate_with_attention(
        self, texts: list[str], progress: bool = False
    ) -> list[StandInTranslation]:
        return [StandInTranslation(self.outputs[text]) for text in texts]


STAND_IN = EvaluatedModel(
    "0" * 64,
    "1" * 64,
    {"beam_size": 2, "length_penalty": 0.6, "max_length_ratio": 1.5, "max_length_offset": 10}
    | {"batch_size": 128, "max_source_length": 64},
)


def write_split(
    root: Path, split: str, sides: tuple[str, str], pairs: list[tuple[str, str]]
) -> None:
    """data/raw and data/clean of one split (its clean side already normalised)."""
    for directory in (root / "data" / "raw", root / "data" / "clean"):
        directory.mkdir(parents=True, exist_ok=True)
        for index, side in enumerate(sides):
            text = "".join(pair[index] + "\n" for pair in pairs)
            (directory / f"{split}.{side}").write_text(text, encoding="utf-8")


def evaluate_with(
    root: Path,
    overrides: dict[str, Any],
    test: list[tuple[str, str, str]],
    val: list[tuple[str, str, str]],
) -> dict[str, Any]:
    """Write params and the test/val splits ((source, reference, output) rows), evaluate them
    with the stand-in, and return metrics.json as written."""
    write_params(root, deep_merge(TINY_OVERRIDES, overrides))
    _load_cached.cache_clear()
    config, paths = load_config(), project_paths()
    write_split(root, config.data.test_splits[0], config.data.sides, [(s, r) for s, r, _ in test])
    write_split(root, config.data.val_split, config.data.sides, [(s, r) for s, r, _ in val])
    model = StandInModel({source: output for source, _, output in [*test, *val]})
    splits = [read_split(paths, config, split) for split in config.data.test_splits]
    evaluate_and_write(model, STAND_IN, config, paths, splits, read_val_split(paths, config))
    return json.loads(paths.metrics_file.read_text(encoding="utf-8"))


SAME_LANGUAGE = {"src_lang": "en", "tgt_lang": "en", "test_splits": ["test"]}
SUMMARIES = [
    ("The cat sat on the mat. It was a sunny day.", "the cat sat", "the cat sat"),
    ("A dog barked loudly. " + words(21), "a dog barked", "a dog"),
    ("Tool for converting files between formats. " + words(44), "tool for converting files", "no"),
]


def test_a_summarization_evaluation_writes_rouge_entries_and_its_reports(
    project_dir: Path,
) -> None:
    val = [("A short text about birds. They sing.", "birds sing", "birds")]
    overrides = {"task": "summarization", "data": SAME_LANGUAGE, "register": {"metric": "rouge_l"}}
    metrics = evaluate_with(project_dir, overrides, SUMMARIES, val)

    assert list(metrics) == ["test", "val"]
    assert set(metrics["test"]) == set(metrics["val"]) == SUMMARIZATION_KEYS
    test = metrics["test"]
    assert (test["rouge_1"], test["rouge_2"], test["rouge_l"]) == (60.0, 55.5556, 60.0)
    assert (test["mean_output_words"], test["mean_reference_words"]) == (2.0, 3.33)
    assert test["compression"] == 0.1242  # mean of 3/11, 2/25 and 1/50
    assert test["signatures"]["rouge_l"] == rouge_signature("rougeL")
    assert (metrics["val"]["rouge_1"], metrics["val"]["sentences"]) == (66.6667, 1)

    reports = project_dir / "reports" / "eval"
    assert sorted(path.name for path in reports.iterdir()) == [
        "attention",
        "hypotheses",
        "provenance.json",
        "report.md",
        "rouge_l_by_length.csv",
        "samples.md",
    ]
    assert (reports / "rouge_l_by_length.csv").read_text(encoding="utf-8") == (
        "source_length,rouge_l,sentences\n1-20,100.0,1\n21-40,80.0,1\n41-80,0.0,1\n"
    )
    assert (reports / "hypotheses" / "test.txt").read_text(
        encoding="utf-8"
    ) == "the cat sat\na dog\nno\n"
    report = (reports / "report.md").read_text(encoding="utf-8")
    assert report.startswith("# Evaluation report: ROUGE-L (summarization)\n")
    assert "sources cut to their first 64 pieces" in report
    assert "| model | 60.00 | 55.56 | 60.00 | 2.00 | 0.12 |" in report
    assert (reports / "samples.md").read_text(encoding="utf-8").startswith("# Sample summaries")


def test_a_dialogue_evaluation_writes_variety_of_replies_and_chrf_by_length(
    project_dir: Path,
) -> None:
    test = [(f"Question {n}?", "I do not know.", "I do not know.") for n in range(3)]
    test += [(f"Tell me about {n}.", f"It is {n}.", f"It is {n}.") for n in range(2)]
    overrides = {"task": "dialogue", "data": SAME_LANGUAGE, "register": {"metric": "chrf"}}
    metrics = evaluate_with(project_dir, overrides, test, test[:2])

    assert set(metrics["test"]) == set(metrics["val"]) == DIALOGUE_KEYS
    assert (metrics["test"]["bleu"], metrics["test"]["chrf"]) == (100.0, 100.0)
    assert metrics["test"]["top10_response_share"] == 1.0
    assert metrics["test"]["distinct_1"] == 0.4444  # i do not know. it is 0. 1.: 8 of 18
    reports = project_dir / "reports" / "eval"
    assert (reports / "chrf_by_length.csv").read_text(encoding="utf-8") == (
        "source_length,chrf,sentences\n1-5,100.0,5\n"
    )
    assert not (reports / "bleu_by_length.csv").exists()
    report = (reports / "report.md").read_text(encoding="utf-8")
    assert report.startswith("# Evaluation report: chrF (dialogue)\n")
    assert "| i do not know. | 3 | 60.00% |\n| it is 0. | 1 | 20.00% |" in report


# The translation outputs of the evaluate before the task split (commit 15c16a1), byte for byte:
# metrics.json, bleu_by_length.csv, report.md and samples.md keep their DVC hashes.
TRANSLATION_OUTPUTS = {
    source: target if index % 3 else " ".join(target.split()[:2])
    for index, (source, target) in enumerate(SEED_PAIRS)
}
TRANSLATION_REPORT = """# Evaluation report

Decoding: beam 2, length penalty 0.6, max length 1.5 × source + 10.

[Samples](samples.md)

## test_2016_flickr (10 sentences)

| metric | score | 95% CI |
| --- | --- | --- |
| BLEU | 69.51 | 45.53 – 90.07 |
| chrF | 73.89 | 54.16 – 91.75 |
| TER | 24.00 | 8.74 – 40.79 |
| BLEU (lowercased) | 69.51 | |

Signatures:

- bleu: `nrefs:1|bs:50|seed:1234|case:mixed|eff:no|tok:13a|smooth:exp|version:{v}`
- bleu_lowercase: `nrefs:1|bs:50|seed:1234|case:lc|eff:no|tok:13a|smooth:exp|version:{v}`
- chrf: `nrefs:1|bs:50|seed:1234|case:mixed|eff:yes|nc:6|nw:0|space:no|version:{v}`
- ter: `nrefs:1|bs:50|seed:1234|case:lc|tok:tercom|norm:no|punct:yes|asian:no|version:{v}`

- Hypotheses: [hypotheses/test_2016_flickr.txt](hypotheses/test_2016_flickr.txt)
- BLEU by source length: [bleu_by_length.csv](bleu_by_length.csv)

| source length | BLEU | sentences |
| --- | --- | --- |
| 1-5 | 41.11 | 3 |
| 6-10 | 79.57 | 7 |

Attention maps:

"""


def translation_signatures() -> dict[str, str]:
    common = "nrefs:1|bs:50|seed:1234"
    return {
        "bleu": f"{common}|case:mixed|eff:no|tok:13a|smooth:exp|version:{SACREBLEU}",
        "bleu_lowercase": f"{common}|case:lc|eff:no|tok:13a|smooth:exp|version:{SACREBLEU}",
        "chrf": f"{common}|case:mixed|eff:yes|nc:6|nw:0|space:no|version:{SACREBLEU}",
        "ter": f"{common}|case:lc|tok:tercom|norm:no|punct:yes|asian:no|version:{SACREBLEU}",
    }


def test_a_translation_evaluation_writes_exactly_what_it_wrote_before_the_tasks(
    project_dir: Path,
) -> None:
    rows = [(source, target, TRANSLATION_OUTPUTS[source]) for source, target in SEED_PAIRS]
    metrics = evaluate_with(project_dir, {}, rows, rows[:4])

    assert metrics == {
        "test_2016_flickr": {
            "bleu": 69.5144,
            "bleu_ci95": [45.5335, 90.0713],
            "bleu_lowercase": 69.5144,
            "chrf": 73.8878,
            "chrf_ci95": [54.1596, 91.7517],
            "sentences": 10,
            "signatures": translation_signatures(),
            "ter": 24.0,
            "ter_ci95": [8.7409, 40.7888],
        },
        "val": {
            "bleu": 58.6646,
            "bleu_ci95": [1.4635, 101.4635],
            "bleu_lowercase": 58.6646,
            "chrf": 66.5862,
            "chrf_ci95": [24.1577, 99.048],
            "sentences": 4,
            "signatures": translation_signatures(),
            "ter": 31.5789,
            "ter_ci95": [4.6234, 64.6234],
        },
    }
    assert set(metrics["test_2016_flickr"]) == set(metrics["val"]) == TRANSLATION_KEYS
    reports = project_dir / "reports" / "eval"
    assert sorted(path.name for path in reports.iterdir()) == [
        "attention",
        "bleu_by_length.csv",
        "hypotheses",
        "provenance.json",
        "report.md",
        "samples.md",
    ]
    assert (reports / "bleu_by_length.csv").read_text(encoding="utf-8") == (
        "source_length,bleu,sentences\n1-5,41.1112,3\n6-10,79.5669,7\n"
    )
    report = (reports / "report.md").read_text(encoding="utf-8")
    assert report == TRANSLATION_REPORT.replace("{v}", SACREBLEU)
    samples = (reports / "samples.md").read_text(encoding="utf-8")
    assert samples.startswith("# Sample translations\n\n## test_2016_flickr\n\n### Line 8\n\n")
    assert samples.count("### Line ") == 3
