"""The tutorial's `ajet` command line (provided by the agent-cli package)."""
