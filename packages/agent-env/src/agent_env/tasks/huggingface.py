"""`HuggingFaceTasks`: tasks from a dataset loaded with `datasets.load_dataset` (the YAML's `huggingface_dat_repo`)."""

from __future__ import annotations

import os
from pathlib import Path

from agent_env.tasks.files import FileTasks
from agent_env.tasks.rows import FieldMap, TaskSourceError, row_to_task
from agent_env.tasks.task_list import TaskList

KNOWN_DATASETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "gsm8k": ("openai/gsm8k", ("main", "socratic")),
    "openai/gsm8k": ("openai/gsm8k", ("main", "socratic")),
}
"""Short or legacy name → (hub id, its configs; the first is the default). ``gsm8k`` is the hub's old name
of ``openai/gsm8k``; both need a config (``main`` or ``socratic``)."""

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def resolve_dataset(dataset_path: str, config_name: str | None = None) -> tuple[str, str | None]:
    """``(path, config)`` to pass to `datasets.load_dataset` for a `dataset_path` as users write it.

    - an existing local file or folder: unchanged;
    - a known name (`KNOWN_DATASETS`): its hub id, with `config_name` or the default config
      (``openai/gsm8k`` → ``("openai/gsm8k", "main")``);
    - ``"{known name}/{config}"`` (the tutorial's ``gsm8k/main``): the hub id and that config;
    - anything else: unchanged (a hub id such as ``org/name``).
    """
    if Path(dataset_path).exists():
        return dataset_path, config_name
    known = KNOWN_DATASETS.get(dataset_path)
    if known is not None:
        return known[0], config_name or known[1][0]
    head, _, tail = dataset_path.rpartition("/")
    known = KNOWN_DATASETS.get(head)
    if known is not None and tail in known[1]:
        if config_name is not None and config_name != tail:
            raise TaskSourceError(
                f"dataset_path {dataset_path!r} names config {tail!r} but config_name is {config_name!r}; give one."
            )
        return known[0], tail
    return dataset_path, config_name


class HuggingFaceTasks(TaskList):
    """All tasks of one split of a dataset, loaded with `datasets.load_dataset` when constructed.

    Rows become tasks by `row_to_task` (``main_query`` from `query_field`, ``metadata`` = the row with
    ``metadata["answer"]`` from `answer_field`, ``task_id`` = `id_field` or ``"{name}-{split}-{index}"``).
    `dataset_path` is resolved by `resolve_dataset`, so ``openai/gsm8k``, ``gsm8k`` and ``gsm8k/main`` all
    give GSM8K's ``main`` config; a local data file goes to `FileTasks` (the split is then ignored) and a local
    folder to ``load_dataset``. A dataset already in the local cache loads without network. When the hub is
    unreachable (or ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` is set) `TaskSourceError` says so and names
    the alternatives: a local file or the built-in ``arithmetic`` tasks.

    Args:
        dataset_path: hub id, known short name, ``name/config``, or a local file or folder.
        split: the split to load (the tutorial's ``training_split``/``validation_split``).
        config_name: the dataset config (``main`` for GSM8K); see `resolve_dataset`.
        query_field, answer_field, id_field: the field mapping (see `FieldMap`).
        n: keep only the first `n` rows.
        system_prompt: if given, ``init_messages`` starts with it as a system message.
        revision: a hub revision (branch, tag or commit) to pin.
    """

    def __init__(
        self,
        dataset_path: str,
        split: str = "train",
        *,
        config_name: str | None = None,
        query_field: str = "question",
        answer_field: str | None = "answer",
        id_field: str | None = None,
        n: int | None = None,
        system_prompt: str | None = None,
        revision: str | None = None,
    ) -> None:
        path, config = resolve_dataset(dataset_path, config_name)
        self.path, self.config_name, self.split = path, config, split
        if Path(path).is_file():
            super().__init__(
                FileTasks(
                    path,
                    query_field=query_field,
                    answer_field=answer_field,
                    id_field=id_field,
                    n=n,
                    system_prompt=system_prompt,
                )
            )
            return
        dataset = _load(path, config, split, revision)
        if n is not None:
            dataset = dataset.select(range(min(n, len(dataset))))
        name = Path(path).name or path
        fields = FieldMap(query_field, answer_field, id_field)
        where = f"dataset {path!r} (config {config!r}, split {split!r})"
        super().__init__(
            [
                row_to_task(
                    row,
                    index=index,
                    where=f"{where} row {index + 1}",
                    fields=fields,
                    id_prefix=f"{name}-{split}",
                    env_type=name,
                    system_prompt=system_prompt,
                )
                for index, row in enumerate(dataset)
            ]
        )

    def __repr__(self) -> str:
        return f"HuggingFaceTasks({self.path!r}, {self.split!r}, config_name={self.config_name!r}, n={len(self)})"


def _load(path: str, config: str | None, split: str, revision: str | None):
    import datasets

    described = f"dataset {path!r} (config {config!r}, split {split!r})"
    alternatives = (
        "Use a local copy instead: task_reader `type: dataset_file` with "
        "`dataset_file: {training: {file_path: train.jsonl}}` (jsonl, json, parquet or csv; map columns with "
        "query_field/answer_field), or the built-in tasks: `type: arithmetic` (level easy, mix or hard)."
    )
    try:
        return datasets.load_dataset(path, config, split=split, revision=revision)
    except ConnectionError as error:
        offline = [
            name
            for name in OFFLINE_VARIABLES
            if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
        ]
        why = (
            f"offline mode is on ({', '.join(f'{name}=1' for name in offline)})"
            if offline
            else "the hub is unreachable"
        )
        raise TaskSourceError(
            f"Could not load {described} from the Hugging Face Hub: {why} ({error}), and it is not in the local "
            f"datasets cache. {alternatives}"
        ) from error
    except Exception as error:
        raise TaskSourceError(
            f"Could not load {described}: {type(error).__name__}: {error}. {alternatives}"
        ) from error
