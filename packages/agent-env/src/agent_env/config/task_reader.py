"""`ajet.task_reader`: where the tasks come from (built-in arithmetic, Hugging Face datasets, files, an env service)."""

from __future__ import annotations

from pathlib import PurePath
from typing import Literal

from pydantic import Field

from agent_env.config.base import ConfigBlock

__all__ = [
    "ArithmeticReaderConfig",
    "DataFileConfig",
    "DatasetFileReaderConfig",
    "EnvServiceReaderConfig",
    "FieldMappingConfig",
    "HuggingFaceReaderConfig",
    "JsonlDatasetFileReaderConfig",
    "TaskReaderConfig",
    "TaskReaderType",
]

TaskReaderType = Literal[
    "arithmetic", "huggingface_dat_repo", "jsonl_dataset_file", "dataset_file", "env_service"
]
DataFileFormat = Literal["jsonl", "json", "parquet", "csv"]

_SUFFIX_FORMATS: dict[str, DataFileFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".csv": "csv",
}
# The tutorial writes `gsm8k/main` (dataset `gsm8k`, config `main`); the Hub id is `openai/gsm8k`.
_KNOWN_DATASET_PATHS: dict[str, tuple[str, str | None]] = {
    "gsm8k": ("openai/gsm8k", "main"),
    "gsm8k/main": ("openai/gsm8k", "main"),
    "gsm8k/socratic": ("openai/gsm8k", "socratic"),
    "openai/gsm8k": ("openai/gsm8k", "main"),
}


class FieldMappingConfig(ConfigBlock):
    """Which columns of a dataset row hold the question, the reference answer and the id."""

    query_field: str = Field(
        "question",
        description="Column holding the problem text; it becomes `Task.main_query`.",
    )
    answer_field: str = Field(
        "answer",
        description="Column holding the reference answer; it becomes `Task.metadata['answer']` for the judge.",
    )
    id_field: str | None = Field(
        None,
        description="Column holding a stable task id; null numbers the rows (`<split>-<row index>`).",
    )


class HuggingFaceReaderConfig(FieldMappingConfig):
    """A dataset read with `datasets.load_dataset` (a Hub id, a local dataset directory or a data file)."""

    dataset_path: str = Field(
        description=(
            "The dataset: a Hub id (`openai/gsm8k`), the tutorial's `gsm8k/main` (read as `openai/gsm8k`, "
            "config `main`), a local dataset directory or a data file. Relative paths are relative to the "
            "config file's directory. Without internet use a local copy (or task_reader.type `dataset_file`)."
        ),
    )
    dataset_name: str | None = Field(
        None,
        description="Dataset configuration (subset) name, e.g. `main` for GSM8K; null: the one implied by "
        "`dataset_path` if any, else the dataset's default.",
    )
    training_split: str = Field(
        "train",
        description="Split used for training; Hugging Face slicing works (`train[:1000]`).",
    )
    validation_split: str = Field(
        "test",
        description="Split used for validation (`ajet.trainer_common.test_freq`), e.g. `test` or `validation`.",
    )

    def load_dataset_args(self) -> tuple[str, str | None]:
        """`(path, name)` to pass to `datasets.load_dataset`, with the tutorial's `gsm8k/main` spelling resolved.

        An explicit `dataset_name` always wins; paths that are not known aliases pass through unchanged.
        """
        path, implied_name = _KNOWN_DATASET_PATHS.get(self.dataset_path.strip("/"), (self.dataset_path, None))
        return path, self.dataset_name if self.dataset_name is not None else implied_name


class DataFileConfig(ConfigBlock):
    """One local data file."""

    file_path: str = Field(
        description="Path to the file; relative paths are relative to the config file's directory.",
    )


class JsonlDatasetFileReaderConfig(FieldMappingConfig):
    """Local JSON-lines files, one task per line (AgentJet's `jsonl_dataset_file`)."""

    training: DataFileConfig = Field(description="The training file (`training: {file_path: ...}`).")
    validation: DataFileConfig | None = Field(
        None,
        description="The validation file; null: no validation set (validation runs are skipped).",
    )


class DatasetFileReaderConfig(JsonlDatasetFileReaderConfig):
    """Local data files in any of the formats `jsonl`, `json`, `parquet`, `csv`."""

    format: DataFileFormat | None = Field(
        None,
        description="File format, one of `jsonl`, `json`, `parquet`, `csv`; null: taken from the file "
        "suffix (`.jsonl`/`.ndjson`, `.json`, `.parquet`, `.csv`).",
    )

    def format_of(self, file_path: str) -> DataFileFormat | None:
        """The format to read `file_path` with: `format` if set, else the suffix's, else None (unknown)."""
        return self.format or _SUFFIX_FORMATS.get(PurePath(file_path).suffix.lower())


class ArithmeticReaderConfig(ConfigBlock):
    """The built-in, seeded arithmetic problems (no files, no network); `easy` and `mix` match the TRL anchor."""

    level: Literal["easy", "mix", "hard", "calculator"] = Field(
        "easy",
        description="Difficulty: `easy` = a ± b with 1 ≤ a, b ≤ 20; `mix` = two-digit a ± b and one-by-two-digit "
        "a × b; `hard` = three operands with parentheses, e.g. (a + b) × c; `calculator` = problems that need a "
        "tool: 3-4 digit products, sums of 4-digit numbers, powers, remainders (see `agent_env.tasks.arithmetic`).",
    )
    num_train: int = Field(4000, ge=1, description="Number of training problems.")
    num_validation: int = Field(256, ge=1, description="Number of held-out validation problems.")
    train_seed: int = Field(1, description="Seed of the training problems (the anchor's: 1).")
    validation_seed: int = Field(
        2,
        description="Seed of the validation problems (the anchor's: 2); keep it different from `train_seed`.",
    )


class EnvServiceReaderConfig(ConfigBlock):
    """Task ids fetched from a running environment service over HTTP."""

    env_url: str = Field("http://127.0.0.1:8080", description="Base URL of the environment service.")
    env_type: str = Field(description="Environment name the service serves, e.g. `appworld`.")
    training_split: str = Field("train", description="Split name whose task ids are used for training.")
    validation_split: str = Field("dev", description="Split name whose task ids are used for validation.")


class TaskReaderConfig(ConfigBlock):
    """Selects the task source with `type`; the sub-block of the same name configures it."""

    type: TaskReaderType = Field(
        "arithmetic",
        description="Task source: `arithmetic` (built-in, offline), `huggingface_dat_repo` (`datasets`), "
        "`jsonl_dataset_file` (JSON lines), `dataset_file` (jsonl/json/parquet/csv) or `env_service` (HTTP). "
        "The sub-block of the same name configures it.",
    )
    arithmetic: ArithmeticReaderConfig = Field(
        default_factory=ArithmeticReaderConfig,
        description="Settings of the `arithmetic` source (all keys have defaults).",
    )
    huggingface_dat_repo: HuggingFaceReaderConfig | None = Field(
        None, description="Settings of the `huggingface_dat_repo` source; needs `dataset_path`."
    )
    jsonl_dataset_file: JsonlDatasetFileReaderConfig | None = Field(
        None, description="Settings of the `jsonl_dataset_file` source; needs `training.file_path`."
    )
    dataset_file: DatasetFileReaderConfig | None = Field(
        None, description="Settings of the `dataset_file` source; needs `training.file_path`."
    )
    env_service: EnvServiceReaderConfig | None = Field(
        None, description="Settings of the `env_service` source; needs `env_type`."
    )

    @property
    def source(self) -> ConfigBlock:
        """The sub-block of the chosen `type` (present in any validated `AjetConfig`)."""
        block = getattr(self, self.type)
        if block is None:
            raise ValueError(
                f"ajet.task_reader.type is `{self.type}` but `ajet.task_reader.{self.type}` is not set."
            )
        return block


MISSING_SOURCE_EXAMPLES: dict[str, str] = {
    "huggingface_dat_repo": "huggingface_dat_repo:\n      dataset_path: openai/gsm8k",
    "jsonl_dataset_file": "jsonl_dataset_file:\n      training:\n        file_path: train.jsonl",
    "dataset_file": "dataset_file:\n      training:\n        file_path: train.parquet",
    "env_service": "env_service:\n      env_type: appworld\n      env_url: http://127.0.0.1:8080",
}
"""For each source needing settings: the smallest sub-block to add under `ajet.task_reader` (YAML)."""
