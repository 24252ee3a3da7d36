"""Task sources: the built-in arithmetic generator, local files and Hugging Face datasets, all yielding `Task`."""

from agent_env.tasks.arithmetic import SYS, ArithmeticTasks

__all__ = ["SYS", "ArithmeticTasks"]
