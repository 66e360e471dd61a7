"""The dialogue corpus: consecutive turns of chatterbot-corpus's English conversations.

The `chatterbot-corpus` wheel (the `dialogue` extra) ships conversations as YAML,
`chatterbot_corpus/data/english/*.yml`, each a `conversations:` list of turn lists. Every two
consecutive turns make one (utterance, response) pair: nothing is downloaded when it runs.

Pairs are split by their utterance (case and spacing folded): every reply to one prompt lands
in the same split, so a test prompt was never seen in training. The split is a hash of that key,
the same on every machine and in every run. Exact repeats of a pair are kept once, and a pair
with an empty side is no pair. The folder written holds `{train,val,test}.tsv`, one
`utterance<TAB>response` per line, for `data.source: tsv`.

    mt dialogue-corpus --out /srv/mt/incoming/chatterbot
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from pipeline.atomic import atomic_directory
from pipeline.errors import DataError

log = logging.getLogger(__name__)

PACKAGE = "chatterbot_corpus"
LANGUAGE_FOLDER = "english"
SPLITS = ("train", "val", "test")
# Of 100 hash buckets of an utterance: 80 train, 10 val, 10 test.
VAL_BUCKETS = range(80, 90)
TEST_BUCKETS = range(90, 100)

Pair = tuple[str, str]


def corpus_folder() -> Path:
    """The installed package's English conversations; one line when the extra is missing."""
    import importlib.resources

    try:
        root = importlib.resources.files(PACKAGE)
    except ModuleNotFoundError:
        raise DataError(
            f"{PACKAGE} is not installed; the dialogue corpus comes from its wheel. Fix: "
            "make install (or pip install 'mt-pipeline[dialogue]')"
        ) from None
    return Path(str(root)) / "data" / LANGUAGE_FOLDER


def read_conversations(folder: Path) -> Iterator[tuple[Path, list[Any]]]:
    """(file, its conversations) of each `*.yml` in `folder`, in name order."""
    files = sorted(folder.glob("*.yml"))
    if not files:
        raise DataError(f"{folder}: no *.yml conversation files")
    for path in files:
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise DataError(f"{path}: not readable YAML ({error})") from None
        conversations = document.get("conversations") if isinstance(document, dict) else None
        if not isinstance(conversations, list):
            raise DataError(f"{path}: no `conversations:` list")
        yield path, conversations


def one_line(turn: Any) -> str:
    """A turn as one line of text: whitespace (tabs and newlines too) collapsed."""
    return " ".join(str(turn).split())


def turn_pairs(conversations: Iterable[Any]) -> Iterator[Pair]:
    """(utterance, response) of every two consecutive turns with text on both sides."""
    for conversation in conversations:
        if not isinstance(conversation, list):
            continue
        turns = [one_line(turn) for turn in conversation]
        yield from (pair for pair in itertools.pairwise(turns) if all(pair))


def split_of(utterance: str) -> str:
    """train, val or test, from a hash of the utterance with case and spacing folded."""
    key = " ".join(utterance.lower().split()).encode("utf-8")
    bucket = int.from_bytes(hashlib.sha256(key).digest()[:4], "big") % 100
    if bucket in VAL_BUCKETS:
        return "val"
    return "test" if bucket in TEST_BUCKETS else "train"


def split_pairs(pairs: Iterable[Pair]) -> dict[str, list[Pair]]:
    """Each split's pairs in first-seen order, each distinct pair once."""
    splits: dict[str, list[Pair]] = {split: [] for split in SPLITS}
    seen: set[Pair] = set()
    for pair in pairs:
        if pair not in seen:
            seen.add(pair)
            splits[split_of(pair[0])].append(pair)
    return splits


def build(out: Path, folder: Path | None = None) -> dict[str, int]:
    """Write `{split}.tsv` of the conversations in `folder` (default: the package's) to `out`,
    all three or none; the pair count of each split."""
    source = folder or corpus_folder()
    pairs = (
        pair
        for _, conversations in read_conversations(source)
        for pair in turn_pairs(conversations)
    )
    splits = split_pairs(pairs)
    empty = [split for split, rows in splits.items() if not rows]
    if empty:
        raise DataError(f"{source}: too few conversations, no pair fell into {', '.join(empty)}")
    with atomic_directory(out) as staging:
        for split, rows in splits.items():
            lines = "".join(f"{utterance}\t{response}\n" for utterance, response in rows)
            (staging / f"{split}.tsv").write_text(lines, encoding="utf-8")
    counts = {split: len(rows) for split, rows in splits.items()}
    log.info("%s: %s pairs from %s", out, counts, source)
    return counts


def main(argv: list[str]) -> int | None:
    parser = argparse.ArgumentParser(
        prog="mt dialogue-corpus", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for {split}.tsv")
    args = parser.parse_args(argv)
    counts = build(args.out.resolve())
    print(", ".join(f"{split} {count}" for split, count in counts.items()), f"pairs in {args.out}")
    return 0
