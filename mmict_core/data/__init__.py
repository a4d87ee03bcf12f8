"""Tasks and examples: ShapesWorld, digits, episodes, demonstration selection.

This package imports no model code.
"""
from .example import Episode, Example, ImageError, check_image_array, load_image
from .selection import STRATEGIES, pixel_embedding, select_demos
from .tasks import TASKS, Task, get_task, make_episode, task_names, vocabulary

__all__ = [
    "Episode", "Example", "ImageError", "check_image_array", "load_image", "STRATEGIES",
    "pixel_embedding", "select_demos", "TASKS", "Task", "get_task", "make_episode", "task_names",
    "vocabulary",
]
