"""Trailmap: what changed in production, and how things connect."""

__version__ = "0.1.0"

__all__ = ["__version__"]
