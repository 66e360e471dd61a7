"""Summarisation and dialogue scores: ROUGE, its bootstrap, output statistics, baselines."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from pipeline.metrics.baselines import extractive_baselines, first_sentence
from pipeline.metrics.bootstrap import (
    MeanWithCI,
    PairedMeans,
    bootstrap_mean,
    mean_with_ci,
    paired_test,
)
from pipeline.metrics.rouge import corpus_rouge, rouge_signature, sentence_rouge
from pipeline.metrics.text_stats import (
    compression,
    distinct_n,
    frequent_responses,
    mean_length,
    top_response_share,
)


def test_rouge_is_stemmed_f1_per_sentence() -> None:
    scores = sentence_rouge(["the cats sat down", "nothing alike"], ["the cat sat", "a dog"])
    assert scores["rouge1"] == pytest.approx([6 / 7, 0.0])  # "cats" stems to "cat": 3 of 4, 3 of 3
    assert scores["rouge2"] == pytest.approx([0.8, 0.0])  # 2 of 3 bigrams, 2 of 2
    assert scores["rougeL"] == pytest.approx([6 / 7, 0.0])


def test_corpus_rouge_is_the_mean_of_sentence_scores_with_no_spread_when_all_agree() -> None:
    assert corpus_rouge(["a b", "c d"], ["a b", "c d"], resamples=100, seed=1) == {
        "rouge1": MeanWithCI(100.0, 0.0),
        "rouge2": MeanWithCI(100.0, 0.0),
        "rougeL": MeanWithCI(100.0, 0.0),
    }


def test_a_mean_of_zeros_and_ones_has_the_binomial_spread() -> None:
    result = mean_with_ci([0.0, 1.0] * 200, resamples=1000, seed=7)
    assert result.score == 50.0
    # The 95% half-width of a mean of 400 fair coin flips is 1.96 * 0.5 / 20 = 4.9 points.
    assert 4.0 <= result.ci <= 5.8


def test_the_unrounded_bootstrap_is_what_mean_with_ci_rounds() -> None:
    scores = [0.1, 0.35, 0.9, 0.0, 0.62]
    mean, half_width = bootstrap_mean(scores, resamples=300, seed=5)
    assert mean == pytest.approx(0.394)
    assert mean_with_ci(scores, resamples=300, seed=5) == MeanWithCI(
        round(100 * mean, 2), round(100 * half_width, 2)
    )


def test_the_rouge_signature_records_the_setup_and_the_resampling() -> None:
    assert rouge_signature("rougeL", resamples=1000, seed=1234) == (
        "nrefs:1|bs:1000|seed:1234|type:rougeL|tok:rouge-score|stemmer:porter|score:f1|"
        f"version:{version('rouge-score')}"
    )


def test_identical_systems_have_p_one_and_one_better_on_every_row_the_floor() -> None:
    assert paired_test([0.3, 0.6], [0.3, 0.6], resamples=999, seed=1) == PairedMeans(
        45.0, 45.0, 0.0, 1.0
    )
    assert paired_test([0.0] * 50, [1.0] * 50, resamples=999, seed=1) == PairedMeans(
        0.0, 100.0, 100.0, 0.001
    )


def test_a_difference_within_the_noise_is_not_significant() -> None:
    baseline = [0.0, 1.0] * 50
    system = [1.0, 0.0] * 49 + [1.0, 1.0]  # one row better out of 100
    result = paired_test(baseline, system, resamples=999, seed=3)
    assert (result.baseline, result.system, result.delta) == (50.0, 51.0, 1.0)
    assert result.p_value > 0.05  # the gate's register.significance


def test_paired_scores_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="paired scores differ in length: 2 and 1"):
        paired_test([0.1, 0.2], [0.1], resamples=10, seed=1)


def test_output_statistics() -> None:
    assert distinct_n(["a b a b", "A b"], 1) == 0.3333
    assert distinct_n(["a b a b", "a b"], 2) == 0.5
    assert distinct_n(["a"], 2) == 0.0
    assert top_response_share(["I do not know"] * 3 + ["yes", "no"], top=1) == 0.6
    assert top_response_share(["i do  NOT know", "I do not know", "yes"], top=1) == pytest.approx(
        0.6667
    )
    assert frequent_responses(["b", "A  a", "a a", "c", "b", "a A"], top=2) == [
        ("a a", 3),
        ("b", 2),
    ]
    assert frequent_responses([]) == []
    assert mean_length(["a b", "c d e f"]) == 3.0
    assert compression(["a b", "c"], ["a b c d", "x y"]) == 0.5


def test_extractive_baselines_cut_at_words_and_at_the_first_sentence_end() -> None:
    source = "Tool for version 1.2 files. It converts them! Fast."
    assert first_sentence(source) == "Tool for version 1.2 files."
    assert first_sentence("no end mark here") == "no end mark here"
    assert extractive_baselines([source]) == {
        "first 6 words": ["Tool for version 1.2 files. It"],
        "first 8 words": ["Tool for version 1.2 files. It converts them!"],
        "first 10 words": ["Tool for version 1.2 files. It converts them! Fast."],
        "first sentence": ["Tool for version 1.2 files."],
    }
