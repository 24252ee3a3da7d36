"""`agent-rl`: train, debug and inspect agents from one YAML config."""

from __future__ import annotations

import argparse
import sys

from agent_env.config import ConfigError, load_config


def _load(path: str, overrides: list[str]):
    try:
        config = load_config(path, overrides)
    except ConfigError as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None
    for notice in config.notices():
        print(f"note: {notice}", file=sys.stderr)
    return config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-rl", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    debug = commands.add_parser("debug", help="run a few tasks with the model and no training; print every episode")
    debug.add_argument("--config", "--conf", required=True, help="the YAML config")
    debug.add_argument("--num-tasks", type=int, default=None, help="tasks to run (default: ajet.debug.num_tasks)")
    debug.add_argument("overrides", nargs="*", help="dotted overrides, e.g. ajet.rollout.temperature=0.5")
    config = commands.add_parser("config", help="show the resolved config or the config reference")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    show = config_commands.add_parser("show", help="print the resolved config")
    show.add_argument("path")
    show.add_argument("overrides", nargs="*")
    config_commands.add_parser("reference", help="print every config key with its type, default and meaning (Markdown)")
    train = commands.add_parser("train", help="train with GRPO (not available yet)")
    train.add_argument("--config", "--conf", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "debug":
        from agent_cli.debug import run_debug

        run_debug(_load(args.config, args.overrides), args.num_tasks)
        return 0
    if args.command == "config":
        if args.config_command == "reference":
            from agent_env.config import config_reference_markdown

            print(config_reference_markdown())
            return 0
        import yaml

        print(yaml.safe_dump(_load(args.path, args.overrides).to_yaml_dict(), sort_keys=False))
        return 0
    if args.command == "train":
        print("agent-rl train: the GRPO learner is not part of this build yet; `agent-rl debug` runs the rollout.", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
