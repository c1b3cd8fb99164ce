"""Prompt sets and the sampler that draws prompts for each iteration."""

import json
import os
import warnings
from typing import List, Optional, Sequence, Union

import torch
from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

PromptSource = Union[Dataset, DatasetDict, Sequence[str], Sequence[dict], str, os.PathLike]
_JSON = ".json"  # suffix of a column that holds nested metadata as JSON text
_SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")  # what save_to_disk writes


def load_prompts(
    source: PromptSource,
    prompt_column: str = "prompt",
    *,
    config_name: Optional[str] = None,
    split: str = "train",
    cache_dir: Optional[str] = None,
    max_samples: Optional[int] = None,
) -> Dataset:
    """Prompts as a `datasets.Dataset` with a `"prompt"` column; other columns are metadata for the rewards.

    Args:
        source: A `datasets.Dataset` or `DatasetDict`; a list of strings; a list of dicts; a `.txt` file (one prompt
            a line); a `.jsonl`/`.json` file of records; a `.csv` or `.parquet` file; a `save_to_disk` folder; or
            the name of a dataset to `load_dataset`.
        prompt_column: The column holding the prompts, renamed to `"prompt"`.
        config_name: The dataset's configuration, for a Hub dataset.
        split: The split of a `DatasetDict`, a Hub dataset or a saved folder.
        cache_dir: Where `load_dataset` caches a Hub dataset.
        max_samples: Keep only the first `max_samples` prompts.

    Raises:
        ValueError: If the source is empty, has no prompt column or lacks the split.
    """
    if isinstance(source, (str, os.PathLike)):
        dataset = _load_file_or_hub(str(source), config_name, split, cache_dir)
    elif isinstance(source, (Dataset, DatasetDict)):
        dataset = _split_of(source, split, "the DatasetDict")
    else:
        records = [_record(r, n, "the prompt list") for n, r in enumerate(source, 1)]
        dataset = records_to_dataset(records) if records else Dataset.from_dict({"prompt": []})
    if prompt_column != "prompt" and prompt_column in dataset.column_names:
        dataset = dataset.rename_column(prompt_column, "prompt")
    if "prompt" not in dataset.column_names:
        raise ValueError(f"The prompt set has no {prompt_column!r} column; its columns are {dataset.column_names}. "
                         "Name the column with --caption_column (prompt_column=...).")
    where = source if isinstance(source, (str, os.PathLike)) else "the prompt set"
    check_prompts(dataset["prompt"], where)
    dataset = _without_blank_prompts(dataset, where)
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    if len(dataset) == 0:
        raise ValueError("The prompt set is empty: give at least one prompt.")
    return dataset


MAX_PROMPT_CHARS = 10_000  # text encoders read a few hundred tokens; a longer prompt is a mistake, not a prompt


def check_prompts(prompts: Sequence[object], where: object) -> None:
    """One rule for every format: each prompt is text of at most `MAX_PROMPT_CHARS` characters (blank ones are
    then left out, with a warning: `_without_blank_prompts`).

    Raises:
        ValueError: Naming the first row (from 1) that breaks it.
    """
    for row, prompt in enumerate(prompts, 1):
        if not isinstance(prompt, str):
            problem = f"the prompt is {prompt!r} ({type(prompt).__name__}), not text"
        elif len(prompt) > MAX_PROMPT_CHARS:
            problem = (f"the prompt is {len(prompt):,} characters long (at most {MAX_PROMPT_CHARS:,}; text encoders "
                       "read a few hundred tokens)")
        else:
            continue
        raise ValueError(f"{where}, row {row}: {problem}. Every prompt must be text.")


def _without_blank_prompts(dataset: Dataset, where: object) -> Dataset:
    """`dataset` without its blank prompts (in every format: a blank line of a .txt file, an empty string in a
    record), with one warning that says how many and where the first was."""
    blank = [row for row, prompt in enumerate(dataset["prompt"]) if not prompt.strip()]
    if not blank:
        return dataset
    warnings.warn(f"{where}: {len(blank)} blank prompt(s) left out (the first at row {blank[0] + 1}).")
    keep = sorted(set(range(len(dataset))) - set(blank))
    return dataset.select(keep)


def _record(value: object, row: int, where: str) -> dict:
    """A prompt (a string) or a record (a mapping with a prompt) as a record."""
    if isinstance(value, str):
        return {"prompt": value}
    if isinstance(value, dict):
        return dict(value)
    raise ValueError(f"{where}, row {row}: {value!r} is neither a prompt (text) nor a record with a 'prompt'.")


def prompt_sets(train: "PromptSource", held_out: Optional["PromptSource"] = None):
    """The training prompts and the held-out ones (None when not given) as datasets.

    Raises:
        ValueError: Without training prompts.
    """
    if train is None:
        raise ValueError("train_dataset is required: a datasets.Dataset, a list of prompts or a prompt file.")
    return load_prompts(train), load_prompts(held_out) if held_out is not None else None


def _split_of(dataset, split: str, what: str) -> Dataset:
    """`dataset` itself, or its split `split` when it is a `DatasetDict` (never the dict's keys as prompts)."""
    if not isinstance(dataset, DatasetDict):
        return dataset
    if split not in dataset:
        raise ValueError(f"{what} has the splits {sorted(dataset)}, not {split!r}: choose one with --dataset_split.")
    return dataset[split]


def _load_file_or_hub(path: str, config_name: Optional[str], split: str, cache_dir: Optional[str]) -> Dataset:
    if path.endswith(".txt"):  # one prompt a line; the blank lines ending the file are not prompts
        lines = _read_lines(path)
        while lines and not lines[-1].strip():
            lines.pop()
        return Dataset.from_dict({"prompt": [line.strip() for line in lines]})
    if path.endswith(".jsonl"):
        return records_to_dataset([_json_line(path, n, line) for n, line in enumerate(_read_lines(path), 1)
                                   if line.strip()])
    if path.endswith(".json"):
        try:
            values = json.loads("".join(_read_lines(path)))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {error.lineno}: not valid JSON ({error.msg}).") from error
        if not isinstance(values, list):
            raise ValueError(f"{path}: a JSON list of prompts or records is needed, got a {type(values).__name__}.")
        return records_to_dataset([_record(value, n, path) for n, value in enumerate(values, 1)])
    for suffix, builder in ((".csv", "csv"), (".parquet", "parquet")):
        if path.endswith(suffix):
            return load_dataset(builder, data_files=path, split="train", cache_dir=cache_dir)
    if os.path.isdir(path) and any(os.path.exists(os.path.join(path, name)) for name in _SAVED_MARKERS):
        return _split_of(load_from_disk(path), split, path)
    if os.path.exists(path):
        raise ValueError(f"Cannot read prompts from {path!r}: use a .txt, .jsonl, .json, .csv or .parquet file, a "
                         "save_to_disk folder, or a dataset name.")
    return load_dataset(path, config_name, split=split, cache_dir=cache_dir)


def _read_lines(path: str) -> List[str]:
    """The lines of a UTF-8 text file; a byte that is not UTF-8 is reported with its line."""
    with open(path, "rb") as f:
        raw = f.read().split(b"\n")
    lines = []
    for number, line in enumerate(raw, 1):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}, line {number}: not UTF-8 ({error.reason} at byte {error.start}). "
                             "Save the prompt file as UTF-8.") from error
    return lines


def _json_line(path: str, number: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}, line {number}: not a JSON record ({error.msg}): {line[:80]!r}") from error
    if not isinstance(record, dict):
        raise ValueError(f"{path}, line {number}: a JSON object with a 'prompt' is needed, got {line[:80]!r}.")
    return record


def records_to_dataset(records: List[dict]) -> Dataset:
    """Prompt records as a `Dataset`. Nested metadata (lists, dicts) is kept as JSON text in a column named
    `<key>.json`: Arrow cannot hold GenEval's `"position": ["left of", 0]`. `row_metadata` decodes it."""
    nested = {k for r in records for k, v in r.items() if isinstance(v, (list, dict))}
    columns = list(dict.fromkeys(k for r in records for k in r))  # every key, also those the first record lacks
    encoded = [
        {(k + _JSON if k in nested else k): (json.dumps(r[k]) if k in nested and k in r else r.get(k)) for k in columns}
        for r in records
    ]
    try:
        return Dataset.from_list(encoded)
    except (TypeError, ValueError) as error:  # pyarrow: one column of several types
        raise ValueError(f"The prompt records mix types in one column ({_first_mixed(records)}): {error}") from None


def _first_mixed(records: List[dict]) -> str:
    """Where a column of `records` first changes type: `"column 'prompt', row 2: int after str"`."""
    seen = {}
    for row, record in enumerate(records, 1):
        for key, value in record.items():
            kind = type(value).__name__
            if value is not None and seen.setdefault(key, kind) != kind:
                return f"column {key!r}, row {row}: {kind} after {seen[key]}"
    return "no column found"


def row_metadata(rows: Dataset) -> List[dict]:
    """The metadata of each row (every column but `prompt`), nested values decoded, as the rewards receive it."""
    columns = [c for c in rows.column_names if c != "prompt"]
    decode = {c: c[: -len(_JSON)] for c in columns if c.endswith(_JSON)}
    return [
        {decode.get(c, c): (json.loads(rows[c][i]) if c in decode and rows[c][i] is not None else rows[c][i])
         for c in columns}
        for i in range(len(rows))
    ]


class PromptSampler:
    """Draws prompts for each iteration: a seeded permutation per epoch, walked in order.

    Its state (epoch and position) is part of every checkpoint, so a resumed run sees the same prompts.

    Args:
        num_prompts: Size of the prompt set.
        seed: Seed of the permutations.
    """

    def __init__(self, num_prompts: int, seed: int):
        self.num_prompts = num_prompts
        self.seed = seed
        self.epoch = 0
        self.position = 0

    def _permutation(self) -> List[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.num_prompts, generator=generator).tolist()

    def next(self, count: int) -> List[int]:
        """Indices of the next `count` prompts (a prompt set smaller than `count` is repeated across epochs)."""
        indices = []
        while len(indices) < count:
            if self.position >= self.num_prompts:
                self.epoch, self.position = self.epoch + 1, 0
            take = min(count - len(indices), self.num_prompts - self.position)
            indices += self._permutation()[self.position : self.position + take]
            self.position += take
        return indices

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "num_prompts": self.num_prompts}

    def load_state_dict(self, state: dict) -> None:
        if state["num_prompts"] != self.num_prompts:
            raise ValueError(
                f"The checkpoint was written with {state['num_prompts']} prompts, this run has {self.num_prompts}; "
                "resume with the same prompt set."
            )
        self.epoch, self.position = state["epoch"], state["position"]
