"""`python -m gateway.cli`: the same command line as the `veilgate` script."""

from gateway.cli import app

app()
