"""Projects, their members and quotas."""
