"""Built-in envs. Each module holds one; they are registered by id in `agent_env.registration`."""
