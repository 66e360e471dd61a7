"""The model card (pipeline/registry/model_card.py): exact Markdown from plain facts."""

from __future__ import annotations

import json

from pipeline.registry.gate import GateDecision
from pipeline.registry.model_card import ModelCardFacts, facts_from, model_card, with_verdict

BLEU_SIGNATURE = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
TEST_SIGNATURE = "nrefs:1|bs:1000|seed:1234|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
MULTI30K_URL = "https://github.com/multi30k/dataset/raw/master/data/task1/raw"
DECODING = {"beam_size": 5, "length_penalty": 0.6, "max_length_ratio": 1.5,
            "max_length_offset": 10, "batch_size": 128, "max_source_length": 200}  # fmt: skip
METRICS = {
    "test_2016_flickr": {
        "bleu": 31.0979, "bleu_ci95": [30.1, 32.05], "bleu_lowercase": 32.5, "chrf": 58.4321,
        "chrf_ci95": [57.6, 59.2], "ter": 50.5, "ter_ci95": [49.25, 51.75], "sentences": 1000,
        "signatures": {"bleu": BLEU_SIGNATURE},
    }
}  # fmt: skip
FACTS = ModelCardFacts(
    model_name="multi30k-en-de-lstm",
    model_uri="models:/m-0123abcd",
    version="7",
    src_lang="en",
    tgt_lang="de",
    data_source="multi30k",
    data_location=MULTI30K_URL,
    split_sizes={"train": (29000, 28870), "val": (1014, 1010), "test_2016_flickr": (1000, 1000)},
    dvc_hashes={"data/tokens": "0123.dir", "models/seq2seq.keras": "4567"},
    params={
        "tokenize.vocab_size": 8000,
        "tokenize.joint": True,
        "model.hidden_units": 256,
        "train.epochs": 8,
    },
    metrics=METRICS,
    decoding=DECODING,
    max_input_chars=1000,
    git_commit="d27e0e6",
)
PROMOTED = GateDecision(
    "promoted",
    "challenger significantly better than champion v6: BLEU 31.10 vs 29.80 (delta +1.30, "
    "p=0.0120; need p < 0.05 and delta > 0.0)",
    champion_version="6",
    delta=1.2979,
    p_value=0.012,
    test_signature=TEST_SIGNATURE,
)

EXPECTED_CARD = f"""\
**multi30k-en-de-lstm**: an LSTM encoder-decoder translating English (`en`) into German (`de`). \
Built by the pipeline at git commit `d27e0e6`.

## Test scores

Judged by **BLEU** (`register.metric`: the gate's and the champion watch's metric).

| split | sentences | BLEU | BLEU 95% CI | chrF | chrF 95% CI | TER | TER 95% CI | \
BLEU lowercased |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
| `test_2016_flickr` | 1000 | 31.10 | 30.10 – 32.05 | 58.43 | 57.60 – 59.20 | 50.50 | \
49.25 – 51.75 | 32.50 |

sacreBLEU against the raw references, 95% bootstrap CIs. Signatures:

- `test_2016_flickr` bleu: `{BLEU_SIGNATURE}`

## Gate verdict

- outcome: **promoted**
- compared against champion: v6
- delta (challenger − champion): +1.30 BLEU
- p-value (paired bootstrap): 0.0120
- test signature: `{TEST_SIGNATURE}`
- reason: challenger significantly better than champion v6: BLEU 31.10 vs 29.80 (delta +1.30, \
p=0.0120; need p < 0.05 and delta > 0.0)

## Data

- source: multi30k, {MULTI30K_URL}

| split | rows read | rows kept by cleaning |
| --- | --- | --- |
| `train` | 29000 | 28870 |
| `val` | 1014 | 1010 |
| `test_2016_flickr` | 1000 | 1000 |

- DVC hashes (md5):
  - `data/tokens`: `0123.dir`
  - `models/seq2seq.keras`: `4567`

## Parameters

| param | value |
| --- | --- |
| `tokenize.vocab_size` | 8000 |
| `tokenize.joint` | true |
| `model.hidden_units` | 256 |
| `train.epochs` | 8 |

## Decoding

| setting | value |
| --- | --- |
| beam size | 5 |
| length penalty | 0.6 |
| max output length ratio (× source pieces) | 1.5 |
| max output length offset (+ pieces) | 10 |
| max source length (pieces) | 200 |
| batch size | 128 |

## Known limits

- input: at most 1000 characters per text (`register.max_input_chars`); a longer text is \
refused with HTTP 400
- sources longer than 200 SentencePiece pieces are cut before decoding
- domain: short image captions (Multi30k, descriptions of Flickr photos); other text (news, \
dialogue, technical writing) is out of domain and untested
- translates English (`en`) into German (`de`) only

## How to load

```python
import mlflow
import pandas as pd

model = mlflow.pyfunc.load_model("models:/multi30k-en-de-lstm/7")
model.predict(pd.DataFrame({{"text": ["A dog runs on the beach."]}}))
```

Serve it: `mlflow models serve -m "models:/multi30k-en-de-lstm/7" --env-manager local -p 5001`; \
translate lines from stdin: `mt translate --model models:/multi30k-en-de-lstm/7`.

The logged model: `models:/m-0123abcd`.
"""


def test_card_of_a_full_registration_is_exactly_this_markdown() -> None:
    assert model_card(FACTS, PROMOTED) == EXPECTED_CARD


def test_a_new_gate_decision_replaces_only_the_verdict() -> None:
    rejected = GateDecision("rejected", "not compared: different test sets", "8")
    card = with_verdict(EXPECTED_CARD, rejected)
    before, _, after = EXPECTED_CARD.partition("## Gate verdict")
    assert card.startswith(before)
    assert card.endswith(after[after.index("\n\n## Data") :])
    assert card[len(before) : card.index("\n\n## Data")] == (
        "## Gate verdict\n\n- outcome: **rejected**\n- compared against champion: v8\n"
        "- delta (challenger − champion): not recorded\n- p-value (paired bootstrap): not "
        "recorded\n- reason: not compared: different test sets"
    )
    assert with_verdict(model_card(FACTS, PROMOTED), rejected) == model_card(FACTS, rejected)
    assert with_verdict("hand-written", rejected).startswith("hand-written\n\n## Gate verdict")


def test_card_says_what_is_not_recorded_rather_than_leaving_it_out() -> None:
    first = GateDecision("rejected", "no champion yet and BLEU 12.00 < min_score 20.00")
    lines = model_card(ModelCardFacts(model_name="stand-in"), first).splitlines()
    assert lines[0] == (
        "**stand-in**: an LSTM encoder-decoder translating an unrecorded language into an "
        "unrecorded language. Built by the pipeline at git commit `not recorded`."
    )
    for line in [
        "not recorded (metrics.json has no split)",
        "- outcome: **rejected**",
        "- compared against champion: none (no champion)",
        "- delta (challenger − champion): not recorded",
        "- p-value (paired bootstrap): not recorded",
        "- source: not recorded",
        "- rows per split: not recorded (reports/cleaning.json)",
        "- DVC hashes: not recorded",
        "- input length limit: not recorded",
        "- domain: that of the training corpus (not recorded)",
    ]:
        assert line in lines
    assert not any(line.startswith("- test signature") for line in lines)
    assert lines[-3:] == ["## How to load", "", "not recorded"]


def test_card_before_the_version_exists_loads_the_logged_model() -> None:
    """The create call carries the card before MLflow assigns the version number."""
    before = ModelCardFacts(model_name="multi30k-en-de-lstm", model_uri="models:/m-0123abcd")
    lines = model_card(before, PROMOTED).splitlines()
    assert 'model = mlflow.pyfunc.load_model("models:/m-0123abcd")' in lines
    assert not any(line.startswith("The logged model") for line in lines)


def test_scores_missing_from_metrics_json_are_dashes() -> None:
    """A stand-in's metrics.json holds only BLEU, its sentence count and signature."""
    facts = ModelCardFacts(model_name="m", metrics={"test": {"bleu": 55.5, "sentences": 40}})
    assert "| `test` | 40 | 55.50 | - | - | - | - | - | - |" in model_card(facts, PROMOTED)


def test_a_corpus_other_than_multi30k_names_its_source_and_no_domain() -> None:
    facts = ModelCardFacts(model_name="m", src_lang="en", tgt_lang="xx", data_source="tsv",
                           data_location="/srv/corpus")  # fmt: skip
    lines = model_card(facts, PROMOTED).splitlines()
    assert "- source: tsv, /srv/corpus" in lines
    assert "- domain: that of the training corpus (tsv)" in lines
    assert "- translates English (`en`) into `xx` only" in lines


def test_facts_come_from_the_lineage_tags_metrics_and_model_config() -> None:
    params = {
        "data": {"source": "dir", "url": "https://example.org", "path": "/data/mt",
                 "src_lang": "en", "tgt_lang": "cs"},
        "tokenize": {"model_type": "bpe", "vocab_size": 4000, "joint": False,
                     "character_coverage": 1.0},
        "model": {"embedding_dim": 64, "hidden_units": 128, "dropout": 0.1,
                  "tie_embeddings": True},
        "train": {"epochs": 3, "batch_size": 32, "learning_rate": 0.001, "warmup_steps": 10,
                  "label_smoothing": 0.1, "max_tokens": 40, "patience": 1, "clip_norm": 1.0},
    }  # fmt: skip
    lineage = {
        "params": json.dumps(params),
        "git.commit": "abc123",
        "dvc.md5.data/tokens": "0123.dir",
        "dvc.md5_source.data/tokens": "dvc.lock",
        "metrics.test.bleu": "31.0",
    }
    facts = facts_from("en-cs", lineage, METRICS, {"train": (10, 9)}, DECODING,
                       {"max_input_chars": 500, "max_batch_rows": 4})  # fmt: skip
    assert facts == ModelCardFacts(
        model_name="en-cs",
        src_lang="en",
        tgt_lang="cs",
        data_source="dir",
        data_location="/data/mt",  # a `dir` corpus is its path, not the Multi30k URL
        split_sizes={"train": (10, 9)},
        dvc_hashes={"data/tokens": "0123.dir"},
        params={
            "tokenize.model_type": "bpe",
            "tokenize.vocab_size": 4000,
            "tokenize.joint": False,
            "model.embedding_dim": 64,
            "model.hidden_units": 128,
            "model.dropout": 0.1,
            "model.tie_embeddings": True,
            "train.epochs": 3,
            "train.batch_size": 32,
            "train.learning_rate": 0.001,
            "train.warmup_steps": 10,
            "train.label_smoothing": 0.1,
            "train.max_tokens": 40,
            "train.patience": 1,
        },
        metrics=METRICS,
        decoding=DECODING,
        max_input_chars=500,
        git_commit="abc123",
    )


def test_the_val_split_is_a_line_of_its_own_not_a_test_score_row() -> None:
    val = {**METRICS["test_2016_flickr"], "bleu": 29.5, "chrf": 55.25, "sentences": 1010}
    facts = ModelCardFacts(
        model_name="m", metrics={**METRICS, "val": val}, val_split="val", decoding=DECODING
    )
    scores = model_card(facts, PROMOTED).split("## Gate verdict")[0]
    assert "| `test_2016_flickr` | 1000 | 31.10 |" in scores
    assert "| `val`" not in scores and "`val` bleu" not in scores
    assert scores.rstrip().endswith(
        "Val split `val` (against the cleaned references; sweeps choose by it, the gate never "
        "reads it): BLEU 29.50, chrF 55.25."
    )
    params = {"data": {"val_split": "val"}}
    lineage = {"params": json.dumps(params)}
    assert facts_from("m", lineage, {}, {}, {}, {}).val_split == "val"
