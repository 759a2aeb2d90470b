"""The `autoswarm` command line: one CLI in front of the coordinator and the worker."""
