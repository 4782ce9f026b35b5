"""Web UI and JSON API tests against a real app and a real database."""
