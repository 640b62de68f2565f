"""Authentication (bearer tokens) and project authorization."""
