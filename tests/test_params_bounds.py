"""Every param has an allowed range (issue 17, defect 8), and docs/params.md lists exactly them.

The ranges are declared once, in pipeline/config.py's field metadata; a value outside its range
is refused with one line naming key, value and range, before any stage writes anything.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import cli
from pipeline.config import param_specs, parse_config
from pipeline.errors import ConfigError
from tests.conftest import REPO_ROOT, deep_merge, fitting_params, write_params

DOCS = REPO_ROOT / "docs" / "params.md"


def repo_params() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO_ROOT / "params.yaml").read_text("utf-8"))
    return loaded


def yaml_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of every leaf of params.yaml (a list is one leaf)."""
    keys = []
    for key, value in tree.items():
        if isinstance(value, dict):
            keys += yaml_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def docs_rows() -> dict[str, tuple[str, str]]:
    """key -> (type, allowed) from the table in docs/params.md."""
    rows = {}
    for line in DOCS.read_text("utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if line.startswith("| `") and len(cells) == 4:
            rows[cells[0].strip("`")] = (cells[1], cells[2])
    return rows


def nested(key: str, value: Any) -> dict[str, Any]:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def test_every_param_declares_its_allowed_range() -> None:
    undeclared = [key for key, spec in param_specs().items() if spec.allowed_text() is None]
    assert undeclared == []


def test_docs_table_lists_exactly_the_params_with_the_declared_ranges() -> None:
    documented = docs_rows()
    assert list(documented) == yaml_keys(repo_params())
    declared = {
        key: (spec.type_text(), spec.allowed_text()) for key, spec in param_specs().items()
    }
    assert documented == declared


BAD_VALUES = [
    ("register.max_batch_rows", 0, "is 0; allowed: [1, 1024]"),
    ("register.min_score", -1, "is -1.0; allowed: [0, 100]"),
    ("train.learning_rate", -0.001, "is -0.001; allowed: (0, 1]"),
    ("decode.beam_size", 100_000, "is 100000; allowed: [1, 64]"),
    ("decode.max_source_length", 0, "is 0; allowed: [1, 10_000]"),
    ("decode.length_penalty", 5.5, "is 5.5; allowed: [0, 5]"),
    ("decode.max_length_ratio", 0, "is 0.0; allowed: (0, 10]"),
    ("train.epochs", 10_000, "is 10000; allowed: [1, 500]"),
    ("register.significance", 1, "is 1.0; allowed: (0, 1)"),
    ("tokenize.character_coverage", 0.5, "is 0.5; allowed: [0.98, 1]"),
    ("seed", -1, "is -1; allowed: [0, 4_294_967_295]"),
    (
        "data.src_lang",
        "../etc",
        "is '../etc'; allowed: an ISO 639 language code, 2-3 lowercase letters (`[a-z]{2,3}`)",
    ),
    (
        "data.tgt_lang",
        "/tmp/de",
        "is '/tmp/de'; allowed: an ISO 639 language code, 2-3 lowercase letters (`[a-z]{2,3}`)",
    ),
    (
        "register.model_name",
        "team/model",
        "is 'team/model'; allowed: a model name: letters, digits, . _ - "
        "(`[A-Za-z0-9][A-Za-z0-9._-]{0,127}`)",
    ),
    (
        "orchestration.schedule",
        "every monday",
        "is 'every monday'; allowed: none, a preset (@hourly, @daily, @weekly, @monthly, "
        "@quarterly, @yearly) or a 5-field cron expression",
    ),
    (
        "orchestration.timezone",
        "Mars/Olympus_Mons",
        "is 'Mars/Olympus_Mons'; allowed: an IANA time zone name, e.g. UTC or Europe/Berlin",
    ),
    ("data.url", "ftp://example.org/x", "is 'ftp://example.org/x'; allowed: an http(s) URL"),
]


@pytest.mark.parametrize(
    ("key", "value", "message"), BAD_VALUES, ids=[case[0] for case in BAD_VALUES]
)
def test_a_value_outside_its_range_names_key_value_and_range(
    key: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(deep_merge(repo_params(), nested(key, value)))
    assert str(error.value).startswith(f"params.yaml: `{key}` {message}")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("register.max_input_chars", 10_001, "is 10001; allowed: [1, 10_000]"),
        ("register.max_batch_rows", 1_025, "is 1025; allowed: [1, 1024]"),
        ("register.max_request_work", 10_000_001, "is 10000001; allowed: [1, 10_000_000]"),
    ],
    ids=["max_input_chars", "max_batch_rows", "max_request_work"],
)
def test_request_limits_are_bounded_above(key: str, value: Any, message: str) -> None:
    """Issue 25: `max_request_work` had no maximum, and the body cap the limits imply reached
    1.2 TB at the old maxima (tests/test_serving.py checks the cap at the new ones)."""
    with pytest.raises(ConfigError) as error:
        parse_config(deep_merge(repo_params(), nested(key, value)))
    assert str(error.value).startswith(f"params.yaml: `{key}` {message}")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("data.test_splits", ["test_2016_flickr", "../train"], "`data.test_splits[1]` is '../"),
        ("train.bucket_boundaries", [0, 8], "`train.bucket_boundaries[0]` is 0; allowed: [1, "),
    ],
)
def test_each_item_of_a_list_is_checked(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(deep_merge(repo_params(), nested(key, value)))
    assert str(error.value).startswith(f"params.yaml: {message}")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("train.epochs", 500),
        ("decode.beam_size", 64),
        ("decode.beam_size", 1),
        ("decode.max_source_length", 10_000),
        ("register.min_score", 0),
        ("register.max_input_chars", 10_000),
        ("register.max_batch_rows", 1_024),
        ("register.max_request_work", 10_000_000),
        ("train.clip_norm", 0),
        ("data.tgt_lang", "no"),  # Norwegian: a code that YAML 1.1 would read as false unquoted
        ("orchestration.schedule", "30 2 * * 1-5"),
        ("orchestration.schedule", "@daily"),
        ("orchestration.schedule", "none"),
        ("orchestration.timezone", "Europe/Berlin"),
        ("data.path", "/srv/corpora/en de 2026"),
    ],
)
def test_values_at_the_edges_of_their_range_are_accepted(key: str, value: Any) -> None:
    config = parse_config(fitting_params(nested(key, value)))
    section, _, name = key.rpartition(".")
    assert getattr(getattr(config, section), name) == value


def test_a_cron_with_a_wrong_field_count_or_value_is_refused() -> None:
    for schedule in ("0 0 * *", "0 25 * * *", "0 0 * * * *"):
        with pytest.raises(ConfigError) as error:
            parse_config(deep_merge(repo_params(), nested("orchestration.schedule", schedule)))
        assert str(error.value).startswith(
            f"params.yaml: `orchestration.schedule` is '{schedule}'"
        )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"register": {"max_batch_rows": 0}},
            "`register.max_batch_rows` is 0; allowed: [1, 1024]",
        ),
        ({"data": {"val_split": "train"}}, "`data.val_split` is 'train', the same split as"),
    ],
    ids=["out_of_range", "same_split"],
)
def test_mt_stage_refuses_a_bad_param_in_one_line_and_writes_nothing(
    project_dir: Path, caplog: pytest.LogCaptureFixture, params: dict, message: str
) -> None:
    write_params(project_dir, params)
    with caplog.at_level(logging.ERROR, logger="pipeline.cli"):
        code = cli.main(["fetch"])
    assert code == 2
    [record] = [record for record in caplog.records if record.levelno >= logging.ERROR]
    line = record.getMessage()
    assert line.startswith(f"fetch failed: {project_dir / 'params.yaml'}: {message}")
    assert "\n" not in line and record.exc_info is None
    assert sorted(path.name for path in project_dir.iterdir()) == ["params.yaml"]
