"""Guardrails: change-freeze windows and deployment policies that warn and never block
(docs/guardrails.md)."""
