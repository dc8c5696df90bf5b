"""The `clarion` command."""

from clarion.cli.main import app, main

__all__ = ["app", "main"]
