"""The audit log: every mutating API call and dashboard action, who made it and how it ended."""
