"""The level-triggered reconciler: compares a cluster's spec with what the cloud has and closes the gap.

Entry point: ``provider.reconciler.reconcile.reconcile_cluster_once`` (one bounded pass), called by the
Celery task ``provider.reconcile_cluster``; ``provider.reconciler.due`` queues every cluster whose next pass
is overdue (the bound on recovery after a crash); ``provider.reconciler.sweep`` is the periodic leak repair.
"""
