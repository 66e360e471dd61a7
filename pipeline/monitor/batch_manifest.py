"""What a translated batch file records, and how a rerun knows the work is already done.

Beside each output `<output>.manifest.json` says which registered version translated which
input (its sha256) with which decoding settings, how many lines, and when. The same manifest is
kept under reports/monitoring/batches/<key>.json, where <key> hashes what decides the text of
the output: the input's sha256, the model name and version, and the decoding settings. So:

- the same output asked for again is up to date when its manifest has the same key and the
  output file still has the sha256 the manifest recorded: nothing is translated;
- the same input for another output path is copied from the recorded output, not translated
  again (the manifest says `reused_from`);
- anything else (another champion version, another beam, an edited output) translates again.

Writes are ordered so that a kill at any point leaves an output that a rerun redoes or an
output whose manifest matches it: the stale manifest goes first, then the output (atomic),
then the new manifest (atomic).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_write_json

log = logging.getLogger(__name__)

# The manifest fields that decide the text of an output.
KEY_FIELDS = ("input_sha256", "model_name", "model_version", "decoding")


@dataclass(frozen=True)
class BatchKey:
    """What decides an output's text: same key, same translation."""

    input_sha256: str
    model_name: str
    model_version: str
    decoding: dict[str, Any]

    def fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in KEY_FIELDS}

    @property
    def digest(self) -> str:
        canonical = json.dumps(self.fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_manifest(path: Path) -> dict[str, Any] | None:
    """A manifest, or None when it is missing or unreadable (then the work is redone)."""
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        log.warning("%s: unreadable manifest (%s); translating again", path, error)
        return None
    return payload if isinstance(payload, dict) else None


def matches(manifest: dict[str, Any] | None, key: BatchKey) -> bool:
    """Whether `manifest` records this key and its output still holds what was written."""
    if manifest is None or any(
        manifest.get(name) != value for name, value in key.fields().items()
    ):
        return False
    output = Path(str(manifest.get("output", "")))
    return output.is_file() and file_sha256(output) == manifest.get("output_sha256")


def up_to_date(manifest_file: Path, output: Path, key: BatchKey) -> dict[str, Any] | None:
    """The manifest of `output` if it already is this key's translation, else None."""
    manifest = read_manifest(manifest_file)
    if matches(manifest, key) and manifest is not None and Path(manifest["output"]) == output:
        return manifest
    return None


def recorded_output(records_dir: Path, key: BatchKey) -> Path | None:
    """An output elsewhere that already is this key's translation, or None."""
    record = read_manifest(records_dir / f"{key.digest}.json")
    if record is None or not matches(record, key):
        return None
    return Path(record["output"])


def write_manifest(
    manifest_file: Path, records_dir: Path, key: BatchKey, manifest: dict[str, Any]
) -> None:
    """The manifest beside the output, then the record under `records_dir` (both atomic)."""
    atomic_write_json(manifest_file, manifest)
    atomic_write_json(records_dir / f"{key.digest}.json", manifest)
