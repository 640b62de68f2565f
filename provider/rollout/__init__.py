"""Day 2: rolling upgrades, drains before removal, self-healing and autoscaling (docs/architecture.md)."""
