"""A registered model serves one task and one language pair; a name that names either must
name its own.

Versions of one registered model compete for its `@champion`, so they must translate the same
pair. Two paths choose the name, and both go through here:
- a DAG run that changes the pair (pipeline/orchestration/run_params.py) swaps the pair
  inside the name, `multi30k-en-de-lstm` -> `multi30k-en-fr-lstm` (`model_name_for_pair`);
- reading params.yaml (pipeline/config.py) refuses a register.model_name that names another
  pair than data.src_lang / data.tgt_lang, with the name to set in the message
  (`check_name_names_pair`). It does not rename on its own: params.yaml stays the one place
  that says which registered model `mt registry`, `mt serve` and the DAG's approval step act on.

A name names a pair when it holds a separate token `a-b` (bounded by the start, the end, `-`,
`_` or `.`) of two language codes that is either this pair, its reverse, one sharing a side
with it in place (`en-x` for an `en` source, `x-de` for a `de` target), or two two-letter
codes (ISO 639-1, as pair names usually are). So `multi30k-en-de-lstm` names en-de, while
`translator`, `fr-try` and `big-rnn` name no pair and are kept as the user chose them.

A name names a task when it holds one of the task words (pipeline/tasks.py) as a token:
`debian-descriptions-summarization-lstm` names summarization, and is refused for a dialogue
model. A summarization or dialogue model's name may not name a translation pair (two different
languages). The check runs when params.yaml is read (pipeline/config.py), so `dvc repro` with a
name that does not fit stops before the first stage, not after twenty minutes of training.

Only light imports: the DAG file imports run_params at parse time.
"""

from __future__ import annotations

import re

from pipeline.errors import ConfigError
from pipeline.tasks import TASKS, Task

Pair = tuple[str, str]

# Every `a-b` of two 2-3 letter codes standing as its own token (overlaps too: x-en-de).
_PAIR_TOKEN = re.compile(r"(?<![A-Za-z0-9])(?=([a-z]{2,3})-([a-z]{2,3})(?![A-Za-z0-9]))")


def pair_token(pair: Pair) -> str:
    return "-".join(pair)


def pair_tokens(name: str) -> list[Pair]:
    """The `a-b` tokens of `name` shaped like a language pair, left to right."""
    return [(match.group(1), match.group(2)) for match in _PAIR_TOKEN.finditer(name)]


def other_pair_named(name: str, pair: Pair) -> Pair | None:
    """The pair other than `pair` that `name` names, or None (it names `pair`, or no pair)."""
    tokens = pair_tokens(name)
    if pair in tokens:
        return None
    source, target = pair
    for first, second in tokens:
        in_place = first == source or second == target or (second, first) == pair
        if in_place or (len(first) == 2 and len(second) == 2):
            return first, second
    return None


def model_name_for_pair(name: str, old: Pair, new: Pair) -> str:
    """A registered model serves one language pair: swap the pair inside its name.

    An en-fr model must not become a challenger of the en-de champion.
    """
    old_token, new_token = pair_token(old), pair_token(new)
    if old not in pair_tokens(name):
        raise ConfigError(
            f"run params: the language pair changes to {new_token} but register.model_name "
            f"{name!r} does not contain {old_token!r}; set the `model_name` run param"
        )
    bounded = rf"(?<![A-Za-z0-9]){re.escape(old_token)}(?![A-Za-z0-9])"
    return re.sub(bounded, new_token, name, count=1)


def check_name_names_pair(name: str, pair: Pair) -> None:
    """Refuse a register.model_name that names another pair than the model translates."""
    other = other_pair_named(name, pair)
    if other is None:
        return
    suggested = model_name_for_pair(name, other, pair)
    raise ConfigError(
        f"params.yaml: register.model_name {name!r} names the language pair "
        f"{pair_token(other)}, but this model translates {pair_token(pair)} (data.src_lang, "
        f"data.tgt_lang); a registered model serves one pair. Set `register.model_name: "
        f"{suggested}`, or a name without a language pair"
    )


def tasks_named(name: str) -> list[Task]:
    """The task words standing as tokens of `name` (bounded by start, end, -, _ or .)."""
    tokens = set(re.split(r"[-_.]", name.lower()))
    return [task for task in TASKS if task in tokens]


def check_model_name(name: str, task: Task, pair: Pair) -> None:
    """Refuse a register.model_name that names another task, or another pair (translation) or
    any translation pair (summarization, dialogue)."""
    others = [named for named in tasks_named(name) if named != task]
    if others:
        raise ConfigError(
            f"params.yaml: register.model_name {name!r} names the task {others[0]}, but "
            f"`task` is {task}; versions of one registered model compete for one @champion. "
            f"Set a name of this task's own (e.g. `register.model_name: "
            f"{_name_for_task(name, others[0], task)}`)"
        )
    if task == "translation":
        check_name_names_pair(name, pair)
        return
    translation_pairs = [tokens for tokens in pair_tokens(name) if tokens[0] != tokens[1]]
    if translation_pairs:
        raise ConfigError(
            f"params.yaml: register.model_name {name!r} names the language pair "
            f"{pair_token(translation_pairs[0])}, but `task` is {task}, not translation. Set a "
            f"name of this task's own (the presets use e.g. <corpus>-{task}-lstm)"
        )


def _name_for_task(name: str, old: Task, new: Task) -> str:
    return re.sub(rf"(?<![A-Za-z0-9]){old}(?![A-Za-z0-9])", new, name, count=1, flags=re.I)
