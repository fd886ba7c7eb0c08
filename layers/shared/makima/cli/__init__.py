"""The ``makima`` command line (Typer)."""
