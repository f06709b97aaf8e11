"""The web console: sign-in, OAuth consent, API keys and service accounts."""
