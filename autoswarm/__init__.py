"""The `autoswarm` command line: one CLI in front of the coordinator and the worker."""

from shared import __version__

__all__ = ["__version__"]
