"""`python -m confusion.cli`: the `confusion` command."""

from . import main

main()
