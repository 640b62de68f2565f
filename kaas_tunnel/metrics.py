"""The tunnel server's Prometheus metrics: agent sessions, proxied streams, bytes through the tunnel.

Owned by ``kaas_tunnel``. Each ``TunnelServer`` records into one ``TunnelMetrics`` (a registry of its
own unless the composition root passes one: ``kaas up`` shares the API's); ``kaas_tunnel.proxy``
serves its registry at ``/metrics`` on the internal endpoint, behind the internal secret.

- ``kaas_tunnel_sessions``: agent sessions this process holds now.
- ``kaas_tunnel_streams_open`` and ``kaas_tunnel_streams_opened_total``: proxied requests (streams the
  internal endpoint opened on an agent's session) open now, and ever opened.
- ``kaas_tunnel_proxied_bytes_total{direction}``: body bytes through those streams, ``up`` (request bodies
  to the cluster) and ``down`` (the cluster's responses, head included).
- ``kaas_tunnel_dials_refused_busy_total``: dials refused with 503 and ``Retry-After`` because the server
  already worked on its limit of handshakes (``kaas_tunnel.admission``): a herd of reconnecting agents.
- ``kaas_tunnel_event_loop_lag_seconds``: how late the server's event loop ran a timer, sampled four times
  a second (``agents.tunnel.loop_lag``): a starved loop answers pings late and its sessions' keep-alive
  deadlines stretch by as much, so this tells a starved server from dead agents.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LOOP_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class TunnelMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.sessions = Gauge(
            "kaas_tunnel_sessions", "Agent sessions this tunnel server holds.", registry=self.registry
        )
        self.streams_open = Gauge(
            "kaas_tunnel_streams_open", "Proxied streams open on agent sessions now.", registry=self.registry
        )
        self.streams_opened = Counter(
            "kaas_tunnel_streams_opened", "Proxied streams opened on agent sessions.", registry=self.registry
        )
        self.proxied_bytes = Counter(
            "kaas_tunnel_proxied_bytes",
            "Bytes proxied through agent sessions: up (to the cluster), down (from it).",
            ["direction"],
            registry=self.registry,
        )
        self.dials_refused_busy = Counter(
            "kaas_tunnel_dials_refused_busy",
            "Agent dials refused with 503 because the server worked on its limit of handshakes.",
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "kaas_tunnel_event_loop_lag_seconds",
            "How late the tunnel server's event loop ran a timer.",
            buckets=LOOP_LAG_BUCKETS,
            registry=self.registry,
        )
        self.bytes_up = self.proxied_bytes.labels(direction="up")
        self.bytes_down = self.proxied_bytes.labels(direction="down")
