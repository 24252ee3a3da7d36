"""`ajet --conf x.yaml --backbone debug|deepspeed|trinity|verl`: the tutorial's launcher, on agent-rl."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ajet", description=__doc__)
    parser.add_argument("--conf", "--config", required=True, help="the YAML config")
    parser.add_argument("--backbone", default="debug", choices=["debug", "deepspeed", "trinity", "verl"],
                        help="debug: a few episodes, no training; the others train with agent-rl's DeepSpeed GRPO learner")
    parser.add_argument("--with-logview", action="store_true", help="serve the logview of the run")
    parser.add_argument("--with-ray", action="store_true", help="run episodes on a Ray cluster")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. ajet.rollout.temperature=0.5")
    args = parser.parse_args(argv)
    if args.with_ray:
        print("ajet: --with-ray is not supported yet (episodes run in this process); drop the flag.", file=sys.stderr)
        return 2
    from agent_cli.main import main as agent_rl_main

    if args.backbone == "debug":
        if args.with_logview:
            print("ajet: the logview is not available yet; the trajectories are written as JSON lines.", file=sys.stderr)
        return agent_rl_main(["debug", "--config", args.conf, *args.overrides])
    if args.backbone in ("trinity", "verl"):
        print(f"ajet: --backbone {args.backbone} runs agent-rl's own DeepSpeed GRPO learner.")
    return agent_rl_main(["train", "--config", args.conf])


if __name__ == "__main__":
    sys.exit(main())
