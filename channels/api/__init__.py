"""JSON API channel for integrations and evaluation: `POST /api/v1/messages`."""
