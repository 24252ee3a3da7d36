"""`Trainer`: collect → learn → sync, validate, checkpoint, log. `agent_rl.train(config)` runs it.

One step, top to bottom (`Trainer.step`):
    tasks = next `train_batch_size` tasks (seeded order, epoch by epoch)
    batch = collector.collect(tasks, num_repeat)          # agent-env episodes against the engine
    metrics = learner.train_step(batch.samples)           # GRPO on DeepSpeed
    sync the engine's weights with the learner's
    every `test_freq` steps: validation accuracy and pass@k; every `save_freq`: a checkpoint
Everything lands in the run directory (`launcher_record/{config file stem}/`): `config.yaml`,
`metrics.jsonl`, TensorBoard events, a W&B run (`agent_rl.metric_sinks`), `trajectories/step_N.jsonl`,
`checkpoints/step_N/`.

Several processes (`torchrun`, see `agent_rl.distributed`): rank 0 collects and broadcasts the samples, every rank
trains on them, rank 0 syncs the engine and writes the run directory. With `trainer_common.max_staleness: 1`
the next batch is collected while this one trains (`agent_rl.overlap`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent_env.config import AgentRLConfig, dump_resolved
from agent_env.from_config import tasks_from_config
from agent_env.types import Task

from agent_rl.distributed import Ranks, drain, join_process_group, launch_mismatch, resolve_engine_gpus
from agent_rl.metric_sinks import MetricSinks, check_sinks_installed, cold_start_line, progress_line

logger = logging.getLogger("agent_rl")

TRAINER_STATE = "trainer_state.json"


class RunDirectoryExists(RuntimeError):
    """The run directory holds an earlier run and `resume` was not asked for."""


class Trainer:
    """GRPO training of the config's agent. Build it, then call `fit()`; `step()` runs one step."""

    def __init__(self, config: AgentRLConfig, run_dir: str | Path, *, resume: bool = False, max_steps: int | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        ajet = config.ajet
        check_sinks_installed(ajet.trainer_common)  # a missing `wandb` fails now, not after the model has loaded
        self.seed = ajet.trainer_common.seed
        self.ranks: Ranks = join_process_group()
        self._engine_gpus = self._placement()
        self._prepare_run_dir(resume)
        self.train_tasks: Sequence[Task] = tasks_from_config(config, "train")
        self.val_tasks: Sequence[Task] | None = tasks_from_config(config, "validation")
        if not self.train_tasks:
            raise ValueError("The training split has no tasks; check ajet.task_reader.")
        self.batch_size = min(ajet.data.train_batch_size, len(self.train_tasks))
        steps_per_epoch = math.ceil(len(self.train_tasks) / self.batch_size)
        planned = ajet.trainer_common.total_training_steps or steps_per_epoch * ajet.trainer_common.total_epochs
        self.total_steps = min(planned, max_steps) if max_steps else planned
        self.step_index = 0
        self.epoch = 0
        self.position = 0
        self._order: list[int] = []
        self.loop = asyncio.new_event_loop()
        self.learner = self._build_learner()
        self.engine, self.shares_weights = self._build_engine()
        self.collector = None  # rank 0 only
        if self.ranks.is_main:
            from agent_rl.rollout.from_config import build_collector

            self.collector = build_collector(config, self.engine, self.engine.tokenizer if hasattr(self.engine, "tokenizer") else self._tokenizer())
        self._background = None  # the next batch's collection while this one trains (max_staleness 1, rank 0)
        if ajet.trainer_common.max_staleness > 0 and self.ranks.is_main:
            from agent_rl.overlap import BackgroundRollout

            self._background = BackgroundRollout()
        self._ready: tuple[Any, dict[str, float], int] | None = None  # a batch collected ahead: (batch, metrics, weights version)
        self._resume_state: dict[str, Any] | None = None  # the task-order state before the batch collected ahead
        self.sinks = MetricSinks(self.run_dir, config) if self.ranks.is_main else None  # metrics.jsonl, TensorBoard, W&B
        if resume:
            self._resume()
        random.seed(self.seed)

    # ------------------------------------------------------------------ the loop

    def fit(self) -> dict[str, float]:
        """Train until `total_steps`; Ctrl-C saves a checkpoint and returns. Returns the last step's metrics."""
        common = self.config.ajet.trainer_common
        last: dict[str, float] = {}
        started = time.perf_counter()
        first_step = self.step_index
        interrupted = False
        previous = _stop_on_sigterm()
        try:
            if self.step_index == 0:
                self._before_first_step()
            while self.step_index < self.total_steps:
                last = self.step()
                done = self.step_index - first_step
                eta = (time.perf_counter() - started) / done * (self.total_steps - self.step_index)
                if self.ranks.is_main:
                    print(progress_line(self.step_index, self.total_steps, last, eta), flush=True)
                if common.save_freq > 0 and self.step_index % common.save_freq == 0:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            interrupted = True
            print(f"\ninterrupted at step {self.step_index}: saving a checkpoint", flush=True)
        except Exception:
            if self.sinks is not None:
                self.sinks.close(failed=True)  # the W&B run ends as failed; metrics.jsonl keeps every step logged
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        if interrupted or common.save_freq <= 0 or self.step_index % common.save_freq != 0:
            self.save_checkpoint()
        self._finish_outputs()
        return last

    def _before_first_step(self) -> None:
        """The cold start (`ajet.cold_start`, with a validation before it) and the validation before training
        (`val_before_train`), logged together as step 0."""
        common = self.config.ajet.trainer_common
        validate = common.val_before_train and self.val_tasks and self.ranks.is_main
        metrics: dict[str, float] = {}
        if self.config.ajet.cold_start.policy is not None:
            from agent_rl.cold_start import run_cold_start

            if validate:  # what the cold start changed: the same validation before it, as `before_cold_start/val/*`
                print(f"validating on {len(self.val_tasks)} tasks before the cold start", flush=True)
                before = self._validate()
                print(f"before the cold start | val acc {before['val/accuracy']:.3f} | "
                      f"val tool calls {before['val/tool_call_rate']:.2f}", flush=True)
                metrics = {f"before_cold_start/{key}": value for key, value in before.items()}
            metrics |= run_cold_start(self)
            if self.ranks.is_main:
                print(cold_start_line(metrics), flush=True)
        if validate:
            print(f"validating on {len(self.val_tasks)} tasks before training", flush=True)
            metrics |= self._validate()
            print(f"step 0/{self.total_steps} | val acc {metrics['val/accuracy']:.3f} | "
                  f"val tool calls {metrics['val/tool_call_rate']:.2f}", flush=True)
        if metrics:
            self._log(metrics, step=0)

    def step(self) -> dict[str, float]:
        """One training step: collect, learn, sync, and (every `test_freq`) validate. Returns its metrics (every
        rank gets the learner's; the rollout and validation metrics are rank 0's)."""
        ajet = self.config.ajet
        step_started = time.perf_counter()
        samples, metrics = self._training_samples()
        learn_started = time.perf_counter()
        if samples:
            metrics.update(self.learner.train_step(samples))
        metrics["timing/learn_s"] = time.perf_counter() - learn_started
        if self._background is not None and self._background.in_flight:
            # the engine is updated only between collections: wait for the next batch before loading new weights
            (batch, batch_metrics), version, waited = self._background.wait()
            self._ready = (batch, batch_metrics, version)
            metrics["timing/rollout_wait_s"] += waited
        sync_started = time.perf_counter()
        self._sync_weights()
        metrics["timing/sync_s"] = time.perf_counter() - sync_started
        self.step_index += 1
        test_freq = ajet.trainer_common.test_freq
        if self.val_tasks and test_freq > 0 and self.step_index % test_freq == 0 and self.ranks.is_main:
            metrics.update(self._validate())
        metrics["timing/step_s"] = time.perf_counter() - step_started
        metrics["tokens/per_s"] = metrics.get("tokens/generated", 0.0) / metrics["timing/step_s"]
        metrics["epoch"] = float(self.epoch)
        self._log(metrics, step=self.step_index)
        return metrics

    def _training_samples(self) -> tuple[list[Any], dict[str, float]]:
        """This step's samples on every rank, and (rank 0) their rollout metrics: `rollout/staleness` (training
        steps between the weights that sampled the batch and those about to train on it) and
        `timing/rollout_wait_s` (seconds this step waited for collection). Rank 0 collects now, or takes the
        batch collected during the previous step, and with `max_staleness: 1` starts the next one."""
        if not self.ranks.is_main:
            return self.ranks.broadcast(None), {}
        number = self.step_index + 1
        if self._ready is None:  # nothing collected ahead: collect now, with the weights the engine holds
            started = time.perf_counter()
            batch, metrics = self._collect_training_batch(number)
            version, waited = self.step_index, time.perf_counter() - started
        else:
            (batch, metrics, version), waited = self._ready, 0.0
            self._ready, self._resume_state = None, None
        metrics["rollout/staleness"] = float(self.step_index - version)
        metrics["timing/rollout_wait_s"] = waited
        if self._background is not None and number < self.total_steps:
            self._resume_state = self._order_state()  # a checkpoint taken now must not skip the next batch's tasks
            self._background.start(lambda: self._collect_training_batch(number + 1), weights_version=self.step_index)
        return self.ranks.broadcast(list(batch.samples)), metrics

    def _collect_training_batch(self, number: int) -> tuple[Any, dict[str, float]]:
        """Step `number`'s episodes and their metrics. With `data.filter_zero_variance_groups`, groups whose rewards
        are all equal are dropped and more tasks are collected (at most `data.max_oversampling_rounds` more
        rounds) until `train_batch_size` groups are kept; the batch returned holds the kept episodes, while the
        rollout metrics cover every episode collected. Every sample goes to `trajectories/step_N.jsonl`."""
        from agent_rl.rollout.collector import RolloutBatch
        from agent_rl.rollout.trajectories import write_trajectories

        ajet = self.config.ajet
        num_repeat = ajet.rollout.num_repeat
        seed = self.seed * 100_003 + number - 1
        batch = self.loop.run_until_complete(self.collector.collect(self._next_tasks(self.batch_size), num_repeat, seed=seed))
        collected = RolloutBatch(list(batch.episodes), batch.elapsed_s)
        filter_metrics: dict[str, float] = {}
        if ajet.data.filter_zero_variance_groups:
            spread = _groups_with_reward_spread(collected.episodes)
            rounds = 0
            while len(spread) < self.batch_size and rounds < ajet.data.max_oversampling_rounds:
                rounds += 1
                more = self.loop.run_until_complete(self.collector.collect(
                    self._next_tasks(self.batch_size - len(spread)), num_repeat, seed=seed + 7_919 * rounds,
                    first_index=len(collected.episodes) // num_repeat))
                collected.episodes.extend(more.episodes)
                collected.elapsed_s += more.elapsed_s
                spread = _groups_with_reward_spread(collected.episodes)
            kept = set(spread[: self.batch_size])
            batch = RolloutBatch([e for e in collected.episodes if e.group_id in kept], collected.elapsed_s)
            groups = len({e.group_id for e in collected.episodes})
            filter_metrics = {"rollout/oversampling_rounds": float(rounds), "rollout/kept_groups": float(len(kept)),
                              "rollout/dropped_zero_variance_groups": float(groups - len(spread))}
        write_trajectories(self.run_dir / "trajectories" / f"step_{number}.jsonl", collected.samples)
        metrics = collected.metrics()
        metrics.update(filter_metrics)
        return batch, metrics

    # ------------------------------------------------------------------ validation

    def _validate(self) -> dict[str, float]:
        from agent_env.evaluation import pass_at_k

        from agent_rl.engines.base import SamplingParams

        val = self.config.ajet.rollout.val_kwargs
        started = time.perf_counter()
        sampling = SamplingParams(temperature=val.temperature, top_p=val.top_p, top_k=val.top_k,
                                  max_tokens=self.config.ajet.rollout.max_response_length_in_one_turn)
        batch = self.loop.run_until_complete(self.collector.collect(list(self.val_tasks), val.num_repeat, seed=self.seed, sampling=sampling))
        by_task: dict[str, list[bool]] = {}
        for episode in batch.episodes:
            by_task.setdefault(episode.group_id, []).append(episode.is_success)
        rollout = batch.metrics()
        metrics = {
            "val/accuracy": rollout["reward/success_rate"],
            "val/reward_mean": rollout["reward/mean"],
            "val/turns_mean": rollout["rollout/turns_mean"],
            "val/tool_call_rate": rollout["rollout/tool_call_rate"],
            "val/tool_ran_rate": rollout["rollout/tool_ran_rate"],
            "timing/validation_s": time.perf_counter() - started,
        }
        if val.num_repeat > 1:
            metrics[f"val/pass@{val.num_repeat}"] = sum(
                pass_at_k(len(s), sum(s), val.num_repeat) for s in by_task.values()) / max(1, len(by_task))
        return metrics

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> Path:
        """`checkpoints/step_N/`: the model in Hugging Face format, optimizer and scheduler, and the trainer's state."""
        directory = self.run_dir / "checkpoints" / f"step_{self.step_index}"
        self.learner.save_checkpoint(directory)  # a collective: every rank
        if self.ranks.is_main:
            # a batch collected ahead (max_staleness 1) is not saved: a resumed run collects it again
            state = {"step": self.step_index, **(self._resume_state or self._order_state())}
            tmp = directory / f".{TRAINER_STATE}.tmp"
            tmp.write_text(json.dumps(state))
            os.replace(tmp, directory / TRAINER_STATE)
        return directory

    def _order_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "order": list(self._order),
                "python_random": _encode_random_state(random.getstate())}

    def _resume(self) -> None:
        checkpoints = sorted((self.run_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
        checkpoints = [c for c in checkpoints if (c / TRAINER_STATE).exists()]
        if not checkpoints:
            print(f"resume: no checkpoint in {self.run_dir / 'checkpoints'}; starting from step 0", flush=True)
            return
        latest = checkpoints[-1]
        self.learner.load_checkpoint(latest)
        state = json.loads((latest / TRAINER_STATE).read_text())
        self.step_index, self.epoch, self.position, self._order = state["step"], state["epoch"], state["position"], state["order"]
        random.setstate(_decode_random_state(state["python_random"]))
        self._sync_weights()
        print(f"resume: continuing from {latest} (step {self.step_index})", flush=True)

    # ------------------------------------------------------------------ plumbing

    def _prepare_run_dir(self, resume: bool) -> None:
        """Rank 0 checks and creates the run directory; every rank gets its verdict."""
        problem = None
        if self.ranks.is_main:
            if self.run_dir.exists() and any(self.run_dir.iterdir()) and not resume:
                problem = (f"{self.run_dir} already holds a run. Continue it with `--resume`, or start afresh by removing "
                           f"that directory (or set ajet.experiment_name / use another config file name).")
            else:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                dump_resolved(self.config, self.run_dir / "config.yaml")
        problem = self.ranks.broadcast(problem)
        if problem is not None:
            raise RunDirectoryExists(problem)

    def _placement(self) -> list[int] | None:
        """The engine's GPUs when `rollout.placement` is `separate` (checked on every rank), else None; rank 0
        notes a launch with fewer processes than `trainer_common` asks for."""
        import torch

        rollout, common = self.config.ajet.rollout, self.config.ajet.trainer_common
        gpus = None
        if rollout.placement == "separate":
            gpus = resolve_engine_gpus(rollout.engine_gpus, self.ranks, torch.cuda.device_count())
        note = launch_mismatch(common.n_gpus_per_node, common.nnodes, self.ranks, len(gpus or []))
        if note and self.ranks.is_main and torch.cuda.is_available():
            logger.warning(note)
        return gpus

    def _next_tasks(self, count: int) -> list[Task]:
        """The next `count` training tasks in this run's seeded order (a new shuffle each epoch)."""
        tasks = []
        while len(tasks) < count:
            if not self._order or self.position >= len(self._order):
                if self._order:
                    self.epoch += 1
                self._order = list(range(len(self.train_tasks)))
                random.Random(self.seed * 7919 + self.epoch).shuffle(self._order)
                self.position = 0
            tasks.append(self.train_tasks[self._order[self.position]])
            self.position += 1
        return tasks

    def _build_learner(self) -> Any:
        from agent_rl.learner import Learner, LearnerConfig

        ajet = self.config.ajet
        updates = {"temperature": ajet.rollout.temperature}
        if "total_steps" not in ajet.learner.model_fields_set:
            updates["total_steps"] = self.total_steps * ajet.learner.mini_batches * ajet.learner.num_iterations
        if "seed" not in ajet.learner.model_fields_set:
            updates["seed"] = self.seed
        return Learner(ajet.model.path, LearnerConfig.model_validate({**ajet.learner.model_dump(), **updates}))

    def _build_engine(self) -> tuple[Any, bool]:
        """Rank 0's rollout engine (other ranks have none) and whether it shares the learner's module: vLLM on a
        GPU (when installed), else the HF engine, which generates with the learner's own module when it can (one
        rank, ZeRO < 3, colocated, no staleness, no `rollout.engine_process`) and with a copy of its own otherwise."""
        import torch

        if not self.ranks.is_main:
            return None, False
        choice = getattr(self.config.ajet.rollout, "engine", "auto")
        if choice == "auto":
            try:
                import vllm  # noqa: F401

                choice = "vllm" if torch.cuda.is_available() else "hf"
            except ImportError:
                choice = "hf"
        rollout = self.config.ajet.rollout
        if choice == "vllm":
            separate = self._engine_gpus is not None
            engine = self._new_engine("agent_rl.engines.vllm:VLLMEngine", gpu_memory_utilization=rollout.gpu_memory_utilization,
                                      max_model_len=rollout.max_model_len, max_num_seqs=rollout.max_num_seqs, seed=self.seed,
                                      weight_sync="nccl" if separate else "ipc", devices=self._engine_gpus,
                                      enable_sleep_mode=not separate)
            return engine, False
        own_copy = (self.learner.config.zero_stage == 3 or self.learner.world_size > 1 or self._engine_gpus is not None
                    or self.config.ajet.trainer_common.max_staleness > 0 or rollout.engine_process)
        if not own_copy:
            from agent_rl.engines.hf import HFEngine

            return HFEngine(self.learner.module, self._tokenizer(), seed=self.seed, max_model_len=rollout.max_model_len), True
        device = f"cuda:{self._engine_gpus[0]}" if self._engine_gpus is not None else None
        engine = self._new_engine("agent_rl.engines.hf:HFEngine", device=device, seed=self.seed,
                                  max_model_len=rollout.max_model_len)
        return engine, False

    def _new_engine(self, engine: str, **kwargs: Any) -> Any:
        """The engine class `engine` names, on the run's model: here, or in a process of its own with
        `rollout.engine_process` (`EngineProcess`)."""
        from agent_env.loading import load_object

        if self.config.ajet.rollout.engine_process:
            from agent_rl.engines.process import EngineProcess

            return EngineProcess(engine, model=self.config.ajet.model.path, **kwargs)
        return load_object(engine)(self.config.ajet.model.path, **kwargs)

    def _sync_weights(self) -> None:
        if self.shares_weights:
            return  # the HF engine generates with the learner's own module
        if not self.ranks.is_main:
            drain(self.learner.named_weights())  # ZeRO-3 gathers are collectives: take part, keep nothing
            return
        self.loop.run_until_complete(self.engine.update_weights(self.learner.named_weights()))

    def _tokenizer(self) -> Any:
        if not hasattr(self, "_tokenizer_cache"):
            from transformers import AutoTokenizer

            from agent_rl.embedded_model import resolve_model_path

            self._tokenizer_cache = AutoTokenizer.from_pretrained(resolve_model_path(self.config.ajet.model.path))
        return self._tokenizer_cache

    def _log(self, metrics: dict[str, float], step: int) -> None:
        if self.sinks is not None:
            self.sinks.log(metrics, step)

    def _finish_outputs(self) -> None:
        if self.sinks is None:
            return
        self.sinks.close()
        try:
            from agent_cli.plots import write_plots
        except ImportError:
            return
        try:
            write_plots(self.run_dir)
        except Exception as error:  # noqa: BLE001 - plots are a convenience; the run's data is already saved
            logger.warning("could not draw plots: %s", error)

    def close(self) -> None:
        """Finish the metric sinks (the W&B run) unless `fit` did, then stop the collection, the collector and the engine."""
        if self.sinks is not None:
            self.sinks.close()
        if self._background is not None:
            self._background.close()
        if self.collector is not None:
            self.collector.close()
        if self.engine is not None:
            self.engine.close()
        self.loop.close()


def train(config: AgentRLConfig | str | Path, run_dir: str | Path | None = None, *, resume: bool = False,
          max_steps: int | None = None) -> dict[str, float]:
    """Train the agent a config (or a YAML file of one) describes; results in `run_dir` (default
    `launcher_record/{config file stem}`). Returns the last step's metrics."""
    if isinstance(config, str | Path):
        from agent_env.config import load_config

        config = load_config(config)
    if run_dir is None:
        run_dir = Path("launcher_record") / config.run_name()
    trainer = Trainer(config, run_dir, resume=resume, max_steps=max_steps)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def _groups_with_reward_spread(episodes: Sequence[Any]) -> list[str]:
    """`group_id`s, in first-seen order, whose episodes did not all get the same reward (failed episodes,
    which give no samples, do not count)."""
    rewards: dict[str, set[float]] = {}
    for episode in episodes:
        if episode.error is None:
            rewards.setdefault(episode.group_id, set()).add(episode.reward)
    return [group for group, values in rewards.items() if len(values) > 1]


def _stop_on_sigterm() -> Any:
    """Make SIGTERM (e.g. a job scheduler's stop) behave like Ctrl-C: checkpoint, then exit. Returns the old handler."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _encode_random_state(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _decode_random_state(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


__all__ = ["RunDirectoryExists", "Trainer", "train"]
