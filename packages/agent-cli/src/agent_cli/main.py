"""`agent-rl`: train, evaluate, debug and inspect tool-using agents from one YAML config."""

from __future__ import annotations

import argparse
import difflib
import functools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent_env.config import AgentRLConfig, ConfigError, iter_keys, load_config

__all__ = ["build_parser", "main", "reference_document"]

REFERENCE_PATH = "docs/config.md"
"""Where `agent-rl config reference --write` puts the config reference in this repository."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `agent-rl` console script; returns the exit status.

    A problem the user must fix (a wrong config, reference, model path or data source) prints what to do and
    raises `SystemExit(2)`, as argparse does for a wrong flag.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:  # the light command serves envs; its own parser owns the flags
        from agent_env.cli import main as agent_env_main

        return agent_env_main(argv)
    if argv[:1] == ["eval"] and any(a == "--endpoint" or a.startswith("--endpoint=") for a in argv[1:]):
        from agent_env.cli import main as agent_env_main

        return agent_env_main(argv)
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except _user_errors() as error:  # the message says what to fix
        print(f"agent-rl {args.command}: {error}", file=sys.stderr)
        raise SystemExit(2) from None


# ---------------------------------------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    """The `agent-rl` argument parser; each subcommand's `run` default handles it."""
    parser = argparse.ArgumentParser(prog="agent-rl", description=__doc__,
                                     epilog="Every command that reads a config also takes dotted overrides after "
                                     "its flags, e.g. `ajet.rollout.temperature=0.5`; flags and overrides beat the YAML.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train the config's agent with GRPO (DeepSpeed learner)",
                                description="GRPO training; results, metrics, trajectories and checkpoints go to "
                                "launcher_record/{experiment}/.")
    _config_arguments(train)
    train.add_argument("--max-steps", type=int, metavar="N",
                       help="stop after at most N training steps, whatever ajet.trainer_common.total_training_steps and "
                       "total_epochs say")
    train.add_argument("--resume", action="store_true", help="continue the run in the run directory from its last checkpoint")
    train.add_argument("--with-ray", action="store_true",
                       help="run the episodes' env side (workflow, tools, judge) in Ray actors across the cluster; the engine "
                       "and learner stay here (sets ajet.rollout.ray.enabled; the cluster is ajet.rollout.ray.address)")
    _logview_arguments(train, "while training, serve the logview of the run (and keep serving after it, until Ctrl-C)")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser(
        "eval", help="evaluate a model on the config's tasks: accuracy and pass@k",
        description="Evaluate without training. With --endpoint, an OpenAI-compatible server is asked and the "
        "command is `agent-env eval` (see `agent-env eval --help` for its other flags). Without it, the model runs "
        "here with the HF engine and the rollout collector, sampling as ajet.rollout.val_kwargs says.")
    _config_arguments(evaluate)
    evaluate.add_argument("--endpoint", metavar="URL", help="base URL of an OpenAI-compatible API (delegates to `agent-env eval`)")
    evaluate.add_argument("--model", metavar="PATH", help="without --endpoint: the model to run here, a local Hugging Face "
                          "directory (e.g. a checkpoint), a hub id or embedded:NAME (sets ajet.model.path; default: the "
                          "config's); with --endpoint: the model name sent to it")
    evaluate.add_argument("-k", type=int, metavar="K", help=_key_help("ajet.rollout.val_kwargs.num_repeat"))
    evaluate.add_argument("--temperature", type=float, help=_key_help("ajet.rollout.val_kwargs.temperature"))
    evaluate.add_argument("--split", default="validation", help="task split (default: %(default)s)")
    evaluate.add_argument("--num-tasks", type=int, metavar="N", help="evaluate the first N tasks of the split only")
    evaluate.add_argument("--output", type=Path, metavar="PATH",
                          help="JSON report (default: launcher_record/{experiment}/eval_{split}.json)")
    evaluate.set_defaults(run=_eval)

    debug = commands.add_parser("debug", help="run a few tasks with the model and no training; print every episode",
                                description="The tutorial's debug step: a few tasks x ajet.rollout.num_repeat episodes "
                                "with the HF engine, in this process (breakpoints in your workflow.py are hit).")
    _config_arguments(debug)
    debug.add_argument("--num-tasks", type=int, metavar="N", help=_key_help("ajet.debug.num_tasks"))
    _logview_arguments(debug, "after the episodes, serve the logview of the run until Ctrl-C")
    debug.set_defaults(run=_debug)

    logview = commands.add_parser("logview", help="serve a local web page of a run: curves, episodes, tokens",
                                  description="Serve the logview of a run directory (works on a run in progress).")
    logview.add_argument("run_dir", type=Path, help="a run directory, e.g. launcher_record/math_agent")
    logview.add_argument("--port", type=int, default=None, help="port (default: 8765, or a free one when it is taken)")
    logview.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s; anything else "
                         "shows the run's prompts and outputs to every machine that reaches it)")
    logview.set_defaults(run=_logview)

    commands.add_parser("serve", help="serve registered envs over HTTP (same as `agent-env serve`)", add_help=False)

    config = commands.add_parser("config", help="show the resolved config, or the reference of every key")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="WHAT")
    show = config_commands.add_parser("show", help="print the resolved config (defaults filled in, overrides applied)")
    show.add_argument("path", help="the YAML config")
    show.add_argument("overrides", nargs="*", metavar="key.path=value", help="dotted overrides")
    show.set_defaults(run=_config_show)
    reference = config_commands.add_parser("reference", help="print every config key with its type, default and meaning")
    reference.add_argument("--write", type=Path, metavar="PATH", help=f"write it to PATH instead (this repository keeps it in {REFERENCE_PATH})")
    reference.set_defaults(run=_config_reference)
    return parser


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "--conf", required=True, metavar="YAML", help="the YAML config")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value",
                        help="dotted overrides, e.g. ajet.rollout.temperature=0.5 (values read as YAML)")


def _logview_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--with-logview", action="store_true", help=what)
    parser.add_argument("--port", type=int, default=None, help="logview port (default: 8765, or a free one when it is taken)")
    parser.add_argument("--host", default="127.0.0.1", help="logview address (default: %(default)s)")


def _key_help(path: str) -> str:
    """The schema's description of a key, with its path and default, escaped for argparse."""
    key = _schema_keys()[path]
    default = f"; default {key.default}" if key.default and key.default != "required" else ""
    return f"{key.description.rstrip('.')} ({path}{default}).".replace("%", "%%")


@functools.cache
def _schema_keys() -> dict[str, Any]:
    return {key.path: key for key in iter_keys(AgentRLConfig)}


# ---------------------------------------------------------------------------------------------- commands


def _train(args: argparse.Namespace) -> int:
    config = _load(args.config, [*args.overrides, *(["ajet.rollout.ray.enabled=true"] if args.with_ray else [])])
    _preflight(config, "train")
    _check_ray(config)
    try:
        from agent_cli.train import run_train
    except ModuleNotFoundError as error:
        if error.name != "agent_cli.train":
            raise
        raise CommandError("this install has no trainer (the module agent_cli.train is missing); reinstall agent-cli, "
                           "or run rollouts without training with `agent-rl debug`.") from None
    server = None
    if args.with_logview:
        from agent_cli.logview import start_logview

        run_dir = _train_run_dir(config)
        run_dir.mkdir(parents=True, exist_ok=True)
        server = start_logview(run_dir, args.host, _port(args.port))
        print(f"logview: {server.url}", flush=True)
    try:
        status = int(run_train(config, max_steps=args.max_steps, resume=args.resume) or 0)
        if server is not None and status == 0:
            print(f"logview still serving at {server.url}; Ctrl-C to stop.", flush=True)
            _wait_for_ctrl_c()
    finally:
        if server is not None:
            server.stop()
    return status


def _debug(args: argparse.Namespace) -> int:
    from agent_cli.debug import run_debug

    overrides = list(args.overrides) + ([f"ajet.debug.num_tasks={args.num_tasks}"] if args.num_tasks is not None else [])
    config = _load(args.config, overrides)
    _preflight(config, "train")
    _check_ray(config)
    trajectories = run_debug(config)
    if args.with_logview:
        from agent_cli.logview import serve_logview

        serve_logview(trajectories.parent.parent, args.host, _port(args.port),
                      announce=lambda url: print(f"\nlogview: {url}  (Ctrl-C to stop)", flush=True))
    return 0


def _logview(args: argparse.Namespace) -> int:
    from agent_cli.logview import serve_logview

    if not args.run_dir.is_dir():
        runs = sorted(p.name for p in Path("launcher_record").glob("*") if p.is_dir())
        close = difflib.get_close_matches(args.run_dir.name, runs, n=1)
        hint = (f" Did you mean launcher_record/{close[0]}?" if close else
                f" Runs here: {', '.join('launcher_record/' + r for r in runs)}." if runs else
                " Runs are written to launcher_record/{experiment}/ by `agent-rl train` and `agent-rl debug`.")
        raise CommandError(f"{args.run_dir} is not a directory.{hint}")
    serve_logview(args.run_dir, args.host, _port(args.port),
                  announce=lambda url: print(f"logview of {args.run_dir}: {url}  (Ctrl-C to stop)", flush=True))
    return 0


def _eval(args: argparse.Namespace) -> int:
    """Evaluate the model locally (HF engine + rollout collector); `--endpoint` never gets here (see `main`)."""
    import asyncio

    from agent_env.evaluation import EvalReport

    overrides = list(args.overrides)
    overrides += [f"ajet.model.path={args.model}"] if args.model is not None else []
    overrides += [f"ajet.rollout.val_kwargs.num_repeat={args.k}"] if args.k is not None else []
    overrides += [f"ajet.rollout.val_kwargs.temperature={args.temperature}"] if args.temperature is not None else []
    config = _load(args.config, overrides)
    tasks = _preflight(config, args.split)
    if args.num_tasks is not None:
        tasks = tasks[: args.num_tasks]
    from agent_rl.engines.base import SamplingParams
    from agent_rl.engines.hf import HFEngine
    from agent_rl.rollout.from_config import build_collector

    ajet = config.ajet
    val = ajet.rollout.val_kwargs
    sampling = SamplingParams(temperature=val.temperature, top_p=val.top_p, top_k=val.top_k,
                              max_tokens=ajet.rollout.max_response_length_in_one_turn)
    print(f"eval: {len(tasks)} {args.split} tasks x k={val.num_repeat} with {ajet.model.path} (HF engine, temperature "
          f"{val.temperature})", flush=True)
    engine = HFEngine(ajet.model.path, seed=ajet.trainer_common.seed)
    collector = None
    try:
        collector = build_collector(config, engine, engine.tokenizer)
        batch = asyncio.run(collector.collect(list(tasks), val.num_repeat, seed=ajet.trainer_common.seed, sampling=sampling))
    finally:
        engine.close()
        if collector is not None:
            collector.close()
    episodes = [_episode_result(record, index // val.num_repeat, index % val.num_repeat) for index, record in enumerate(batch.episodes)]
    metadata = {"config": str(config.config_path), "model": ajet.model.path, "engine": "hf", "split": args.split,
                "temperature": val.temperature, "top_p": val.top_p, "top_k": val.top_k,
                "max_tokens": ajet.rollout.max_response_length_in_one_turn}
    report = EvalReport.from_episodes(episodes, val.num_repeat, batch.elapsed_s, metadata)
    print(report.format_table())
    output = args.output or Path("launcher_record") / _experiment(config) / f"eval_{args.split}.json"
    print(f"report: {report.write_json(output)}")
    failed = [e for e in report.episodes if e.error]
    if failed:
        print(f"warning: {len(failed)} of {report.num_episodes} episodes failed ({failed[0].termination_reason}); see "
              f"'error' in {output}.", file=sys.stderr)
    return 1 if report.episodes and len(failed) == report.num_episodes else 0


def _config_show(args: argparse.Namespace) -> int:
    import yaml

    print(yaml.safe_dump(_load(args.path, args.overrides).to_yaml_dict(), sort_keys=False, allow_unicode=True), end="")
    return 0


def _config_reference(args: argparse.Namespace) -> int:
    text = reference_document()
    if args.write is None:
        print(text, end="")
        return 0
    args.write.parent.mkdir(parents=True, exist_ok=True)
    args.write.write_text(text, encoding="utf-8")
    print(f"wrote {args.write}")
    return 0


# ---------------------------------------------------------------------------------------------- the config reference


def reference_document() -> str:
    """The Markdown reference of every config key (docs/config.md), generated from the schema's descriptions."""
    from agent_env.config import AjetConfig

    lines = [
        "# Config reference",
        "",
        f"<!-- Generated from the config schema (packages/agent-env/src/agent_env/config/) by "
        f"`agent-rl config reference --write {REFERENCE_PATH}`; edit the schema's descriptions, not this file. -->",
        "",
        "Every key of an agent-rl YAML config, with its type, default and meaning. A config needs little more than",
        "`ajet.rollout.agentscope_workflow` (or `ajet.rollout.env_id`); everything else has a default.",
        "",
        "- Unknown keys are errors that name the nearest valid key; wrong types and cross-field conflicts are reported",
        "  with the key's path and what to set instead.",
        "- Flags and dotted overrides beat the YAML: `agent-rl train --config x.yaml ajet.rollout.temperature=0.5`.",
        "- `agent-rl config show x.yaml` prints the resolved config; every run also writes it to",
        "  `launcher_record/{experiment}/config.yaml`.",
        "- The tutorial's `hydra:`, `defaults:` and `trinity:` blocks, and keys marked *accepted, not used*, are read",
        "  and reported as unused; they never change a run.",
        "",
    ]
    keys = list(iter_keys(AgentRLConfig))
    sections: list[tuple[str, str, list[Any]]] = [("Top level", "The file's top-level blocks.", [k for k in keys if "." not in k.path])]
    ajet_fields = AjetConfig.model_fields
    sections.append(("ajet", AjetConfig.__doc__ or "", [k for k in keys if k.path.count(".") == 1 and not k.is_block]))
    for name, field in ajet_fields.items():
        prefix = f"ajet.{name}."
        block_keys = [k for k in keys if k.path.startswith(prefix)]
        if block_keys:
            sections.append((f"ajet.{name}", field.description or "", block_keys))
    for title, intro, section_keys in sections:
        if not section_keys:
            continue
        lines += [f"## `{title}`" if title != "Top level" else f"## {title}", "", intro.strip().splitlines()[0], "",
                  "| Key | Type | Default | Meaning |", "|---|---|---|---|"]
        for key in section_keys:
            meaning = key.description + (f" *Accepted, not used: {key.unused}.*" if key.unused else "")
            default = f"`{key.default}`" if key.default and key.default != "required" else key.default
            cells = [f"`{key.path}`", f"`{key.type}`", default, meaning]
            lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- plumbing


def _load(path: str, overrides: Sequence[str]) -> AgentRLConfig:
    """Load and validate; print the config's notices (unused keys, warnings) to stderr."""
    config = load_config(path, overrides)
    for notice in config.notices():
        print(f"note: {notice}", file=sys.stderr)
    return config


def _preflight(config: AgentRLConfig, split: str) -> Any:
    """Check, before any model loads, what a run needs: the model path, the workflow and judge references, and
    a non-empty task split. Returns the split's tasks."""
    from agent_env.from_config import env_factory_from_config

    _check_model_path(config)
    env_factory_from_config(config)  # resolves the workflow and judge references; raises LoadError naming the fix
    return _check_tasks(config, split)


def _check_ray(config: AgentRLConfig) -> None:
    """Episodes on Ray (`--with-ray`, `ajet.rollout.ray`) need the `ray` package; say how to get it."""
    import importlib.util

    if config.ajet.rollout.ray.enabled and importlib.util.find_spec("ray") is None:
        raise CommandError("--with-ray (ajet.rollout.ray.enabled) needs Ray, which is not installed: run `uv sync --extra ray` "
                           "(or `pip install 'agent-rl[ray]'`), or drop the flag to run every episode in this process.")


class CommandError(Exception):
    """A command cannot run as asked; the message says why and what to do."""


class ModelPathError(ValueError):
    """`ajet.model.path` names no model that can be loaded here."""


def _check_model_path(config: AgentRLConfig) -> None:
    """Fail early, with what to set, when `ajet.model.path` cannot be a model; note when it needs the Hub."""
    from agent_rl.embedded_model import EMBEDDED_PREFIX, SMOLLM2_NAME, TINY_RANDOM_NAME

    path = config.ajet.model.path
    fix = f"Set ajet.model.path to a local Hugging Face model directory or to {EMBEDDED_PREFIX}{SMOLLM2_NAME} (works offline)."
    if path.startswith(EMBEDDED_PREFIX):
        names = [SMOLLM2_NAME, TINY_RANDOM_NAME]
        name = path[len(EMBEDDED_PREFIX):]
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" Did you mean {EMBEDDED_PREFIX}{close[0]}?" if close else ""
            raise ModelPathError(f"ajet.model.path: {path!r} is not an embedded model.{hint} Embedded models: "
                                 f"{', '.join(EMBEDDED_PREFIX + n for n in names)}.")
        return
    local = Path(path).expanduser()
    looks_local = path.startswith(("/", "./", "../", "~")) or path.count("/") != 1 or local.exists()
    if looks_local:
        if not local.exists():
            raise ModelPathError(f"ajet.model.path: {path} does not exist (relative paths are read from {Path.cwd()}). {fix}")
        if not (local / "config.json").is_file():
            raise ModelPathError(f"ajet.model.path: {path} is not a Hugging Face model directory (it has no config.json). {fix}")
        return
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(path, "config.json"), str):
        print(f"note: ajet.model.path: {path} is not in the local Hugging Face cache; it will be downloaded from the Hub "
              f"(needs internet). Offline? {fix}", file=sys.stderr)


def _check_tasks(config: AgentRLConfig, split: str) -> Any:
    """The tasks of `split`; raises `EmptyTasksError` when the source has no such split or it is empty."""
    from agent_env.from_config import tasks_from_config

    tasks = tasks_from_config(config, split)
    reader = config.ajet.task_reader
    if tasks is None:
        raise EmptyTasksError(f"ajet.task_reader ({reader.type}) has no {split!r} split; configure it under "
                              f"ajet.task_reader.{reader.type}, or pick another split.")
    if len(tasks) == 0:
        raise EmptyTasksError(f"the {split!r} split of ajet.task_reader ({reader.type}) has no tasks; check the "
                              f"data source under ajet.task_reader.{reader.type} (path, split name, filters).")
    return tasks


class EmptyTasksError(ValueError):
    """The configured task source gives no tasks for the split a command needs."""


def _user_errors() -> tuple[type[Exception], ...]:
    import gymnasium as gym
    from agent_env.loading import LoadError
    from agent_env.service.client import EnvServiceError
    from agent_env.tasks import TaskSourceError

    return (ConfigError, LoadError, TaskSourceError, EnvServiceError, gym.error.NameNotFound, ModelPathError, EmptyTasksError,
            CommandError)


def _episode_result(record: Any, task_index: int, repeat_index: int) -> Any:
    """An `agent_env.evaluation.EpisodeResult` from a collector `EpisodeRecord`."""
    from agent_env.evaluation import EpisodeResult

    last = record.samples[-1] if record.samples else None
    messages = list(last.messages) if last is not None else []
    tool_calls = sum(len(m.get("tool_calls") or []) for m in messages if m.get("role") == "assistant")
    return EpisodeResult(
        task_index=task_index, task_id=record.task_id, repeat_index=repeat_index, reward=record.reward,
        is_success=record.is_success, turns=record.num_turns, tool_calls=tool_calls, tool_call_errors=record.tool_call_errors,
        termination_reason=record.termination_reason or ("policy_error" if record.error else "finished"),
        reward_components=dict(last.reward_components) if last is not None else {}, error=record.error, messages=messages,
    )


def _experiment(config: AgentRLConfig) -> str:
    if config.ajet.experiment_name:
        return config.ajet.experiment_name
    return Path(config.config_path).stem if config.config_path else config.ajet.project_name


def _train_run_dir(config: AgentRLConfig) -> Path:
    """The run directory `agent_cli.train.run_train` writes to."""
    from agent_cli.run_dir import run_directory

    return run_directory(config)


def _port(port: int | None) -> int:
    """The logview port: `--port`, else `DEFAULT_PORT` (which falls back to a free port when taken)."""
    from agent_cli.logview import DEFAULT_PORT

    return DEFAULT_PORT if port is None else port


def _wait_for_ctrl_c() -> None:
    import time

    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
