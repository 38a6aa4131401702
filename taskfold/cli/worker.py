"""`taskfold worker`: run the stream processors (placeholder until streams/ lands)."""

import typer


def worker() -> None:
    """Run the scheduler worker."""
    raise typer.Exit(1)
