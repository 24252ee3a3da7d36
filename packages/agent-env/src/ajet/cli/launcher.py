"""`python -m ajet.cli.launcher --conf x.yaml --backbone debug`: the tutorial's launcher, served by agent-cli.

With `--backbone debug` the workflow runs in this same process, so a breakpoint in your `workflow.py` is hit.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    try:
        from agent_cli.ajet import main as ajet_main
    except ImportError as error:
        print(
            "The `ajet` launcher is provided by the agent-cli package, which is not installed "
            f"({error}). Install it with `pip install agent-cli` (or `uv sync` in the agent-rl repository).",
            file=sys.stderr,
        )
        return 1
    return ajet_main(argv)


if __name__ == "__main__":
    sys.exit(main())
