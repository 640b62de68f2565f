"""kaas's tunnel server: the far end of every cluster agent's WebSocket, and the internal proxy onto it."""
