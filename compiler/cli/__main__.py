"""`python -m compiler.cli`: the `keraspec` command."""

from compiler.cli import main

main()
