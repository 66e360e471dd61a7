"""A registered model's name and the language pair it serves (pipeline/model_naming.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.config import _load_cached
from pipeline.errors import ConfigError
from pipeline.model_naming import (
    check_model_name,
    check_name_names_pair,
    model_name_for_pair,
    other_pair_named,
    pair_tokens,
)
from tests.conftest import write_params


@pytest.mark.parametrize(
    ("name", "pair", "other"),
    [
        ("multi30k-en-de-lstm", ("en", "de"), None),  # its own pair
        ("multi30k-en-de-lstm", ("en", "cs"), ("en", "de")),  # the target changed
        ("multi30k-en-de-lstm", ("fr", "de"), ("en", "de")),  # the source changed
        ("multi30k-en-de-lstm", ("de", "en"), ("en", "de")),  # the direction changed
        ("multi30k-en-de-lstm", ("fr", "cs"), ("en", "de")),  # both: two ISO 639-1 codes
        ("eng-deu.v2", ("eng", "ces"), ("eng", "deu")),  # three-letter codes, in place
        ("translator", ("en", "cs"), None),  # no pair in the name: the user's choice
        ("fr-try", ("en", "fr"), None),  # `fr` is not where a source code would stand
        ("multi30k-big-rnn", ("en", "cs"), None),  # pair-shaped words, not codes of this pair
        ("xen-dev", ("en", "cs"), None),  # `en` and `de` only inside words
    ],
)
def test_other_pair_named(name: str, pair: tuple[str, str], other: tuple[str, str] | None) -> None:
    assert other_pair_named(name, pair) == other


def test_pair_tokens_overlap_and_stop_at_word_edges() -> None:
    assert pair_tokens("x-en-de-big-rnn") == [("en", "de"), ("de", "big"), ("big", "rnn")]
    assert pair_tokens("m_en-de.v2") == [("en", "de")]
    assert pair_tokens("x1-en-de2") == []


def test_the_pair_is_swapped_only_where_it_stands_as_a_token() -> None:
    name = "xen-dev-en-de"
    assert model_name_for_pair(name, ("en", "de"), ("en", "cs")) == "xen-dev-en-cs"
    with pytest.raises(ConfigError, match="does not contain 'en-de'; set the `model_name`"):
        model_name_for_pair("xen-dev", ("en", "de"), ("en", "cs"))


def test_a_name_of_another_pair_is_refused_with_the_name_to_set() -> None:
    with pytest.raises(ConfigError) as error:
        check_name_names_pair("multi30k-en-de-lstm", ("en", "cs"))
    assert str(error.value) == (
        "params.yaml: register.model_name 'multi30k-en-de-lstm' names the language pair en-de, "
        "but this model translates en-cs (data.src_lang, data.tgt_lang); a registered model "
        "serves one pair. Set `register.model_name: multi30k-en-cs-lstm`, or a name without a "
        "language pair"
    )
    check_name_names_pair("multi30k-en-cs-lstm", ("en", "cs"))
    check_name_names_pair("translator", ("en", "cs"))


def test_a_name_of_another_task_or_of_a_pair_is_refused_for_a_task() -> None:
    with pytest.raises(ConfigError) as error:
        check_model_name("debian-summarization-lstm", "dialogue", ("en", "en"))
    assert str(error.value) == (
        "params.yaml: register.model_name 'debian-summarization-lstm' names the task "
        "summarization, but `task` is dialogue; versions of one registered model compete for "
        "one @champion. Set a name of this task's own (e.g. `register.model_name: "
        "debian-dialogue-lstm`)"
    )
    with pytest.raises(ConfigError, match="names the language pair en-de, but `task` is summ"):
        check_model_name("multi30k-en-de-lstm", "summarization", ("en", "en"))
    with pytest.raises(ConfigError, match="names the task dialogue, but `task` is translation"):
        check_model_name("chat-dialogue", "translation", ("en", "de"))
    check_model_name("debian-descriptions-summarization-lstm", "summarization", ("en", "en"))
    check_model_name("summaries-en-en", "summarization", ("en", "en"))  # not a translation pair
    check_model_name("multi30k-en-de-lstm", "translation", ("en", "de"))


def test_the_first_stage_refuses_a_name_that_does_not_fit_before_touching_anything(
    project_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`dvc repro` with data.tgt_lang: cs and the en-de name: one line, exit 2, nothing
    written: the check runs when params.yaml is read, before twenty minutes of training."""
    write_params(
        project_dir,
        {"data": {"tgt_lang": "cs"}, "register": {"model_name": "multi30k-en-de-lstm"}},
    )
    _load_cached.cache_clear()
    with caplog.at_level(logging.ERROR, logger="pipeline.cli"):
        assert cli.main(["fetch"]) == 2
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert line.startswith(
        f"fetch failed: {project_dir / 'params.yaml'}: register.model_name "
        "'multi30k-en-de-lstm' names the language pair en-de, but this model translates en-cs"
    )
    assert "Set `register.model_name: multi30k-en-cs-lstm`" in line
    assert sorted(path.name for path in project_dir.iterdir()) == ["params.yaml"]
