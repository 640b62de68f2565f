"""The operators' API (``/v1/admin``) and the fleet-wide queries the dashboard shares with it."""
