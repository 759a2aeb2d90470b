"""What the coordinator and the worker agree on: models, the task format, errors."""
