"""kaas_api: the user-facing REST API of kaas (authentication, authorization, desired state)."""
