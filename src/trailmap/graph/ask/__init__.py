"""Asking the graph: search, traversal, paths, impact, ranking and the changes near a node."""
