"""Regions: the clouds clusters run in, managed by admins."""
