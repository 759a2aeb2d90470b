"""`python -m autoswarm`: the same CLI as the `autoswarm` command."""

from autoswarm.cli.app import app

app(prog_name="autoswarm")
