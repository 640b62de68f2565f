"""The garbage collector of a long-running kaas server: what it need not scan again.

Owned by ``kaas_core.serving``; called once by each server's entry point just before it serves
(``kaas_core.serving.limits.run_server`` for ``kaas api`` and ``kaas up``, ``kaas_tunnel.main`` for
``kaas tunnel``). The agent does the same in ``agents.main`` (it imports nothing of the server side).

Why: CPython's full collection (generation 2) walks every container object the process holds, and a kaas
server holds a few hundred thousand that live as long as it does: the modules of FastAPI, SQLAlchemy,
pydantic, Celery and ours, their compiled schemas and caches. Under load the requests in flight are promoted
into generation 2 often enough to start a full collection about once a second, each 140 to 230 ms on this
project's 2-core test machine, during which the process answers nothing: 12 % of the API's CPU and its whole
p99 (``benchmarks/api.py``: ``/healthz`` p99 160 ms with them, 18 ms without). ``gc.freeze`` moves what exists
at start-up to a generation no collection scans (it is never garbage: it is the program); what the server
allocates afterwards is collected as before.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect once, then exempt every object alive now from later collections (``gc.freeze``)."""
    gc.collect()
    gc.freeze()
