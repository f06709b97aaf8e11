"""Adapters, one module per producer format: a payload in, domain calls out; no web framework."""
