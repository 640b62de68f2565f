"""The tunnel server side: agent sessions over WebSocket and the registry of who holds which cluster."""
