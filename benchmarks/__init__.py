"""Reproducible performance measurements; each compares shopml with a peer in the same run."""
