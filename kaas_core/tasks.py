"""The task-name table: every Celery task and queue kaas sends work through, named once.

Owned by ``kaas_core``. The API sends tasks by these names (``kaas_api.dispatch``) without importing the
provider; the provider registers its functions under them (``provider.tasks``) and routes by these queues
(``provider.celery_app``). One definition both sides import, so the names cannot drift.
"""

from __future__ import annotations

RECONCILE_TASK = "provider.reconcile_cluster"
DUE_SCAN_TASK = "provider.due_scan"  # per region: queue the clusters whose due time passed
SWEEP_TASK = "provider.sweep"
SWEEP_LEAKS_TASK = "provider.sweep_leaks"
OBSERVE_REGION_TASK = "provider.observe_region"  # per region: list the cloud once, pass the drifted clusters
DELIVER_WEBHOOK_TASK = "provider.deliver_webhook"

# the queue every worker consumes whatever its regions (sweeps, webhook deliveries)
SHARED_QUEUE = "provider"
WEBHOOK_QUEUE = SHARED_QUEUE

# the Celery message header that carries the request id into the worker (provider.request_context)
REQUEST_ID_TASK_HEADER = "kaas_request_id"

REGION_QUEUE_PREFIX = "region."


def region_queue(region_name: str) -> str:
    """The queue of one region's workers: reconciles and leak sweeps of that region's clusters."""
    return f"{REGION_QUEUE_PREFIX}{region_name}"
