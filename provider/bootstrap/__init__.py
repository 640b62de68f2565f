"""Node bootstrap: what a new server is told at first boot (cloud-init user-data)."""
