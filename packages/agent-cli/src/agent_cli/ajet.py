"""`ajet --conf x.yaml --backbone debug|deepspeed|trinity|verl`: the tutorial's launcher, on agent-rl.

    ajet --conf math_agent/math_agent.yaml --backbone debug --with-logview   # = agent-rl debug --with-logview
    ajet --conf math_agent/math_agent.yaml --backbone deepspeed              # = agent-rl train
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["BACKBONES", "main"]

BACKBONES = ("debug", "deepspeed", "trinity", "verl")
"""`debug`: a few episodes, no training; the others all train with agent-rl's DeepSpeed GRPO learner."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ajet", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conf", "--config", required=True, metavar="YAML", help="the YAML config")
    parser.add_argument("--backbone", default="debug", choices=BACKBONES,
                        help="debug: a few tasks with the model, no training, every episode printed (the workflow runs in "
                        "this process, so breakpoints are hit); deepspeed, trinity, verl: train with agent-rl's DeepSpeed "
                        "GRPO learner (default: %(default)s)")
    parser.add_argument("--with-logview", action="store_true",
                        help="serve the logview of the run (debug: after the episodes; training: while it runs) until Ctrl-C")
    parser.add_argument("--port", type=int, default=None, help="logview port (default: 8765, or a free one when it is taken)")
    parser.add_argument("--with-ray", action="store_true",
                        help="run the episodes' env side (workflow, tools, judge) in Ray actors: joins the cluster `ray start` "
                        "runs here (or ajet.rollout.ray.address), else starts a local one (sets ajet.rollout.ray.enabled)")
    parser.add_argument("--max-steps", type=int, metavar="N", help="training backbones: stop after N steps")
    parser.add_argument("--resume", action="store_true", help="training backbones: continue the run from its last checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="dotted overrides, e.g. ajet.rollout.temperature=0.5")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ajet` console script: translate to `agent-rl debug` or `agent-rl train`."""
    args = build_parser().parse_args(argv)
    from agent_cli.main import main as agent_rl_main

    logview = ["--with-logview"] if args.with_logview else []
    logview += ["--port", str(args.port)] if args.port is not None else []
    overrides = [*args.overrides, *(["ajet.rollout.ray.enabled=true"] if args.with_ray else [])]
    if args.backbone == "debug":
        if args.max_steps is not None or args.resume:
            print("ajet: --max-steps and --resume apply to training backbones; --backbone debug ignores them.", file=sys.stderr)
        if args.with_ray:
            print("ajet: --with-ray runs the workflow in Ray actors: breakpoints in it are not hit here.", file=sys.stderr)
        return agent_rl_main(["debug", "--config", args.conf, *logview, *overrides])
    if args.backbone in ("trinity", "verl"):
        print(f"ajet: --backbone {args.backbone} runs agent-rl's own DeepSpeed GRPO learner (same config keys).", flush=True)
    train = ["--max-steps", str(args.max_steps)] if args.max_steps is not None else []
    train += ["--resume"] if args.resume else []
    return agent_rl_main(["train", "--config", args.conf, *train, *logview, *overrides])


if __name__ == "__main__":
    sys.exit(main())
