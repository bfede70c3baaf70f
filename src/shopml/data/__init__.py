"""shopml."""
