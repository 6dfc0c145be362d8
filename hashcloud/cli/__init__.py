"""The `hashcloud` command line (SPEC 7): one Typer app, one module per command."""
