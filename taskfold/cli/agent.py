"""`taskfold agent`: run an agent process (placeholder until the SDK lands)."""

import typer


def agent(demo: bool = typer.Option(False, "--demo", help="run the demo agent")) -> None:
    """Run an agent."""
    raise typer.Exit(1)
