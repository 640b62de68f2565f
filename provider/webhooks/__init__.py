"""Webhook notifications: outbox rows written with the operation's outcome, then signed HTTP deliveries."""
