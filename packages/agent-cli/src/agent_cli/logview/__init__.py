"""The logview: a local web page of a run's training curves, episodes, conversations and tokens.

    agent-rl logview launcher_record/math_agent --port 8765

`serve_logview` blocks until Ctrl-C; `start_logview` serves from a background thread and returns a handle.
"""

from agent_cli.logview.run_reader import RunReader
from agent_cli.logview.server import DEFAULT_PORT, LogviewServer, create_app, serve_logview, start_logview

__all__ = ["DEFAULT_PORT", "LogviewServer", "RunReader", "create_app", "serve_logview", "start_logview"]
