"""Sub-commands of ``kaas``, one module per resource."""
