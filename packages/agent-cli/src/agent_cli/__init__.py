"""agent-cli: the `agent-rl` and `ajet` commands, driven by one YAML config."""
