"""The database layer: models of desired and observed state, engine and session factories."""
