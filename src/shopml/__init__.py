"""shopml: an MLOps platform for e-commerce."""

__version__ = "0.1.0"
