"""Rollout: drive many agent-env episodes against an inference engine and keep exactly the sampled tokens."""
