"""Day 2 of a cluster: upgrades, drains, self-healing, autoscaling (docs/architecture.md, "Day 2")."""
