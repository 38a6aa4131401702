"""`python -m taskfold` runs the CLI."""

from taskfold.cli.app import main

main()
