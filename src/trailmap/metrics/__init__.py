"""Metrics around changes: series from three sources and the before/after comparison."""
