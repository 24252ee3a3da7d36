"""Task sources: the built-in arithmetic generator, local files and Hugging Face datasets, all yielding `Task`.

Importing this package is light: `datasets` and `pyarrow` are imported only when a source needs them.
"""

from agent_env.tasks.arithmetic import LEVELS, SYS, ArithmeticTasks
from agent_env.tasks.factory import TASK_SOURCES, make_task_source
from agent_env.tasks.files import FileTasks
from agent_env.tasks.huggingface import HuggingFaceTasks, resolve_dataset
from agent_env.tasks.rows import FieldMap, TaskSourceError, row_to_task
from agent_env.tasks.task_list import TaskList

__all__ = [
    "LEVELS",
    "SYS",
    "TASK_SOURCES",
    "ArithmeticTasks",
    "FieldMap",
    "FileTasks",
    "HuggingFaceTasks",
    "TaskList",
    "TaskSourceError",
    "make_task_source",
    "resolve_dataset",
    "row_to_task",
]
