"""`RunReader`: what the logview shows, read from a run directory (re-read as a run in progress writes it)."""

from __future__ import annotations

import json
import math
import re
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agent_cli.logview.turns import conversation_turns, episode_turns, number_turns, tool_counts

__all__ = ["RunReader", "UnknownEpisode", "UnknownStep"]

METRICS_FILE = "metrics.jsonl"
TRAJECTORIES_DIR = "trajectories"
CONFIG_FILE = "config.yaml"
_STEP_NUMBER = re.compile(r"(\d+)$")


class UnknownStep(KeyError):
    """No trajectory file of that name in the run."""


class UnknownEpisode(KeyError):
    """No episode of that id in the step."""


@dataclass(frozen=True)
class _Cached:
    stamp: tuple[int, int]  # (mtime_ns, size): a file rewritten in place is read again
    rows: list[dict[str, Any]]


class RunReader:
    """Reads `launcher_record/{exp}/` for the logview.

    The run directory holds `metrics.jsonl` (one JSON object per training step, with `step` and namespaced
    metric keys), `trajectories/<name>.jsonl` (one `TrainingSample` per line; `step_N` for training step N)
    and `config.yaml` (the resolved config; its `ajet.model.path` gives the tokenizer that turns token ids
    back into text). Every call re-reads what changed on disk, so a run in progress shows its new steps; a
    last line still being written is skipped until it is complete.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._cache: dict[Path, _Cached] = {}
        self._lock = threading.Lock()
        self._tokenizer: Any = None
        self._tokenizer_note: str | None = None
        self._tokenizer_loaded = False
        self._pieces: dict[int, str] = {}

    # ------------------------------------------------------------------ the run

    def summary(self) -> dict[str, Any]:
        """Name, path, model, the trajectory files (`steps`) and how many metric rows there are."""
        metrics = self.metrics()
        return {
            "name": self.run_dir.name,
            "path": str(self.run_dir.resolve()),
            "model": self.model_path(),
            "has_config": (self.run_dir / CONFIG_FILE).is_file(),
            "metric_rows": len(metrics),
            "metric_keys": _numeric_keys(metrics),
            "steps": [self._step_summary(name) for name in self.step_names()],
        }

    def model_path(self) -> str | None:
        """`ajet.model.path` of the run's resolved config, or None without one."""
        try:
            config = yaml.safe_load((self.run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            return None
        model = ((config or {}).get("ajet") or {}).get("model") or {}
        path = model.get("path") if isinstance(model, dict) else None
        return str(path) if path else None

    def metrics(self) -> list[dict[str, Any]]:
        """The rows of `metrics.jsonl` in file order (none when the file does not exist yet)."""
        return [_finite_or_none(row) for row in self._read_jsonl(self.run_dir / METRICS_FILE)]

    def step_names(self) -> list[str]:
        """Stems of `trajectories/*.jsonl`, ordered by the number they end with (`step_2` before `step_10`)."""
        directory = self.run_dir / TRAJECTORIES_DIR
        if not directory.is_dir():
            return []
        names = [path.stem for path in directory.glob("*.jsonl") if not path.name.startswith(".")]
        return sorted(names, key=_step_sort_key)

    # ------------------------------------------------------------------ a step and its groups

    def step(self, name: str) -> dict[str, Any]:
        """A step's groups (a task's `num_repeat` episodes), each with its episodes' rewards and ends."""
        samples = self._samples(name)
        episodes: dict[str, list[dict[str, Any]]] = {}
        for sample in samples:
            episodes.setdefault(str(sample.get("episode_id", "")), []).append(sample)
        groups: dict[str, list[dict[str, Any]]] = {}
        for episode_samples in episodes.values():
            episode = _episode_summary(episode_samples)
            groups.setdefault(episode["group_id"], []).append(episode)
        return {**self._step_summary(name), "groups": [_group_summary(gid, eps) for gid, eps in groups.items()]}

    def episode(self, name: str, episode_id: str) -> dict[str, Any]:
        """One episode: its summary, its final conversation as turns (see `turns.episode_turns`), and each
        sample's conversation and tokens.

        Tokens are `{"id", "text", "mask", "logprob", "turn"}` (prompt tokens have only `id` and `text`); `text` is
        the token decoded alone, or None when the run names no model whose tokenizer loads (`tokenizer_note` says
        why); `turn` is the turn the token belongs to (see `turns.number_turns`).
        """
        samples = sorted((s for s in self._samples(name) if s.get("episode_id") == episode_id),
                         key=lambda s: int(s.get("sample_index", 0)))
        if not samples:
            raise UnknownEpisode(episode_id)
        pieces = self._decode({i for s in samples for i in [*s.get("prompt_ids", []), *s.get("response_ids", [])]})
        numbers = number_turns(samples)
        detail = []
        for sample, turns in zip(samples, numbers, strict=True):
            prompt = [{"id": i, "text": pieces.get(i)} for i in sample.get("prompt_ids", [])]
            response = [
                {"id": i, "text": pieces.get(i), "mask": int(m), "logprob": _finite(lp), "turn": turn}
                for i, m, lp, turn in zip(sample.get("response_ids", []), sample.get("loss_mask", []), sample.get("logprobs", []),
                                          turns, strict=False)
            ]
            detail.append({
                "sample_index": int(sample.get("sample_index", 0)),
                "messages": sample.get("messages", []),
                "prompt_tokens": prompt,
                "response_tokens": response,
                "response_truncated": bool(sample.get("response_truncated", False)),
            })
        return {**_episode_summary(samples), **episode_turns(samples, numbers), "step": name, "samples": detail,
                "tokenizer_note": self._tokenizer_note}

    # ------------------------------------------------------------------ plumbing

    def _step_summary(self, name: str) -> dict[str, Any]:
        samples = self._samples(name)
        episodes = {str(s.get("episode_id")): s for s in samples}.values()
        rewards = [float(s.get("reward", 0.0)) for s in episodes]
        return {
            "name": name,
            "step": _step_number(name),
            "num_samples": len(samples),
            "num_episodes": len(rewards),
            "num_groups": len({s.get("group_id") for s in episodes}),
            "reward_mean": _mean(rewards),
            "success_rate": _mean([float(bool(s.get("is_success"))) for s in episodes]),
            "termination_reasons": dict(Counter(str(s.get("termination_reason") or "failed") for s in episodes)),
        }

    def _samples(self, name: str) -> list[dict[str, Any]]:
        if name not in self.step_names():
            raise UnknownStep(name)
        return self._read_jsonl(self.run_dir / TRAJECTORIES_DIR / f"{name}.jsonl")

    def _read_jsonl(self, path: Path) -> list[dict[str, Any]]:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return []
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached.stamp == stamp:
                return cached.rows
        rows = []
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line still being appended; it is read once complete
                if isinstance(row, dict):
                    rows.append(row)
        with self._lock:
            self._cache[path] = _Cached(stamp, rows)
        return rows

    def _decode(self, ids: set[int]) -> dict[int, str]:
        tokenizer = self._load_tokenizer()
        if tokenizer is None:
            return {}
        with self._lock:
            missing = sorted(ids - self._pieces.keys())
            if missing:
                for token_id, text in zip(missing, tokenizer.batch_decode([[i] for i in missing]), strict=True):
                    self._pieces[token_id] = text
            return {i: self._pieces[i] for i in ids}

    def _load_tokenizer(self) -> Any:
        with self._lock:
            if self._tokenizer_loaded:
                return self._tokenizer
            self._tokenizer_loaded = True
            model = self.model_path()
            if model is None:
                self._tokenizer_note = f"{self.run_dir / CONFIG_FILE} names no model (ajet.model.path); showing token ids."
                return None
            try:
                from agent_rl.embedded_model import resolve_model_path
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(model))
            except Exception as error:  # noqa: BLE001 - without a tokenizer the page still shows ids
                self._tokenizer_note = f"could not load the tokenizer of {model} ({type(error).__name__}: {error}); showing token ids."
            return self._tokenizer


def _episode_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    last = samples[-1]
    return {
        "episode_id": str(last.get("episode_id", "")),
        "group_id": str(last.get("group_id", "")),
        "task_id": str(last.get("task_id", "")),
        "reward": float(last.get("reward", 0.0)),
        "reward_components": dict(last.get("reward_components") or {}),
        "is_success": bool(last.get("is_success", False)),
        "termination_reason": str(last.get("termination_reason") or "failed"),
        "response_truncated": any(bool(s.get("response_truncated")) for s in samples),
        "num_turns": int(last.get("num_turns", 0)),
        "num_samples": len(samples),
        "response_tokens": sum(len(s.get("response_ids", [])) for s in samples),
        "trained_tokens": sum(sum(s.get("loss_mask", [])) for s in samples),
        "madness": list(last.get("madness") or []),
        "tools": tool_counts(conversation_turns(last.get("messages") or [])[1]),
    }


def _group_summary(group_id: str, episodes: list[dict[str, Any]]) -> dict[str, Any]:
    rewards = [e["reward"] for e in episodes]
    mean = _mean(rewards)
    std = math.sqrt(_mean([(r - mean) ** 2 for r in rewards]))
    return {
        "group_id": group_id,
        "task_id": episodes[0]["task_id"],
        "reward_mean": mean,
        "reward_std": std,
        "zero_variance": len(rewards) > 1 and std == 0.0,
        "successes": sum(e["is_success"] for e in episodes),
        "episodes": episodes,
    }


def _numeric_keys(rows: list[dict[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                keys.setdefault(key, None)
    return list(keys)


def _step_number(name: str) -> int | None:
    match = _STEP_NUMBER.search(name)
    return int(match.group(1)) if match else None


def _step_sort_key(name: str) -> tuple[str, int, str]:
    match = _STEP_NUMBER.search(name)
    if match is None:
        return (name, -1, name)
    return (name[: match.start()], int(match.group(1)), name)


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _finite_or_none(row: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinities become None (JSON has no spelling for them)."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
