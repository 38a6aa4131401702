"""The `taskfold` command line."""

import typer

app = typer.Typer(no_args_is_help=True, help="taskfold: event-sourced coordination for workers and agents.")


def main() -> None:
    """Console-script entry point."""
    app()
