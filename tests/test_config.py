from pathlib import Path

import pytest
import yaml

from pipeline.config import Config, DecodeConfig, load_config, parse_config
from pipeline.errors import ConfigError
from tests.conftest import REPO_ROOT, deep_merge


def repo_params() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))


def test_repo_params_load_into_frozen_dataclasses() -> None:
    config = load_config(REPO_ROOT / "params.yaml")
    assert isinstance(config, Config)
    assert config.data.src_lang == "en"
    assert config.data.tgt_lang == "de"
    assert config.data.splits == ("train", "val", "test_2016_flickr")
    with pytest.raises(AttributeError):
        config.train.epochs = 99  # type: ignore[misc]


def test_unknown_key_is_named_with_the_allowed_keys() -> None:
    raw = deep_merge(repo_params(), {"train": {"epochz": 3}})
    with pytest.raises(ConfigError) as error:
        parse_config(raw)
    message = str(error.value)
    assert "unknown key `train.epochz`" in message
    assert "epochs" in message and "batch_size" in message


def test_decode_is_its_own_section_read_by_every_translation() -> None:
    config = load_config(REPO_ROOT / "params.yaml")
    assert config.decode == DecodeConfig(
        beam_size=5,
        length_penalty=1.0,
        max_length_ratio=1.5,
        max_length_offset=10,
        max_source_length=200,
        batch_size=128,
    )


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"decode": {"beam": 4}},
            "params.yaml: unknown key `decode.beam`; allowed keys: beam_size, length_penalty, "
            "max_length_ratio, max_length_offset, max_source_length, batch_size",
        ),
        (
            {"evaluate": {"beam_size": 4}},  # the layout before `decode:` had its own section
            "params.yaml: unknown key `evaluate.beam_size`; allowed keys: bootstrap_resamples, "
            "samples, attention_maps",
        ),
    ],
    ids=["decode_unknown", "evaluate_no_longer_decodes"],
)
def test_decoding_keys_live_only_in_decode(section: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(deep_merge(repo_params(), section))
    assert str(error.value) == message


def test_wrong_type_names_key_and_type() -> None:
    raw = deep_merge(repo_params(), {"train": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match=r"`train.epochs` must be of type int, got 'ten'"):
        parse_config(raw)


def test_bool_is_not_accepted_as_a_number() -> None:
    raw = deep_merge(repo_params(), {"train": {"batch_size": True}})
    with pytest.raises(ConfigError, match="`train.batch_size` must be of type int"):
        parse_config(raw)


def test_int_is_accepted_where_a_float_is_meant() -> None:
    raw = deep_merge(repo_params(), {"train": {"learning_rate": 1}})
    assert parse_config(raw).train.learning_rate == 1.0


def test_literal_lists_the_allowed_values() -> None:
    raw = deep_merge(repo_params(), {"tokenize": {"model_type": "wordpiece"}})
    with pytest.raises(ConfigError) as error:
        parse_config(raw)
    assert str(error.value) == (
        "params.yaml: `tokenize.model_type` is 'wordpiece'; allowed values: 'unigram', 'bpe'"
    )


def test_missing_key_is_named() -> None:
    raw = repo_params()
    del raw["data"]["src_lang"]
    with pytest.raises(ConfigError, match="missing key `data.src_lang`"):
        parse_config(raw)


def test_list_items_are_type_checked() -> None:
    raw = deep_merge(repo_params(), {"data": {"test_splits": ["test_2016_flickr", 7]}})
    with pytest.raises(ConfigError, match=r"`data.test_splits\[1\]` must be of type str"):
        parse_config(raw)


def test_value_rules_are_enforced() -> None:
    raw = deep_merge(repo_params(), {"data": {"tgt_lang": "en"}})
    with pytest.raises(ConfigError, match="`data.tgt_lang` must differ from src_lang"):
        parse_config(raw)


def test_a_metric_the_task_does_not_report_is_rejected() -> None:
    raw = deep_merge(repo_params(), {"register": {"metric": "rouge_l"}})
    with pytest.raises(ConfigError) as error:
        parse_config(raw)
    assert str(error.value) == (
        "params.yaml: `register.metric` is 'rouge_l', which task translation does not report; "
        "one of bleu, chrf"
    )


def test_section_that_is_not_a_mapping_is_rejected() -> None:
    raw = deep_merge(repo_params(), {"model": 5})
    with pytest.raises(ConfigError, match="`model` must be a mapping, got int"):
        parse_config(raw)


def test_missing_and_malformed_files_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml: params file not found"):
        load_config(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("seed: [1,\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(broken)


def test_errors_name_the_file_they_came_from(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(deep_merge(repo_params(), {"seed": "x"})), encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path.resolve()}: `seed` must be of type int")


# ---- train, val and test must be different splits (issue 17, defect 4) ---------------------

DISTINCT = "train, val and test splits must be distinct (a score on seen data measures nothing)"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"val_split": "train"},
            f"`data.val_split` is 'train', the same split as `data.train_split`; {DISTINCT}",
        ),
        (
            {"test_splits": ["train"]},
            f"`data.test_splits[0]` is 'train', the same split as `data.train_split`; {DISTINCT}",
        ),
        (
            {"test_splits": ["test_2016_flickr", "val"]},
            f"`data.test_splits[1]` is 'val', the same split as `data.val_split`; {DISTINCT}",
        ),
        (
            {"test_splits": ["test_2016_flickr", "test_2016_flickr"]},
            "`data.test_splits[1]` is 'test_2016_flickr', the same split as "
            f"`data.test_splits[0]`; {DISTINCT}",
        ),
    ],
    ids=["val_is_train", "test_is_train", "test_is_val", "test_twice"],
)
def test_a_split_used_twice_is_rejected(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(deep_merge(repo_params(), {"data": data}))
    assert str(error.value) == f"params.yaml: {message}"


def test_distinct_splits_are_accepted() -> None:
    data = {"train_split": "train", "val_split": "dev", "test_splits": ["test_a", "test_b"]}
    config = parse_config(deep_merge(repo_params(), {"data": data}))
    assert config.data.splits == ("train", "dev", "test_a", "test_b")
