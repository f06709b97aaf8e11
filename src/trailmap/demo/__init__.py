"""The demo organization: a small simulated shop, its traces and a week of its changes."""
