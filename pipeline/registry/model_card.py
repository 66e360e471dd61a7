"""The model card: a version's description in the MLflow registry, in Markdown.

Pure: `facts_from` picks the facts out of what a registration already holds (the lineage tags,
metrics.json, the cleaning counts, the decoding settings evaluate used, the pyfunc's request
limits), and `model_card` renders them with the gate's decision. A fact that is not known (a
stand-in model has no decoding settings, a project without reports/cleaning.json no sizes) is
said to be "not recorded" rather than left out, so a reader knows it was not forgotten.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.registry.gate import GateDecision
from pipeline.tasks import TASK_METRICS, TASKS, metric_label

NOT_RECORDED = "not recorded"
LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "cs": "Czech"}
# The params that shape the model, as `section.key` rows of the card.
CARD_PARAMS = {
    "tokenize": ("model_type", "vocab_size", "joint"),
    "model": ("embedding_dim", "hidden_units", "dropout", "tie_embeddings"),
    "train": (
        "epochs",
        "batch_size",
        "learning_rate",
        "warmup_steps",
        "label_smoothing",
        "max_tokens",
        "patience",
    ),
}
DECODING_ROWS = (
    ("beam_size", "beam size"),
    ("length_penalty", "length penalty"),
    ("max_length_ratio", "max output length ratio (× source pieces)"),
    ("max_length_offset", "max output length offset (+ pieces)"),
    ("max_source_length", "max source length (pieces)"),
    ("batch_size", "batch size"),
)
# Per task: the scores metrics.json holds with a 95% CI (register.metric is shown first), and
# its other numbers as (key, label, format).
SCORED_METRICS: dict[str, tuple[str, ...]] = {
    "translation": ("bleu", "chrf", "ter"),
    "summarization": ("rouge_l", "rouge_1", "rouge_2"),
    "dialogue": ("bleu", "chrf"),
}
PLAIN_COLUMNS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "translation": (("bleu_lowercase", "BLEU lowercased", ".2f"),),
    "summarization": (
        ("mean_output_words", "mean output words", ".2f"),
        ("compression", "compression", ".2f"),
    ),
    "dialogue": (
        ("distinct_1", "distinct-1", ".4f"),
        ("distinct_2", "distinct-2", ".4f"),
        ("top10_response_share", "top-10 response share", ".4f"),
    ),
}
SCORED_BY = {
    "translation": "sacreBLEU",
    "summarization": "rouge-score F1 ×100 (Porter-stemmed)",
    "dialogue": "sacreBLEU",
}
EXAMPLE_TEXT = "A dog runs on the beach."
# The "How to load" example input of the other tasks (translation: EXAMPLE_TEXT).
EXAMPLE_TEXTS = {
    "summarization": "A command-line tool that converts images between formats. It reads and "
    "writes PNG, JPEG and GIF files.",
    "dialogue": "Hello, how are you?",
}


def score_columns(task: str, metric: str) -> tuple[str, ...]:
    """The scores with a CI that `task` reports, `metric` (register.metric) first."""
    scored = SCORED_METRICS.get(task, SCORED_METRICS["translation"])
    return (metric, *(key for key in scored if key != metric)) if metric in scored else scored


def column_label(key: str) -> str:
    """A score's name as a person reads it (BLEU, chrF, TER, ROUGE-L)."""
    return "TER" if key == "ter" else metric_label(key)


@dataclass(frozen=True)
class ModelCardFacts:
    """Plain facts about one version; every field but the name may be unknown."""

    model_name: str
    model_uri: str | None = None  # the logged model, `models:/m-...`
    version: str | None = None
    src_lang: str | None = None
    tgt_lang: str | None = None
    data_source: str | None = None  # params `data.source`: multi30k | dir | tsv
    data_location: str | None = None  # its URL or folder
    split_sizes: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    dvc_hashes: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)  # `section.key` -> value
    metrics: Mapping[str, Any] = field(default_factory=dict)  # metrics.json
    val_split: str | None = None  # params `data.val_split`: its metrics.json entry is no test
    decoding: Mapping[str, Any] = field(default_factory=dict)
    max_input_chars: int | None = None
    git_commit: str | None = None
    task: str = "translation"  # params `task`
    metric: str = "bleu"  # params `register.metric`: the gate's and the watch's metric


def facts_from(
    model_name: str,
    lineage: Mapping[str, str],
    metrics: Mapping[str, Any],
    split_sizes: Mapping[str, tuple[int, int]],
    decoding: Mapping[str, Any],
    model_config: Mapping[str, Any],
) -> ModelCardFacts:
    """The card's facts from a registration's lineage tags (params JSON, `dvc.md5.*`, git),
    metrics.json, cleaning counts, decoding settings and the pyfunc's model_config."""
    params = _params_json(lineage.get("params"))
    data = params.get("data") or {}
    max_input_chars = model_config.get("max_input_chars")
    task = str(params.get("task") or "translation")
    return ModelCardFacts(
        model_name=model_name,
        src_lang=data.get("src_lang"),
        tgt_lang=data.get("tgt_lang"),
        data_source=data.get("source"),
        data_location=(data.get("url") if data.get("source") == "multi30k" else data.get("path"))
        or None,
        split_sizes=dict(split_sizes),
        dvc_hashes={
            tag.removeprefix("dvc.md5."): value
            for tag, value in sorted(lineage.items())
            if tag.startswith("dvc.md5.")
        },
        params={
            f"{section}.{key}": params[section][key]
            for section, keys in CARD_PARAMS.items()
            for key in keys
            if key in (params.get(section) or {})
        },
        metrics=dict(metrics),
        val_split=data.get("val_split"),
        decoding=dict(decoding),
        max_input_chars=int(max_input_chars) if max_input_chars is not None else None,
        git_commit=lineage.get("git.commit"),
        task=task,
        metric=str((params.get("register") or {}).get("metric") or "bleu"),
    )


def _params_json(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    params = json.loads(text)
    return params if isinstance(params, dict) else {}


# --------------------------------------------------------------------------------- render


def model_card(facts: ModelCardFacts, decision: GateDecision) -> str:
    """The whole card, sections in the order a reviewer reads them."""
    sections = [
        _summary(facts),
        _scores(facts),
        _verdict(decision, facts.metric),
        _data(facts),
        _params(facts.params),
        _decoding(facts.decoding),
        _limits(facts),
        _loading(facts),
    ]
    return "\n\n".join(sections) + "\n"


def with_verdict(card: str, decision: GateDecision, metric: str = "bleu") -> str:
    """The card with its gate verdict replaced by `decision` (a registration that gated again
    after the version was created, because @champion moved meanwhile); `metric` is the
    version's register.metric, the unit of the delta."""
    heading = "## Gate verdict\n\n"
    verdict = _verdict(decision, metric)
    start = card.find(heading)
    if start < 0:
        return f"{card.rstrip()}\n\n{verdict}\n"
    end = card.find("\n\n## ", start + len(heading))
    rest = card[end:] if end >= 0 else "\n"
    return card[:start] + verdict + rest


def language(code: str | None) -> str:
    if code is None:
        return "an unrecorded language"
    name = LANGUAGE_NAMES.get(code)
    return f"{name} (`{code}`)" if name else f"`{code}`"


def what_it_does(task: str, src_lang: str | None, tgt_lang: str | None) -> str:
    """The model's job in a phrase: what the card's first line and its limits say."""
    if task == "summarization":
        return f"summarises {language(src_lang)} text (a description → a one-line synopsis)"
    if task == "dialogue":
        return f"replies to {language(src_lang)} utterances"
    return f"translates {language(src_lang)} into {language(tgt_lang)}"


def _summary(facts: ModelCardFacts) -> str:
    commit = facts.git_commit or NOT_RECORDED
    if facts.task in TASKS and facts.task != "translation":
        doing = f"that {what_it_does(facts.task, facts.src_lang, facts.tgt_lang)}"
    else:
        doing = f"translating {language(facts.src_lang)} into {language(facts.tgt_lang)}"
    return (
        f"**{facts.model_name}**: an LSTM encoder-decoder {doing}. Built by the pipeline at "
        f"git commit `{commit}`."
    )


def _score_cell(scores: Mapping[str, Any], key: str) -> str:
    value = scores.get(key)
    return "-" if value is None else f"{float(value):.2f}"


def _ci_cell(scores: Mapping[str, Any], key: str) -> str:
    bounds = scores.get(f"{key}_ci95")
    if not isinstance(bounds, list | tuple) or len(bounds) != 2:
        return "-"
    return f"{float(bounds[0]):.2f} – {float(bounds[1]):.2f}"


def _plain_cell(scores: Mapping[str, Any], key: str, spec: str) -> str:
    value = scores.get(key)
    return "-" if value is None else format(float(value), spec)


def _scores(facts: ModelCardFacts) -> str:
    metrics, val_split, task = facts.metrics, facts.val_split, facts.task
    splits = {
        split: s for split, s in metrics.items() if isinstance(s, Mapping) and split != val_split
    }
    if not splits:
        return f"## Test scores\n\n{NOT_RECORDED} (metrics.json has no split)"
    columns = score_columns(task, facts.metric)
    plain = PLAIN_COLUMNS.get(task, PLAIN_COLUMNS["translation"])
    header = ["split", "sentences"]
    for key in columns:
        header += [column_label(key), f"{column_label(key)} 95% CI"]
    header += [label for _, label, _ in plain]
    lines = [_headline(facts.metric), "", _row(header), _row(["---"] * len(header))]
    for split, scores in splits.items():
        cells = [f"`{split}`", str(scores.get("sentences", "-"))]
        for key in columns:
            cells += [_score_cell(scores, key), _ci_cell(scores, key)]
        cells += [_plain_cell(scores, key, spec) for key, _, spec in plain]
        lines.append(_row(cells))
    scored_by = SCORED_BY.get(task, SCORED_BY["translation"])
    lines += ["", f"{scored_by} against the raw references, 95% bootstrap CIs. Signatures:", ""]
    lines += [
        f"- `{split}` {metric}: `{signature}`"
        for split, scores in splits.items()
        for metric, signature in (scores.get("signatures") or {}).items()
    ]
    selection = metrics.get(val_split) if val_split else None
    if isinstance(selection, Mapping):
        lines += ["", _selection_line(val_split, selection, task, facts.metric)]
    return "## Test scores\n\n" + "\n".join(lines)


def _headline(metric: str) -> str:
    return (
        f"Judged by **{column_label(metric)}** (`register.metric`: the gate's and the champion "
        "watch's metric)."
    )


def _selection_line(split: str | None, scores: Mapping[str, Any], task: str, metric: str) -> str:
    """The val split's scores: what a sweep chose this model by, never what the gate reads."""
    reported = TASK_METRICS[task] if task in TASK_METRICS else TASK_METRICS["translation"]
    keys = (metric, *(key for key in reported if key != metric))
    values = ", ".join(f"{column_label(key)} {_score_cell(scores, key)}" for key in keys)
    return (
        f"Val split `{split}` (against the cleaned references; sweeps choose by it, the gate "
        f"never reads it): {values}."
    )


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _verdict(decision: GateDecision, metric: str = "bleu") -> str:
    champion = (
        f"v{decision.champion_version}" if decision.champion_version else "none (no champion)"
    )
    unit = column_label(metric)
    delta = NOT_RECORDED if decision.delta is None else f"{decision.delta:+.2f} {unit}"
    p_value = NOT_RECORDED if decision.p_value is None else f"{decision.p_value:.4f}"
    lines = [
        f"- outcome: **{decision.outcome}**",
        f"- compared against champion: {champion}",
        f"- delta (challenger − champion): {delta}",
        f"- p-value (paired bootstrap): {p_value}",
    ]
    if decision.test_signature:
        lines.append(f"- test signature: `{decision.test_signature}`")
    lines.append(f"- reason: {decision.reason}")
    return "## Gate verdict\n\n" + "\n".join(lines)


def _data(facts: ModelCardFacts) -> str:
    source = facts.data_source or NOT_RECORDED
    if facts.data_location:
        source = f"{source}, {facts.data_location}"
    lines = [f"- source: {source}"]
    if facts.split_sizes:
        lines += ["", _row(["split", "rows read", "rows kept by cleaning"]), _row(["---"] * 3)]
        lines += [
            _row([f"`{split}`", str(read), str(kept)])
            for split, (read, kept) in facts.split_sizes.items()
        ]
        lines.append("")
    else:
        lines.append(f"- rows per split: {NOT_RECORDED} (reports/cleaning.json)")
    if facts.dvc_hashes:
        lines.append("- DVC hashes (md5):")
        lines += [f"  - `{path}`: `{md5}`" for path, md5 in facts.dvc_hashes.items()]
    else:
        lines.append(f"- DVC hashes: {NOT_RECORDED}")
    return "## Data\n\n" + "\n".join(lines)


def _params(params: Mapping[str, Any]) -> str:
    if not params:
        return f"## Parameters\n\n{NOT_RECORDED}"
    lines = [_row(["param", "value"]), _row(["---", "---"])]
    lines += [_row([f"`{key}`", _value(value)]) for key, value in params.items()]
    return "## Parameters\n\n" + "\n".join(lines)


def _value(value: Any) -> str:
    """A param as params.yaml writes it (`true`, not Python's `True`)."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _decoding(decoding: Mapping[str, Any]) -> str:
    rows = [(label, decoding[key]) for key, label in DECODING_ROWS if key in decoding]
    if not rows:
        return f"## Decoding\n\n{NOT_RECORDED}"
    lines = [_row(["setting", "value"]), _row(["---", "---"])]
    lines += [_row([label, _value(value)]) for label, value in rows]
    return "## Decoding\n\n" + "\n".join(lines)


def _limits(facts: ModelCardFacts) -> str:
    chars = facts.max_input_chars
    lines = [
        f"- input: at most {chars} characters per text (`register.max_input_chars`); a longer "
        "text is refused with HTTP 400"
        if chars is not None
        else f"- input length limit: {NOT_RECORDED}"
    ]
    if "max_source_length" in facts.decoding:
        lines.append(
            f"- sources longer than {facts.decoding['max_source_length']} SentencePiece pieces "
            "are cut before decoding"
        )
    if facts.data_source == "multi30k":
        lines.append(
            "- domain: short image captions (Multi30k, descriptions of Flickr photos); other "
            "text (news, dialogue, technical writing) is out of domain and untested"
        )
    else:
        lines.append(
            f"- domain: that of the training corpus ({facts.data_source or NOT_RECORDED})"
        )
    lines.append(f"- {what_it_does(facts.task, facts.src_lang, facts.tgt_lang)} only")
    return "## Known limits\n\n" + "\n".join(lines)


def _loading(facts: ModelCardFacts) -> str:
    uri = f"models:/{facts.model_name}/{facts.version}" if facts.version else facts.model_uri
    if uri is None:
        return f"## How to load\n\n{NOT_RECORDED}"
    example = EXAMPLE_TEXTS.get(facts.task, EXAMPLE_TEXT)
    verb = "translate" if facts.task == "translation" else "answer"
    lines = [
        "```python",
        "import mlflow",
        "import pandas as pd",
        "",
        f'model = mlflow.pyfunc.load_model("{uri}")',
        f'model.predict(pd.DataFrame({{"text": ["{example}"]}}))',
        "```",
        "",
        f'Serve it: `mlflow models serve -m "{uri}" --env-manager local -p 5001`; '
        f"{verb} lines from stdin: `mt translate --model {uri}`.",
    ]
    if facts.version and facts.model_uri:
        lines += ["", f"The logged model: `{facts.model_uri}`."]
    return "## How to load\n\n" + "\n".join(lines)
