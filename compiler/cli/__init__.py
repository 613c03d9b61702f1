"""The `keraspec` command line: parse arguments, call one library function, render.

`app` holds the global options and the entry point; the commands live in `spec_commands`
(the spec half, which never imports TensorFlow for validate, schema, explain, templates
and render) and `run_commands` (train, audit, generate, evaluate, export, inspect); what
they print is `output`.
"""

# Importing the command modules registers their commands, in this order in --help.
from compiler.cli import spec_commands  # noqa: F401, I001
from compiler.cli import run_commands  # noqa: F401

from compiler.cli.app import app, main

__all__ = ["app", "main"]
