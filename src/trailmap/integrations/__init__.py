"""Integrations: an organization's connections to producers that call in (GitHub and GitLab
webhooks) or are watched (clusters), their secrets, and what each delivery became."""
