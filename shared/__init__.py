"""What the coordinator and the worker agree on: models, the task format, errors."""

__version__ = "0.1.0"
