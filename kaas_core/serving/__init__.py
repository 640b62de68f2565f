"""How kaas's HTTP servers bound their input before any application code (authentication included) runs.

``limits``: the uvicorn HTTP protocol with request-head size, header-count and slow-client limits, and
``server_config``, the one builder of every uvicorn ``Config`` kaas serves with (``kaas api``, ``kaas up``,
the tunnel server's internal endpoint). ``body_limit``: the ASGI middleware that caps request bodies per
route. ``settings``: the ``KAAS_HTTP_*`` settings both deployables read them from.
"""
