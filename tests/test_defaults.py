"""Every default the code carries equals params.yaml's: one value per knob, wherever it is read."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.config import load_config
from pipeline.model.decoding import DecodingSettings

SHIPPED_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def test_a_bare_model_decodes_as_a_project_would() -> None:
    # `mt translate --model <a folder outside a project>` falls back on DecodingSettings(); a
    # project reads params.yaml's decode section: every field must agree.
    decode = load_config(SHIPPED_PARAMS).decode
    assert dataclasses.asdict(DecodingSettings()) == dataclasses.asdict(decode)
    assert DecodingSettings() == DecodingSettings.from_config(decode)
