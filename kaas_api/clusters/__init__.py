"""Clusters, their node pools and nodes."""
