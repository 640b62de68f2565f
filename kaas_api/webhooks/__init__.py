"""Per-project webhooks: where kaas POSTs a signed notification when an operation succeeds or fails."""
