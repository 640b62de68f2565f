"""A worker process for tests/provider/reconciler/test_due.py to kill: it runs one real pass and stops dead
inside it, after the ``network`` step, holding the lease with its heartbeat going, until it is killed.

    python -m tests.provider.reconciler.doomed_pass DATABASE_URL CLOUDS_YAML CLUSTER_ID MARKER_FILE
"""

from __future__ import annotations

import sys
import threading
from dataclasses import replace
from pathlib import Path

from kaas_core.db.session import make_engine, make_session_factory
from provider.reconciler.reconcile import reconcile_cluster_once
from tests.provider.harness import FAST_LIMITS, make_context

DOOMED_LIMITS = replace(FAST_LIMITS, lease_seconds=15.0, lease_renew_seconds=0.2)
DOOMED_OWNER = "doomed-worker"


def main(database_url: str, clouds_yaml: str, cluster_id: str, marker: str) -> None:
    ctx = make_context(
        make_session_factory(make_engine(database_url)), Path(clouds_yaml), limits=DOOMED_LIMITS
    )

    def stop_dead(step: str) -> None:
        if step == "network":
            Path(marker).write_text(step)
            threading.Event().wait()  # until SIGKILL

    reconcile_cluster_once(replace(ctx, after_step=stop_dead), cluster_id, worker_id=DOOMED_OWNER)
    raise SystemExit("the pass ended: it should have stopped inside")


if __name__ == "__main__":
    main(*sys.argv[1:5])
