"""Notifications: channels, rules and a durable outbox (docs/notifications.md)."""
