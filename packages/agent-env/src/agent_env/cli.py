"""The `agent-env` command (no torch): `serve` an env over HTTP, `eval` a model endpoint, `demo`, `list` env ids."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent_env.types import Task

EnvFactory = Callable[[], Any]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `agent-env` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        from agent_env.demo import main as demo_main

        return demo_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 2
    try:
        return args.run(args)
    except _user_errors() as error:  # a wrong config, id, reference or data source: the message says what to fix
        print(f"agent-env {args.command}: {error}", file=sys.stderr)
        return 2


def _user_errors() -> tuple[type[Exception], ...]:
    import gymnasium as gym

    from agent_env.config import ConfigError
    from agent_env.loading import LoadError
    from agent_env.service.client import EnvServiceError
    from agent_env.tasks import TaskSourceError

    return ConfigError, LoadError, TaskSourceError, EnvServiceError, gym.error.NameNotFound


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-env", description="Gymnasium envs for tool-using LLM agents: serve, evaluate, try.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve registered envs over HTTP (EnvService)",
                                description="Serve registered envs over HTTP; clients use agent_env.service.RemoteAgentEnv.")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, loopback only; "
                       "anything else lets every machine that reaches it run the envs' code)")
    serve.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
    serve.add_argument("--env", nargs="+", action="extend", metavar="ID", dest="env_ids",
                       help="serve only these env ids (default: every registered id)")
    serve.add_argument("--max-sessions", type=int, default=1024, help="most sessions open at once (default: %(default)s)")
    serve.add_argument("--idle-timeout-s", type=float, default=600.0,
                       help="release a session after this many seconds without a call (default: %(default)s)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(run=_serve)

    evaluate = commands.add_parser("eval", help="evaluate an OpenAI-compatible endpoint on an env (accuracy, pass@k)",
                                   description="Run the env over a split, k episodes per task, against an OpenAI-compatible "
                                   "chat endpoint; print accuracy, pass@k, mean reward, mean turns and tool-call error rate.")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="a run's YAML config: its agent (ajet.rollout) and tasks (ajet.task_reader)")
    source.add_argument("--env", dest="env_id", metavar="ID", help="a registered env id, with its own tasks")
    evaluate.add_argument("--env-kwargs", type=_json_object, default={}, metavar="JSON",
                          help="keyword arguments of the env, as a JSON object (with --env)")
    evaluate.add_argument("--endpoint", required=True, metavar="URL", help="base URL of the API, e.g. http://127.0.0.1:8000/v1")
    evaluate.add_argument("--model", help="model name sent to the endpoint (default: the first one it lists)")
    evaluate.add_argument("--api-key", help="API key (default: $OPENAI_API_KEY, else 'EMPTY')")
    evaluate.add_argument("--split", default="validation", help="task split (default: %(default)s)")
    evaluate.add_argument("-k", type=int, help="episodes per task; pass@k up to k (default: the config's "
                          "ajet.rollout.val_kwargs.num_repeat, else 1)")
    evaluate.add_argument("--num-tasks", type=int, metavar="N", help="evaluate the first N tasks of the split only")
    evaluate.add_argument("--concurrency", type=int, default=16, help="episodes at once (default: %(default)s)")
    evaluate.add_argument("--temperature", type=float, help="sampling temperature (default: the config's "
                          "ajet.rollout.val_kwargs.temperature, else 0.0 for k=1 and 1.0 for k>1)")
    evaluate.add_argument("--top-p", type=float, help="nucleus sampling (default: the endpoint's)")
    evaluate.add_argument("--max-tokens", type=int, help="most tokens per completion (default: the config's "
                          "ajet.rollout.max_response_length_in_one_turn, else the endpoint's)")
    evaluate.add_argument("--output", type=Path, help="JSON report path (default: launcher_record/<experiment>/eval_<split>.json "
                          "with --config, else eval_results.json)")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.set_defaults(run=_eval)

    commands.add_parser("demo", help="play the math agent env with a scripted policy (no model needed)", add_help=False)

    listing = commands.add_parser("list", help="list the registered env ids")
    listing.set_defaults(run=_list)
    return parser


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}); give an object such as '{{\"level\": \"mix\"}}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {type(value).__name__}")
    return value


# ---------------------------------------------------------------------- list, serve


def _list(args: argparse.Namespace) -> int:
    import gymnasium as gym

    from agent_env.registration import BUILTIN_ENVS, register_entry_point_envs

    for env_id in sorted(set(BUILTIN_ENVS) | set(register_entry_point_envs())):
        entry_point = gym.registry[env_id].entry_point
        print(f"{env_id:<32} {entry_point if isinstance(entry_point, str) else getattr(entry_point, '__qualname__', entry_point)}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from agent_env.service.server import serve

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(args.host, args.port, args.env_ids, max_sessions=args.max_sessions, idle_timeout_s=args.idle_timeout_s, log_level=args.log_level)
    return 0


# ---------------------------------------------------------------------- eval


def _eval(args: argparse.Namespace) -> int:
    from agent_env.evaluation import EVAL_ONLY_REASONS, EvalReport, OpenAIChatPolicy, aevaluate

    if args.config is not None:
        from agent_env.config import load_config
        from agent_env.from_config import env_factory_from_config, tasks_from_config

        config = load_config(args.config)
        for notice in config.notices():
            print(f"note: {notice}", file=sys.stderr)
        env_factory = env_factory_from_config(config)
        tasks = tasks_from_config(config, args.split)
        if tasks is None:
            raise SystemExit(f"agent-env eval: the config's task reader has no {args.split!r} split; add it or pass --split train.")
        val = config.ajet.rollout.val_kwargs
        k = args.k if args.k is not None else val.num_repeat
        temperature = args.temperature if args.temperature is not None else val.temperature
        top_p = args.top_p if args.top_p is not None else (val.top_p if val.top_p < 1.0 else None)
        max_tokens = args.max_tokens if args.max_tokens is not None else config.ajet.rollout.max_response_length_in_one_turn
        experiment = config.ajet.experiment_name or Path(args.config).stem
        output = args.output or Path("launcher_record") / experiment / f"eval_{args.split}.json"
        source = {"config": str(config.config_path)}
    else:
        env_factory, tasks = _env_and_tasks_from_id(args.env_id, args.env_kwargs, args.split)
        k = args.k if args.k is not None else 1
        temperature = args.temperature if args.temperature is not None else (0.0 if k == 1 else 1.0)
        top_p, max_tokens = args.top_p, args.max_tokens
        output = args.output or Path("eval_results.json")
        source = {"env_id": args.env_id, "env_kwargs": args.env_kwargs}
    if k < 1:
        raise SystemExit(f"agent-env eval: -k must be >= 1, got {k}.")
    if k > 1 and temperature == 0.0:
        print(f"warning: k={k} samples at temperature 0 are (near) identical, so pass@k ~ pass@1; pass --temperature 1.0 "
              "for a meaningful pass@k.", file=sys.stderr)
    if args.num_tasks is not None:
        tasks = tasks[: args.num_tasks]
    if len(tasks) == 0:
        raise SystemExit(f"agent-env eval: the {args.split!r} split has no tasks.")

    policy = OpenAIChatPolicy(args.endpoint, args.model, args.api_key, temperature=temperature, top_p=top_p, max_tokens=max_tokens)
    progress = None if args.no_progress else _progress_bar(len(tasks) * k)
    metadata = {**source, "endpoint": args.endpoint, "model": args.model, "split": args.split, "temperature": temperature,
                "top_p": top_p, "max_tokens": max_tokens}

    async def run() -> EvalReport:
        try:
            return await aevaluate(env_factory, policy, tasks, k=k, concurrency=args.concurrency,
                                   on_episode=(lambda _: progress.update()) if progress else None, metadata=metadata)
        finally:
            await policy.aclose()
            if progress is not None:
                progress.close()

    report = asyncio.run(run())
    report.metadata["model"] = policy.model
    print(report.format_table())
    path = report.write_json(output)
    print(f"report: {path}")
    failed = [e for e in report.episodes if e.termination_reason in EVAL_ONLY_REASONS]
    if failed:
        last_line = (failed[0].error or "").strip().splitlines()[-1:] or [""]
        print(f"warning: {len(failed)} of {report.num_episodes} episodes failed outside the task "
              f"({failed[0].termination_reason}: {last_line[0]}); see 'error' in {path}.", file=sys.stderr)
    return 1 if len(failed) == report.num_episodes else 0


def _progress_bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="episode", file=sys.stderr, dynamic_ncols=True)


def _env_and_tasks_from_id(env_id: str, env_kwargs: dict[str, Any], split: str) -> tuple[EnvFactory, Sequence[Task]]:
    """An env id's factory, and its own task list for `split` (passed to the factory when it takes a `split`)."""
    import inspect

    import gymnasium as gym

    from agent_env.registration import make

    probe = make(env_id, **env_kwargs)  # raises NameNotFound with a suggestion for a wrong id
    entry_point = gym.spec(env_id).entry_point
    factory = gym.envs.registration.load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
    if "split" in inspect.signature(factory).parameters:
        probe.close()
        probe = make(env_id, **{**env_kwargs, "split": split})
    tasks = probe.unwrapped.tasks
    probe.close()
    if tasks is None:
        raise SystemExit(f"agent-env eval: {env_id} has no task list; give its tasks in --env-kwargs or use --config.")
    return (lambda: make(env_id, **env_kwargs)), tasks


if __name__ == "__main__":
    raise SystemExit(main())
