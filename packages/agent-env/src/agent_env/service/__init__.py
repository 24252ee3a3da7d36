"""EnvService: any registered env served over HTTP, and `RemoteAgentEnv`, a Gymnasium env that drives one.

    agent-env serve --port 8080                    # or: serve(port=8080)
    env = RemoteAgentEnv("http://127.0.0.1:8080", "agent_env/MathAgent-v0", level="easy")
    obs, info = env.reset(seed=0)                  # used exactly like agent_env.make(...)

The server needs `fastapi` and `uvicorn`; the client needs `httpx`. Nothing here is imported by `import agent_env`.
"""

from agent_env.service.client import EnvServiceError, EnvServiceTasks, RemoteAgentEnv, SessionNotFoundError

__all__ = ["EnvServiceError", "EnvServiceTasks", "RemoteAgentEnv", "SessionNotFoundError"]
