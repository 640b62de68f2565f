"""kaas_cli: the ``kaas`` command. The composition root: the only package that wires API, provider and
simulated cloud together (``kaas up``) and the HTTP client of the API for people."""
