"""The API's Prometheus metrics: HTTP requests and latency, and the state of kaas read at scrape time.

Owned by ``kaas_api.observability``. ``create_app`` builds one ``ApiMetrics`` per app on a registry of its
own (several apps in one test process never collide; ``kaas up`` passes one registry that the provider and
tunnel metrics share), adds ``HttpMetricsMiddleware`` and includes ``kaas_api.observability.endpoints``,
which serves the registry at ``/metrics``.

- ``kaas_http_requests_total{route, method, status}`` and ``kaas_http_request_duration_seconds{route,
  method}``: ``route`` is the route template (``/v1/projects/{project}/clusters``), never the raw path, or
  ``unmatched``; the duration runs until the response's last byte, so a k8s watch counts as long as it
  streams.
- ``kaas_clusters{region, phase}`` (deleted clusters left out), ``kaas_cluster_agents{region, state}``
  (``connected`` / ``disconnected``, one per ``cluster_agents`` row of a live cluster) and
  ``kaas_queue_depth{queue}`` (messages waiting on each region's Celery queue: ``LLEN`` on a ``redis://``
  broker; nothing on any other broker) are queried when Prometheus scrapes (``KaasStateCollector``).
- ``kaas_metrics_source_up{source}``: 1 when the database / broker answered that scrape, else 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kaas_core.db.models import Cluster, ClusterAgent, ClusterPhase, Region
from kaas_core.tasks import region_queue

log = logging.getLogger(__name__)

UNMATCHED_ROUTE = "unmatched"
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# kombu's Redis transport keeps a queue as a list named after it, plus one list per priority step
# ("<queue>\x06\x16<step>") for messages sent with a priority; kombu's default steps are 0, 3, 6, 9
_KOMBU_PRIORITY_SEPARATOR = "\x06\x16"
_KOMBU_PRIORITY_STEPS = (3, 6, 9)


class ApiMetrics:
    """The API's own metric objects, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "kaas_http_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "kaas_http_request_duration_seconds",
            "Time from the request to the response's last byte, by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def observe_request(self, *, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in _KNOWN_METHODS else "OTHER"  # clients choose methods: bound the labels
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route, method=method).observe(seconds)


class HttpMetricsMiddleware:
    """Counts and times every HTTP request. Pure ASGI, so the k8s proxy's streamed bodies stay streamed.

    The route template is read from ``scope["route"]`` after the app ran: the router sets it when it
    matched (also for 405s); anything else is ``unmatched``, so random paths cannot grow the label set.
    """

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started becomes a 500 further out

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            self.metrics.observe_request(
                route=route, method=scope["method"], status=status, seconds=time.perf_counter() - started
            )


class KaasStateCollector:
    """Clusters, agents and queue depths, read from the database and the broker at every scrape.

    Runs in the scraping thread (``/metrics`` is a sync endpoint, so a worker thread); a source that fails
    is logged, reported as ``kaas_metrics_source_up{source} 0`` and leaves the rest of the scrape intact.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        broker_url: str,
        broker_timeout_seconds: float = 2.0,
    ) -> None:
        self._session_factory = session_factory
        self._broker_url = broker_url
        self._broker_timeout_seconds = broker_timeout_seconds

    def describe(self) -> Iterable[Metric]:
        # registering must not query the database: describe the families without samples
        return list(self._families())

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "kaas_clusters",
                "Clusters by region and phase (deleted clusters left out).",
                labels=["region", "phase"],
            ),
            GaugeMetricFamily(
                "kaas_cluster_agents",
                "Cluster agents by region and state (connected, disconnected), live clusters only.",
                labels=["region", "state"],
            ),
            GaugeMetricFamily(
                "kaas_queue_depth",
                "Messages waiting on each region's Celery queue (Redis broker only).",
                labels=["queue"],
            ),
            GaugeMetricFamily(
                "kaas_metrics_source_up",
                "1 when the source (database, broker) answered this scrape, else 0.",
                labels=["source"],
            ),
        )

    def collect(self) -> Iterable[Metric]:
        clusters, agents, depth, up = self._families()
        queues: list[str] = []
        try:
            with self._session_factory() as session:
                live = Cluster.phase != ClusterPhase.DELETED.value
                for region, phase, count in session.execute(
                    select(Region.name, Cluster.phase, func.count())
                    .join(Region, Region.id == Cluster.region_id)
                    .where(live)
                    .group_by(Region.name, Cluster.phase)
                ):
                    clusters.add_metric([region, phase], float(count))
                for region, connected, count in session.execute(
                    select(Region.name, ClusterAgent.connected, func.count())
                    .join(Cluster, Cluster.id == ClusterAgent.cluster_id)
                    .join(Region, Region.id == Cluster.region_id)
                    .where(live)
                    .group_by(Region.name, ClusterAgent.connected)
                ):
                    agents.add_metric([region, "connected" if connected else "disconnected"], float(count))
                queues = [
                    region_queue(name) for name in session.scalars(select(Region.name).order_by(Region.name))
                ]
            up.add_metric(["database"], 1.0)
        except Exception:  # a scrape reports the outage, it never fails because of it
            log.warning("metrics: the database query failed", exc_info=True)
            up.add_metric(["database"], 0.0)
        if queues and urlsplit(self._broker_url).scheme in ("redis", "rediss"):
            try:
                for queue, length in self._queue_lengths(queues).items():
                    depth.add_metric([queue], float(length))
                up.add_metric(["broker"], 1.0)
            except redis.RedisError:
                log.warning("metrics: reading the queue lengths from the broker failed", exc_info=True)
                up.add_metric(["broker"], 0.0)
        return [clusters, agents, depth, up]

    def _queue_lengths(self, queues: list[str]) -> dict[str, int]:
        client = redis.Redis.from_url(
            self._broker_url,
            socket_timeout=self._broker_timeout_seconds,
            socket_connect_timeout=self._broker_timeout_seconds,
        )
        try:
            pipeline = client.pipeline(transaction=False)
            for queue in queues:
                pipeline.llen(queue)
                for step in _KOMBU_PRIORITY_STEPS:
                    pipeline.llen(f"{queue}{_KOMBU_PRIORITY_SEPARATOR}{step}")
            lengths = [int(n) for n in pipeline.execute()]
        finally:
            client.close()
        per_queue = 1 + len(_KOMBU_PRIORITY_STEPS)
        return {queue: sum(lengths[i * per_queue : (i + 1) * per_queue]) for i, queue in enumerate(queues)}
