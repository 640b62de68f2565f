"""The provider's Prometheus metrics (reconcile passes and steps) and the worker's metrics HTTP server.

Owned by ``provider``. Every ``ProviderContext`` carries a ``ReconcileMetrics`` (a registry of its own
unless the composition root passes one: ``kaas up`` shares the API's, so the API's ``/metrics`` shows
them); ``provider.reconciler.reconcile`` records into it. ``kaas worker --metrics-port`` serves the
registry with ``start_metrics_server``: prometheus_client's WSGI app behind a bearer-token check (the same
``KAAS_METRICS_TOKEN`` the API's ``/metrics`` accepts), in a daemon thread.

- ``kaas_reconcile_passes_total{outcome}`` / ``kaas_reconcile_pass_duration_seconds{outcome}``: one per
  pass, ``outcome`` as in ``PassResult`` (converged, progressing, retrying, failed, deleted, deleting,
  locked, skipped) or ``crashed`` when the pass raised.
- ``kaas_reconcile_step_runs_total{step, outcome}`` / ``kaas_reconcile_step_duration_seconds{step,
  outcome}``: one per step run (``network`` ... ``wait_active``, ``delete_resources``); ``outcome`` is
  converged (the step is done), progressing (waiting for the cloud), temporary_error, permanent_error or
  crashed (a bug).
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

PASS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ReconcileMetrics:
    """Counters and histograms of reconcile passes and steps, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.passes = Counter(
            "kaas_reconcile_passes", "Reconcile passes, by outcome.", ["outcome"], registry=self.registry
        )
        self.pass_duration = Histogram(
            "kaas_reconcile_pass_duration_seconds",
            "Duration of a reconcile pass (lease to commit), by outcome.",
            ["outcome"],
            buckets=PASS_BUCKETS,
            registry=self.registry,
        )
        self.step_runs = Counter(
            "kaas_reconcile_step_runs",
            "Reconcile step runs, by step and outcome.",
            ["step", "outcome"],
            registry=self.registry,
        )
        self.step_duration = Histogram(
            "kaas_reconcile_step_duration_seconds",
            "Duration of one run of a reconcile step, by step and outcome.",
            ["step", "outcome"],
            buckets=STEP_BUCKETS,
            registry=self.registry,
        )

    def observe_pass(self, *, outcome: str, seconds: float) -> None:
        self.passes.labels(outcome=outcome).inc()
        self.pass_duration.labels(outcome=outcome).observe(seconds)

    def observe_step(self, *, step: str, outcome: str, seconds: float) -> None:
        self.step_runs.labels(step=step, outcome=outcome).inc()
        self.step_duration.labels(step=step, outcome=outcome).observe(seconds)


@dataclass
class MetricsServer:
    """A running metrics HTTP server (daemon thread); ``stop()`` closes it."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def stop(self, *, timeout: float = 5.0) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout)


def bearer_protected(app: Any, token: str) -> Any:
    """A WSGI app that answers 401 unless ``Authorization: Bearer <token>`` (compared in constant time)."""
    expected = f"Bearer {token}".encode()

    def protected(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        given = str(environ.get("HTTP_AUTHORIZATION", "")).encode()
        if not hmac.compare_digest(given, expected):
            start_response(
                "401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")]
            )
            return [b"unauthenticated: send 'Authorization: Bearer <KAAS_METRICS_TOKEN>'\n"]
        result: Iterable[bytes] = app(environ, start_response)
        return result

    return protected


def start_metrics_server(registry: CollectorRegistry, *, host: str, port: int, token: str) -> MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` (port 0 picks a free one) from a daemon thread,
    only to callers that present ``token``."""
    if not token:
        raise ValueError("the metrics server needs a scrape token (KAAS_METRICS_TOKEN)")
    server = make_server(
        host,
        port,
        bearer_protected(make_wsgi_app(registry), token),
        server_class=ThreadingWSGIServer,
        handler_class=_SilentHandler,
    )
    thread = threading.Thread(target=server.serve_forever, name="kaas-metrics", daemon=True)
    thread.start()
    return MetricsServer(server=server, thread=thread)
