"""`aimis`: the operator CLI (typer + rich)."""
